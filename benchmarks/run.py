"""Benchmarks on the lab: converge and no-op runs, remote commands, connections, memory.

    python benchmarks/run.py                      # 1, 3, 6, 10 hosts; LAN and WAN profiles
    python benchmarks/run.py --sizes 1 3 --profiles lan

For each size N (1 server + N-1 agents, fresh hosts) and each network profile it runs, through
the real ``pyinfra`` CLI against a lab inventory: a fresh ``deploys/bootstrap.py`` and
``deploys/cluster.py`` converge, then a no-op re-run of each. It counts, from pyinfra's own debug
log, the remote commands, file uploads and SSH connections per host of each run, and reads the
peak memory (max RSS) of each pyinfra process from the kernel (wait4). It prints one table and
writes it as JSON to benchmarks/results/<time>.json so commits can be compared.

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
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from delayproxy import DelayProxy  # noqa: E402

ENTRY_FILES = ("bootstrap", "cluster")
COMMAND_LINE = re.compile(r"Running command on (\S+?):")
UPLOAD_LINE = re.compile(r"Attempting upload")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONNECT_LINE = re.compile(r"\[(\S+?)\] Connected")


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
    max_rss_mib: float = 0.0


def pyinfra_bin() -> str:
    candidate = Path(sys.executable).with_name("pyinfra")
    return str(candidate) if candidate.exists() else "pyinfra"


# The "before" of TCP_NODELAY: the pyinfra CLI with k3sfleet's hook (k3sfleet.entry sets
# TCP_NODELAY on the host's connection) switched off in that benchmark process only.
NAGLE_CLI = (
    "import sys, k3sfleet.entry as entry; entry.set_host_tcp_nodelay = lambda host: False; "
    "from pyinfra_cli.main import main; sys.argv[0] = 'pyinfra'; main()"
)


def run_pyinfra(
    inventory: Path, entry: str, log: Path, nagle: bool = False
) -> tuple[float, bool, str, float]:
    """Run one entry file; return (seconds, ok, debug output, max RSS MiB of that process)."""
    cli = [sys.executable, "-c", NAGLE_CLI] if nagle else [pyinfra_bin()]
    command = [*cli, "-y", "--debug", str(inventory), f"deploys/{entry}.py"]
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = ANSI.sub("", log.read_text(errors="replace"))
    return seconds, proc.returncode == 0, text, usage.ru_maxrss / 1024


def count(pattern: re.Pattern[str], text: str) -> dict[str, int]:
    """How many lines of pyinfra's debug log match ``pattern``, per host name."""
    return dict(Counter(match.group(1) for match in pattern.finditer(text)))


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
                        seconds, ok, text, rss = run_pyinfra(
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
                                commands_per_host=count(COMMAND_LINE, text),
                                connections_per_host=count(CONNECT_LINE, text),
                                uploads=len(UPLOAD_LINE.findall(text)),
                                max_rss_mib=round(rss, 1),
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
        f"{'ok' if r.ok else 'FAIL':>4} {max(cmds):>9} {max(conns):>6} {r.uploads:>7} "
        f"{r.max_rss_mib:>8.1f}"
    )


HEADER = "hosts prof     entry       kind  seconds   ok cmds/host conn/h uploads  rss MiB"


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
            one = by.get((1, profile, "cluster", kind))
            ten = by.get((10, profile, "cluster", kind))
            if one and ten:
                lines.append(
                    f"target {profile}: {kind} 10 hosts / 1 host = "
                    f"{ten.seconds / one.seconds:.2f} (<= 1.3)"
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
