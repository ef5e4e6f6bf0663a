"""K3s versions k3sfleet refuses to install, with the reason, unless explicitly allowed.

A version is refused when it matches an entry of ``KNOWN_BAD`` whose condition holds for the
cluster being deployed (most regressions hit only some setups, for example vpn-auth). Users
who know better list the version in ``K3S_ALLOW_VERSIONS`` (comma-separated).

Example::

    problem = refusal("v1.35.5+k3s1", vpn_auth=True, etcd_on_tailnet=False)
    # 'K3S_VERSION v1.35.5+k3s1 is known bad for this configuration: embedded etcd ...
    #  (k3s#14515). To use it anyway, add it to K3S_ALLOW_VERSIONS.'
    refusal("v1.35.5+k3s1", vpn_auth=True, etcd_on_tailnet=True)   # None: our default config
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(?:-rc\d+)?\+k3s(\d+)$")


@dataclass(frozen=True)
class KnownBad:
    """A range of bad patch releases of one minor line: ``first`` <= patch < ``fixed``.

    ``fixed`` is ``None`` while no fixed patch release of that line is known: every later
    patch of the line is refused until this list names the fix.
    ``vpn_auth_only`` limits the refusal to clusters that use k3s's Tailscale integration;
    ``etcd_off_tailnet_only`` to clusters whose servers' etcd is not on the tailnet address
    already (``etcd_on_tailnet``).
    """

    minor: tuple[int, int]
    first: int
    fixed: int | None
    reason: str
    vpn_auth_only: bool = False
    etcd_off_tailnet_only: bool = False

    def applies(self, *, vpn_auth: bool, etcd_on_tailnet: bool) -> bool:
        """Whether this regression hits a cluster configured like that."""
        if self.vpn_auth_only and not vpn_auth:
            return False
        return not (self.etcd_off_tailnet_only and etcd_on_tailnet)

    def matches(self, version: str) -> bool:
        parsed = parse(version)
        if parsed is None or (parsed[0], parsed[1]) != self.minor:
            return False
        patch = parsed[2]
        return patch >= self.first and (self.fixed is None or patch < self.fixed)


ETCD_ON_VPN_IP = (
    "with vpn-auth, embedded etcd listens on and advertises the VPN (tailnet) address instead "
    "of the node IP, so a server upgraded from an earlier release no longer matches its etcd "
    "member and etcd breaks (k3s#14515, from the executor rework k3s#14000). Servers whose "
    "etcd is on the tailnet address already (flannel-iface: tailscale0, no node-ip) are not "
    "affected"
)

# k3s#14515 (read 2026-12): since k3s#14000 the embedded executor
# (pkg/executor/embed/embed.go, v1.36.3+k3s1 lines 114-131 per the issue) replaces the
# --node-ip values with the VPN addresses before the server config is resolved, and
# pkg/cli/server/server.go derives ControlConfig.PrivateIP (etcd's listen/advertise address)
# from --node-ip. Before it, server.go took --node-ip from flannel-iface's address when
# node-ip was unset ("if cmds.AgentConfig.FlannelIface != "" && len(cmds.AgentConfig.NodeIP)
# == 0 { ... NodeIP.Set(GetIPFromInterface(FlannelIface)) }", then "PrivateIP =
# GetFirstValidIPString(NodeIP)"; the same lines in every stored server.go from the v1.2x to
# the v1.3x line), and GetIPFromInterface returns the interface's IPv4 global unicast address
# first; embed.go lists the VPN's IPv4 first too. So with flannel-iface: tailscale0 (our
# default) etcd was on the tailnet IPv4 before and stays there after: nothing moves. It moves,
# and breaks on upgrade, only when etcd was elsewhere: no flannel-iface on tailscale0, or
# node-ip set. Affected lines per the issue: 1.36 from .1, 1.35 from .5; 1.34 from .8 (the
# same backport cycle). The issue is closed; no fixed patch release is recorded here, so
# later patches stay refused (for that configuration) until one is named.
KNOWN_BAD: tuple[KnownBad, ...] = tuple(
    KnownBad(minor, first, None, ETCD_ON_VPN_IP, vpn_auth_only=True, etcd_off_tailnet_only=True)
    for minor, first in (((1, 36), 1), ((1, 35), 5), ((1, 34), 8))
)

# The interface Tailscale creates, which k3s's vpn-auth uses (pkg/vpn/vpn.go VPNInterface).
TAILNET_INTERFACE = "tailscale0"


def etcd_on_tailnet(data: Mapping[str, Any]) -> bool:
    """Whether K3s puts this server's etcd on its tailnet address before k3s#14000 already:
    ``k3s_flannel_iface`` is tailscale0 and ``k3s_extra_config`` sets no ``node-ip``.

    ``data`` is the server's host data; ``k3s_flannel_iface`` missing means the deploy default
    (tailscale0).
    """
    extra = data.get("k3s_extra_config") or {}
    iface = data.get("k3s_flannel_iface", TAILNET_INTERFACE)
    return iface == TAILNET_INTERFACE and not extra.get("node-ip")


def parse(version: str) -> tuple[int, int, int, int] | None:
    """``"v1.34.2+k3s1"`` -> ``(1, 34, 2, 1)``; ``None`` when it is not a k3s release name."""
    m = VERSION_RE.match(version.strip())
    return (int(m[1]), int(m[2]), int(m[3]), int(m[4])) if m else None


def allowed(allow: str) -> set[str]:
    """The versions named in ``K3S_ALLOW_VERSIONS``."""
    return {v.strip() for v in allow.split(",") if v.strip()}


def refusal(
    version: str, *, allow: str = "", vpn_auth: bool = True, etcd_on_tailnet: bool = False
) -> str | None:
    """Why ``version`` must not be installed on a cluster configured like that, or ``None``.

    + vpn_auth: the nodes join through k3s's vpn-auth
    + etcd_on_tailnet: every server's etcd is on its tailnet address already (see
      ``etcd_on_tailnet``)
    """
    if parse(version) is None:
        return f"K3S_VERSION {version!r} is not a k3s release name (like v1.34.2+k3s1)"
    if version in allowed(allow):
        return None
    for bad in KNOWN_BAD:
        if bad.matches(version) and bad.applies(
            vpn_auth=vpn_auth, etcd_on_tailnet=etcd_on_tailnet
        ):
            return (
                f"K3S_VERSION {version} is known bad for this configuration: {bad.reason}. "
                "To use it anyway, add it to K3S_ALLOW_VERSIONS."
            )
    return None
