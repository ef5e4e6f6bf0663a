"""The lab's network: one bridge per lab and, per host, a network namespace with one veth.

Lab index ``I`` (1..200) picks the names and subnets, so several labs on one machine (parallel
test sessions) never collide; it is claimed under a machine-wide lock in ``/run/k3sfleet-lab``:

    public  bridge k3fl<I>p  10.123.<I>.1/24    host eth0       10.123.<I>.<10+N>/24  (up)
    tailnet                  100.64.<I>.0/24    host tailscale0 100.64.<I>.<10+N>: the TUN
                                                device the host's real tailscaled makes

The machine is not on the tailnet: an ``unreachable`` route for 100.64.<I>.0/24 keeps what it
sends there from leaving by its default route. Hosts get no default route: nothing they send
can leave the lab's bridge.

Example::

    index, lab_dir = claim_index(Path("/var/lib/k3sfleet-lab"), uid="3f2a...")
    net = LabNet(index)
    create_bridge(net)
    create_host_links(net, 1, "lab-server-1")      # -> netns "k3fl<index>-lab-server-1"
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLAIMS = Path("/run/k3sfleet-lab")
MAX_INDEX = 200
PREFIX = 24


class NetworkError(RuntimeError):
    """An `ip` command failed."""


@dataclass(frozen=True)
class LabNet:
    """Names and addresses of lab ``index``."""

    index: int

    @property
    def public_bridge(self) -> str:
        return f"k3fl{self.index}p"

    @property
    def gateway(self) -> str:
        """The machine's address on the public bridge (the artifact server listens here)."""
        return f"10.123.{self.index}.1"

    @property
    def tailnet_subnet(self) -> str:
        return f"100.64.{self.index}.0/{PREFIX}"

    def public_ip(self, number: int) -> str:
        return f"10.123.{self.index}.{10 + number}"

    def tailnet_ip(self, number: int) -> str:
        return f"100.64.{self.index}.{10 + number}"

    def netns(self, host: str) -> str:
        return f"k3fl{self.index}-{host}"

    def veth(self, number: int) -> str:
        """The machine-side end of host ``number``'s veth (<= 15 chars)."""
        return f"k3fl{self.index}h{number}p"


def ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGV``; raise ``NetworkError`` with its message when it fails and ``check``."""
    done = subprocess.run(["ip", *argv], text=True, capture_output=True)  # noqa: S603
    if check and done.returncode != 0:
        raise NetworkError(f"ip {' '.join(argv)}: {done.stderr.strip()}")
    return done


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


@contextmanager
def _alloc_lock() -> Iterator[None]:
    CLAIMS.mkdir(parents=True, exist_ok=True)
    with (CLAIMS / "alloc.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _subnet_in_use(index: int) -> bool:
    routes = ip("-4", "route", "show", "table", "all", check=False).stdout
    return f"10.123.{index}." in routes or f"100.64.{index}." in routes


def claim_index(top: Path, name: str | None = None, uid: str = "") -> tuple[int, Path]:
    """Claim a free lab index machine-wide; return it and the lab's directory under ``top``.

    The directory is ``top/name`` (default ``top/lab<index>``). A claim whose lab has no
    state.json, whose claiming process is gone and whose bridge is missing is stale.
    """
    with _alloc_lock():
        for index in range(1, MAX_INDEX + 1):
            claim = CLAIMS / f"index-{index}.json"
            net = LabNet(index)
            if claim.exists():
                try:
                    held = json.loads(claim.read_text())
                    owner, pid = Path(held["lab_dir"]), int(held["pid"])
                except (ValueError, KeyError, TypeError):
                    owner, pid = Path("/nonexistent"), 0
                if (owner / "state.json").exists() or _pid_alive(pid):
                    continue
            if link_exists(net.public_bridge):
                continue
            if _subnet_in_use(index):
                continue
            lab_dir = top / (name or f"lab{index}")
            claim.write_text(json.dumps({"lab_dir": str(lab_dir), "pid": os.getpid(), "uid": uid}))
            return index, lab_dir
    raise NetworkError(f"no free lab index (1..{MAX_INDEX}); run `k3sfleet lab down`")


def _pid_alive(pid: int) -> bool:
    return pid > 0 and Path(f"/proc/{pid}").exists()


def claim_owner(index: int) -> dict[str, str]:
    """The claim on lab index ``index`` (``lab_dir``, ``pid``, ``uid``), ``{}`` if none."""
    try:
        held = json.loads((CLAIMS / f"index-{index}.json").read_text())
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def release_index(index: int, uid: str) -> None:
    """Give lab index ``index`` back (only if the lab ``uid`` holds it)."""
    with _alloc_lock():
        if claim_owner(index).get("uid") == uid:
            (CLAIMS / f"index-{index}.json").unlink(missing_ok=True)


def guard_table(net: LabNet) -> str:
    """The nftables table that keeps lab ``net``'s traffic on its bridge."""
    return f"k3sfleet_lab{net.index}"


def create_guard(net: LabNet) -> None:
    """Drop anything the machine would route from the lab's bridge elsewhere (or into it),
    even where it forwards IP: bridged traffic between hosts stays untouched."""
    if shutil.which("nft") is None:
        return
    lab = net.public_bridge
    rules = (
        f"table inet {guard_table(net)} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority -10; policy accept;\n"
        f"    iifname {lab} oifname != {lab} drop\n"
        f"    oifname {lab} iifname != {lab} drop\n"
        "  }\n"
        "}\n"
    )
    done = subprocess.run(["nft", "-f", "-"], input=rules, text=True,  # noqa: S603
                          capture_output=True)
    if done.returncode != 0:
        raise NetworkError(f"nft: {done.stderr.strip()}")


def guard_exists(net: LabNet) -> bool:
    if shutil.which("nft") is None:
        return False
    done = subprocess.run(["nft", "list", "table", "inet", guard_table(net)],  # noqa: S603
                          capture_output=True)
    return done.returncode == 0


def delete_guard(net: LabNet) -> None:
    if guard_exists(net):
        subprocess.run(["nft", "delete", "table", "inet", guard_table(net)],  # noqa: S603
                       capture_output=True)


def create_bridge(net: LabNet) -> None:
    """Create the bridge with the machine's address, the forwarding guard and the
    ``unreachable`` route for the lab's tailnet subnet (the machine is no tailnet member)."""
    create_guard(net)
    ip("route", "replace", "unreachable", net.tailnet_subnet)
    if not link_exists(net.public_bridge):
        ip("link", "add", net.public_bridge, "type", "bridge")
        ip("addr", "add", f"{net.gateway}/{PREFIX}", "dev", net.public_bridge)
    ip("link", "set", net.public_bridge, "up")


def create_host_links(net: LabNet, number: int, host: str) -> str:
    """Create host ``number``'s namespace with eth0 (up, addressed) on the bridge."""
    ns = net.netns(host)
    veth = net.veth(number)
    if not netns_exists(ns):
        ip("netns", "add", ns)
    if not link_exists(veth):
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "set", veth, "master", net.public_bridge, "up")
    ip("-n", ns, "addr", "replace", f"{net.public_ip(number)}/{PREFIX}", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "link", "set", "lo", "up")
    return ns


def delete_host_links(net: LabNet, number: int, host: str) -> None:
    """Remove host ``number``'s veth and namespace (missing pieces are fine)."""
    if link_exists(net.veth(number)):
        ip("link", "del", net.veth(number), check=False)
    ns = net.netns(host)
    if netns_exists(ns):
        ip("netns", "del", ns, check=False)


def delete_bridge(net: LabNet) -> None:
    if link_exists(net.public_bridge):
        ip("link", "del", net.public_bridge, check=False)
    if tailnet_blocked(net):
        ip("route", "del", "unreachable", net.tailnet_subnet, check=False)
    delete_guard(net)


def tailnet_blocked(net: LabNet) -> bool:
    """Whether the machine has create_bridge's ``unreachable`` route for the tailnet subnet."""
    return f"unreachable {net.tailnet_subnet}" in ip("-4", "route", "show", check=False).stdout


def lab_links(net: LabNet) -> list[str]:
    """Every link on the machine that belongs to lab ``net`` (for teardown checks)."""
    prefix = f"k3fl{net.index}"
    out = []
    for path in Path("/sys/class/net").iterdir():
        name = path.name
        if name == net.public_bridge or (
            name.startswith(prefix + "h") and name[len(prefix) + 1:len(prefix) + 2].isdigit()
        ):
            out.append(name)
    return sorted(out)


def lab_netns(net: LabNet) -> list[str]:
    """Every network namespace on the machine that belongs to lab ``net``."""
    base = Path("/run/netns")
    if not base.exists():
        return []
    return sorted(p.name for p in base.iterdir() if p.name.startswith(f"k3fl{net.index}-"))
