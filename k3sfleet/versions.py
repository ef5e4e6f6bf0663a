"""K3s versions k3sfleet refuses to install, with the reason, unless explicitly allowed.

A version is refused when it matches an entry of ``KNOWN_BAD`` whose condition holds for the
cluster being deployed (most regressions hit only some setups, for example vpn-auth). Users
who know better list the version in ``K3S_ALLOW_VERSIONS`` (comma-separated).

Example::

    problem = refusal("v1.35.5+k3s1", allow="", vpn_auth=True)
    # 'K3S_VERSION v1.35.5+k3s1 is known bad: embedded etcd ... (k3s#14515). To use it
    #  anyway, add it to K3S_ALLOW_VERSIONS.'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(?:-rc\d+)?\+k3s(\d+)$")


@dataclass(frozen=True)
class KnownBad:
    """A range of bad patch releases of one minor line: ``first`` <= patch < ``fixed``.

    ``fixed`` is ``None`` while no fixed patch release of that line is known: every later
    patch of the line is refused until this list names the fix.
    ``vpn_auth_only`` limits the refusal to clusters that use k3s's Tailscale integration.
    """

    minor: tuple[int, int]
    first: int
    fixed: int | None
    reason: str
    vpn_auth_only: bool = False

    def matches(self, version: str) -> bool:
        parsed = parse(version)
        if parsed is None or (parsed[0], parsed[1]) != self.minor:
            return False
        patch = parsed[2]
        return patch >= self.first and (self.fixed is None or patch < self.fixed)


ETCD_ON_VPN_IP = (
    "embedded etcd listens on and advertises the VPN (tailnet) address instead of the node IP, "
    "so an upgraded server's etcd member no longer matches and etcd breaks "
    "(k3s#14515, a regression from the executor rework k3s#14000 backported in the 2026-05 "
    "releases)"
)

# Lines that got the k3s#14000 backport in the 2026-05 release cycle (v1.36.1+k3s1,
# v1.35.5+k3s1, v1.34.8+k3s1; v1.36.0 predates it). No fixed patch release is recorded yet,
# so later patches of those lines stay refused until one is named here.
KNOWN_BAD: tuple[KnownBad, ...] = (
    KnownBad((1, 36), 1, None, ETCD_ON_VPN_IP, vpn_auth_only=True),
    KnownBad((1, 35), 5, None, ETCD_ON_VPN_IP, vpn_auth_only=True),
    KnownBad((1, 34), 8, None, ETCD_ON_VPN_IP, vpn_auth_only=True),
)


def parse(version: str) -> tuple[int, int, int, int] | None:
    """``"v1.34.2+k3s1"`` -> ``(1, 34, 2, 1)``; ``None`` when it is not a k3s release name."""
    m = VERSION_RE.match(version.strip())
    return (int(m[1]), int(m[2]), int(m[3]), int(m[4])) if m else None


def allowed(allow: str) -> set[str]:
    """The versions named in ``K3S_ALLOW_VERSIONS``."""
    return {v.strip() for v in allow.split(",") if v.strip()}


def refusal(version: str, *, allow: str = "", vpn_auth: bool = True) -> str | None:
    """Why ``version`` must not be installed, or ``None`` when it may be."""
    if parse(version) is None:
        return f"K3S_VERSION {version!r} is not a k3s release name (like v1.34.2+k3s1)"
    if version in allowed(allow):
        return None
    for bad in KNOWN_BAD:
        if bad.matches(version) and (vpn_auth or not bad.vpn_auth_only):
            return (
                f"K3S_VERSION {version} is known bad: {bad.reason}. To use it anyway, add it "
                "to K3S_ALLOW_VERSIONS."
            )
    return None
