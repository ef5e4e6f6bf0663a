"""The lab's networks: two bridges per lab and, per host, a network namespace with two veths.

Lab index ``I`` (1..200) picks the names and subnets, so several labs on one machine (parallel
test sessions) never collide; it is claimed under a machine-wide lock in ``/run/k3sfleet-lab``:

    public  bridge k3fl<I>p  10.123.<I>.1/24    host eth0       10.123.<I>.<10+N>/24  (up)
    tailnet bridge k3fl<I>t  100.64.<I>.1/24    host tailscale0 100.64.<I>.<10+N>      (DOWN,
                                                no address until `tailscale up` on that host)

Hosts get no default route: nothing they send can leave the lab's bridges.

Example::

    index, lab_dir = claim_index(Path("/var/lib/k3sfleet-lab"), uid="3f2a...")
    net = LabNet(index)
    create_bridges(net)
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
    def tailnet_bridge(self) -> str:
        return f"k3fl{self.index}t"

    @property
    def gateway(self) -> str:
        """The machine's address on the public bridge (the artifact server listens here)."""
        return f"10.123.{self.index}.1"

    @property
    def tailnet_gateway(self) -> str:
        return f"100.64.{self.index}.1"

    @property
    def tailnet_subnet(self) -> str:
        return f"100.64.{self.index}.0/{PREFIX}"

    def public_ip(self, number: int) -> str:
        return f"10.123.{self.index}.{10 + number}"

    def tailnet_ip(self, number: int) -> str:
        return f"100.64.{self.index}.{10 + number}"

    def netns(self, host: str) -> str:
        return f"k3fl{self.index}-{host}"

    def veths(self, number: int) -> tuple[str, str]:
        """The machine-side ends of host ``number``'s public and tailnet veths (<= 15 chars)."""
        return f"k3fl{self.index}h{number}p", f"k3fl{self.index}h{number}t"


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
            if link_exists(net.public_bridge) or link_exists(net.tailnet_bridge):
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
    """The nftables table that keeps lab ``net``'s traffic on its bridges."""
    return f"k3sfleet_lab{net.index}"


def create_guard(net: LabNet) -> None:
    """Drop anything the machine would route from the lab's bridges elsewhere (or into them),
    even where it forwards IP: bridged traffic between hosts stays untouched."""
    if shutil.which("nft") is None:
        return
    lab = f'{{ "{net.public_bridge}", "{net.tailnet_bridge}" }}'
    rules = (
        f"table inet {guard_table(net)} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority -10; policy accept;\n"
        f"    iifname {lab} oifname != {lab} drop\n"
        f"    oifname {lab} iifname != {lab} drop\n"
        f"    iifname {net.public_bridge} oifname {net.tailnet_bridge} drop\n"
        f"    iifname {net.tailnet_bridge} oifname {net.public_bridge} drop\n"
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


def create_bridges(net: LabNet, tailnet: bool = True) -> None:
    """Create the bridges with the machine's addresses and the forwarding guard (the tailnet
    bridge only with ``tailnet``: a real tailscaled makes its own tailscale0; without it the
    machine gets an ``unreachable`` route for the lab's tailnet subnet, so nothing it sends to a
    host's tailnet address leaves by its default route)."""
    create_guard(net)
    bridges = [(net.public_bridge, net.gateway)]
    if tailnet:
        bridges.append((net.tailnet_bridge, net.tailnet_gateway))
    else:
        ip("route", "replace", "unreachable", net.tailnet_subnet)
    for name, address in bridges:
        if not link_exists(name):
            ip("link", "add", name, "type", "bridge")
            ip("addr", "add", f"{address}/{PREFIX}", "dev", name)
        ip("link", "set", name, "up")


def create_host_links(net: LabNet, number: int, host: str, tailnet: bool = True) -> str:
    """Create host ``number``'s namespace: eth0 (up, addressed) and, with ``tailnet``,
    tailscale0 (down, bare) on the tailnet bridge."""
    ns = net.netns(host)
    pub, tail = net.veths(number)
    if not netns_exists(ns):
        ip("netns", "add", ns)
    links = [(pub, "eth0", net.public_bridge)]
    if tailnet:
        links.append((tail, "tailscale0", net.tailnet_bridge))
    for veth, inner, bridge in links:
        if not link_exists(veth):
            ip("link", "add", veth, "type", "veth", "peer", "name", inner, "netns", ns)
        ip("link", "set", veth, "master", bridge, "up")
    ip("-n", ns, "addr", "replace", f"{net.public_ip(number)}/{PREFIX}", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "link", "set", "lo", "up")
    return ns


def delete_host_links(net: LabNet, number: int, host: str) -> None:
    """Remove host ``number``'s veths and namespace (missing pieces are fine)."""
    for veth in net.veths(number):
        if link_exists(veth):
            ip("link", "del", veth, check=False)
    ns = net.netns(host)
    if netns_exists(ns):
        ip("netns", "del", ns, check=False)


def delete_bridges(net: LabNet) -> None:
    for name in (net.public_bridge, net.tailnet_bridge):
        if link_exists(name):
            ip("link", "del", name, check=False)
    if tailnet_blocked(net):
        ip("route", "del", "unreachable", net.tailnet_subnet, check=False)
    delete_guard(net)


def tailnet_blocked(net: LabNet) -> bool:
    """Whether the machine has create_bridges' ``unreachable`` route for the tailnet subnet."""
    return f"unreachable {net.tailnet_subnet}" in ip("-4", "route", "show", check=False).stdout


def lab_links(net: LabNet) -> list[str]:
    """Every link on the machine that belongs to lab ``net`` (for teardown checks)."""
    prefix = f"k3fl{net.index}"
    out = []
    for path in Path("/sys/class/net").iterdir():
        name = path.name
        if name in (net.public_bridge, net.tailnet_bridge) or (
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
