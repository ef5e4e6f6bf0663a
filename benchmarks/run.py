"""Benchmarks on the lab: converge and no-op runs, remote commands, connections, memory.

    python benchmarks/run.py                      # 1, 3, 6, 10 hosts; LAN and WAN profiles
    python benchmarks/run.py --sizes 1 3 --profiles lan

For each size N (1 server + N-1 agents, fresh hosts) and each network profile it runs, through
the real ``pyinfra`` CLI against a lab inventory: a fresh ``deploys/bootstrap.py`` and
``deploys/cluster.py`` converge, then a no-op re-run of each. For each run it counts the remote
commands, file uploads and SSH connections per host (benchmarks/counting.py wraps pyinfra's SSH
connector, so the timed run has no --debug logging), reads the peak memory (max RSS) and CPU
time of the pyinfra process from the kernel (wait4), and the busy CPU time of the whole machine
(/proc/stat; the lab's hosts share this machine's cores). It prints one table and writes it as
JSON to benchmarks/results/<time>.json so commits can be compared.

Profiles: ``lan`` is the lab as it is; ``wan`` adds 25 ms each way (50 ms round trip) on every
SSH link through benchmarks/delayproxy.py (this kernel has no sch_netem, see that module).
Targets (printed, never asserted): no-op cluster run on 3 hosts <= 2 s LAN / <= 5 s WAN; 10 hosts
<= 1.3 x 1 host; <= 30 remote commands per host in a no-op cluster run, one connection per host.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from delayproxy import DelayProxy  # noqa: E402

ENTRY_FILES = ("bootstrap", "cluster")
COUNTER = Path(__file__).resolve().with_name("counting.py")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Run:
    size: int
    profile: str
    entry: str
    kind: str  # "converge" or "noop"
    seconds: float
    ok: bool
    commands_per_host: dict[str, int] = field(default_factory=dict)
    connections_per_host: dict[str, int] = field(default_factory=dict)
    uploads: int = 0
    handshakes: int = 0
    max_rss_mib: float = 0.0
    cpu_seconds: float = 0.0  # user + system time of the pyinfra process
    machine_cpu_seconds: float = 0.0  # busy CPU of the whole machine (lab hosts included)


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def run_pyinfra(
    inventory: Path, entry: str, log: Path, nagle: bool = False
) -> tuple[float, bool, str, dict[str, Any], dict[str, float]]:
    """Run one entry file through the real pyinfra CLI (benchmarks/counting.py counts its SSH
    work); return (seconds, ok, output, counts, resources)."""
    counts_file = log.with_suffix(".counts.json")
    own = [str(counts_file), *(["--nagle"] if nagle else [])]
    command = [sys.executable, str(COUNTER), *own, "--", "-y", str(inventory)]
    command.append(f"deploys/{entry}.py")
    busy = machine_busy_seconds()
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    resources = {
        "max_rss_mib": usage.ru_maxrss / 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "machine_cpu_seconds": machine_busy_seconds() - busy,
    }
    ok = os.waitstatus_to_exitcode(status) == 0
    text = ANSI.sub("", log.read_text(errors="replace"))
    counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    return seconds, ok, text, counts, resources


def wan_inventory(lab: Any, delay: float, workdir: Path) -> tuple[Path, list[DelayProxy]]:
    """A copy of the lab inventory whose SSH goes through delaying proxies on loopback."""
    proxies: dict[str, DelayProxy] = {}
    for h in lab.hosts:
        proxies[h.name] = DelayProxy((h.public_ip, h.ssh_port), delay).start()
    known = workdir / "known_hosts_wan"
    lines = []
    by_ip = {h.public_ip: h.name for h in lab.hosts}
    for line in Path(lab.known_hosts).read_text().splitlines():
        hostpart, _, rest = line.partition(" ")
        for addr in hostpart.split(","):
            addr = addr.strip("[]").split("]:")[0]
            if addr in by_ip:
                lines.append(f"[127.0.0.1]:{proxies[by_ip[addr]].port} {rest}")
    known.write_text("\n".join(lines) + "\n")
    from k3sfleet.lab.inventory_file import render

    inventory = workdir / "inventory_wan.py"
    via_proxy = [
        dataclasses.replace(h, public_ip="127.0.0.1", ssh_port=proxies[h.name].port)
        for h in lab.hosts
    ]
    overrides = {**lab.settings_overrides, "ssh_known_hosts_file": str(known)}
    inventory.write_text(render(lab.name, via_proxy, overrides))
    return inventory, list(proxies.values())


def bench_size(size: int, profiles: list[str], delay: float, nagle: bool = False) -> list[Run]:
    from k3sfleet.lab import Lab

    runs: list[Run] = []
    for profile in profiles:
        lab = Lab.create(servers=1, agents=size - 1)
        proxies: list[DelayProxy] = []
        try:
            with tempfile.TemporaryDirectory(prefix="k3sfleet-bench-") as tmp:
                work = Path(tmp)
                if profile == "wan":
                    inventory, proxies = wan_inventory(lab, delay, work)
                else:
                    inventory = work / "inventory.py"
                    lab.write_inventory(inventory)
                kinds = ("converge", "noop", "noop-nagle") if nagle else ("converge", "noop")
                for kind in kinds:
                    for entry in ENTRY_FILES:
                        log = work / f"{profile}-{kind}-{entry}.log"
                        seconds, ok, text, counts, res = run_pyinfra(
                            inventory, entry, log, nagle=kind == "noop-nagle"
                        )
                        runs.append(
                            Run(
                                size=size,
                                profile=profile,
                                entry=entry,
                                kind=kind,
                                seconds=round(seconds, 2),
                                ok=ok,
                                commands_per_host=counts.get("commands", {}),
                                connections_per_host=counts.get("connections", {}),
                                uploads=sum(counts.get("uploads", {}).values()),
                                handshakes=counts.get("handshakes", 0),
                                max_rss_mib=round(res["max_rss_mib"], 1),
                                cpu_seconds=round(res["cpu_seconds"], 2),
                                machine_cpu_seconds=round(res["machine_cpu_seconds"], 2),
                            )
                        )
                        print(format_row(runs[-1]), flush=True)
                        if not ok:
                            print(text[-3000:], file=sys.stderr)
        finally:
            for proxy in proxies:
                proxy.stop()
            lab.down()
    return runs


def format_row(r: Run) -> str:
    cmds = list(r.commands_per_host.values()) or [0]
    conns = list(r.connections_per_host.values()) or [0]
    return (
        f"{r.size:>5} {r.profile:>4} {r.entry:>9} {r.kind:>10} {r.seconds:>8.2f} "
        f"{'ok' if r.ok else 'FAIL':>4} {max(cmds):>9} {max(conns):>6} {r.handshakes:>5} "
        f"{r.uploads:>7} {r.max_rss_mib:>8.1f} {r.cpu_seconds:>7.2f} {r.machine_cpu_seconds:>7.2f}"
    )


HEADER = (
    "hosts prof     entry       kind  seconds   ok cmds/host conn/h  ssh# uploads  rss MiB"
    " cpu(s) mach(s)"
)


def cpu_floor(run: Run, cores: int | None = None) -> float:
    """The least wall time this machine could give ``run``, from the CPU it took: the pyinfra
    process is one thread, and the lab's hosts share the machine's cores with it (on real
    VPSes each host has its own)."""
    return max(run.cpu_seconds, run.machine_cpu_seconds / (cores or os.cpu_count() or 1))


def summary(runs: list[Run]) -> list[str]:
    lines = []
    by = {(r.size, r.profile, r.entry, r.kind): r for r in runs}
    for profile in sorted({r.profile for r in runs}):
        three = by.get((3, profile, "cluster", "noop"))
        limit = 2.0 if profile == "lan" else 5.0
        if three:
            lines.append(
                f"target {profile}: no-op cluster on 3 hosts {three.seconds:.2f}s (<= {limit}s)"
            )
        for kind in ("converge", "noop"):
            for entry in ENTRY_FILES:
                one = by.get((1, profile, entry, kind))
                ten = by.get((10, profile, entry, kind))
                if one and ten:
                    lines.append(
                        f"target {profile}: {kind} {entry} 10 hosts / 1 host = "
                        f"{ten.seconds / one.seconds:.2f} (<= 1.3); on this machine at best "
                        f"{cpu_floor(ten) / one.seconds:.2f} (10-host CPU floor "
                        f"{cpu_floor(ten):.2f}s)"
                    )
    noops = [r for r in runs if r.kind == "noop" and r.entry == "cluster"]
    if noops:
        worst = max(max(r.commands_per_host.values() or [0]) for r in noops)
        conns = max(max(r.connections_per_host.values() or [0]) for r in noops)
        lines.append(
            f"target: no-op cluster remote commands per host {worst} (<= 30), "
            f"SSH connections per host {conns} (1)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 3, 6, 10])
    parser.add_argument("--profiles", nargs="+", choices=("lan", "wan"), default=["lan", "wan"])
    parser.add_argument("--delay-ms", type=float, default=25.0, help="WAN one-way delay")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--nagle",
        action="store_true",
        help="also re-run each no-op with k3sfleet's TCP_NODELAY switched off (the 'before')",
    )
    args = parser.parse_args(argv)

    print(HEADER, flush=True)
    runs: list[Run] = []
    for size in args.sizes:
        runs.extend(bench_size(size, args.profiles, args.delay_ms / 1000, nagle=args.nagle))
    print()
    print(HEADER)
    for r in runs:
        print(format_row(r))
    for line in summary(runs):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    path = args.out / f"{stamp}-{commit or 'nogit'}.json"
    path.write_text(json.dumps({"commit": commit, "runs": [asdict(r) for r in runs]}, indent=2))
    print(f"written {path}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
