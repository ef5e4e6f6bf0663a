"""What Tailscale says about the node: backend state, tailnet addresses, hostname.

Example::

    status = host.get_fact(TailscaleStatus)
    status["backend_state"]     # "Running", "NeedsLogin", "Stopped", or "NoState" (no daemon)
    status["hostname"]          # "vps-hetzner-1"
    status["ips"]               # ["100.64.0.11", "fd7a:115c:a1e0::b"]
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, TypedDict

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

# tailscaled tells systemd it is ready before its backend runs: tailscale.com v1.102.5
# ipn/ipnserver/server.go ``Run`` sends READY=1 first, while cmd/tailscaled/tailscaled.go builds
# and ``Start``s the LocalBackend in a goroutine, so just after a boot or a restart a logged-in
# node answers NoState or Starting (ipn/backend.go) before it is Running again. The fact waits
# those states out, while tailscaled is active, for at most SETTLE_SECONDS, so a deploy right
# after a reboot does not take a logged-in node for a logged-out one and run `tailscale up`.
SETTLE_SECONDS = 30
STATUS_COMMAND = (
    "n=0; while :; do s=$(tailscale status --json 2>/dev/null); "
    "case \"$s\" in ''|*'\"BackendState\": \"NoState\"'*|*'\"BackendState\": \"Starting\"'*) "
    f"[ $n -lt {SETTLE_SECONDS} ] && systemctl is-active --quiet tailscaled || break ;; "
    "*) break ;; esac; n=$((n + 1)); sleep 1; done; "
    "if [ -n \"$s\" ]; then printf '%s\\n' \"$s\"; fi"
)


class TailscaleStatusData(TypedDict):
    backend_state: str
    hostname: str | None
    dns_name: str | None
    ips: list[str]
    online: bool


class TailscaleStatus(FactBase[TailscaleStatusData]):
    """``tailscale status --json`` reduced to what deploys decide on.

    ``backend_state`` is ``NoState`` when tailscale is not installed or tailscaled does not answer.
    Just after tailscaled starts, the command waits (at most ``SETTLE_SECONDS``) for its backend
    to leave NoState and Starting.

    Example output::

        {"backend_state": "Running", "hostname": "vps-aws-1", "dns_name": "vps-aws-1.tail1.ts.net.",
         "ips": ["100.64.0.11"], "online": True}
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "tailscale"

    def command(self) -> str:
        # Logged out, tailscale still prints JSON; with no daemon it prints nothing on stdout.
        return STATUS_COMMAND

    @staticmethod
    def default() -> TailscaleStatusData:
        return {"backend_state": "NoState", "hostname": None, "dns_name": None, "ips": [],
                "online": False}

    def process(self, output: list[str]) -> TailscaleStatusData:
        try:
            raw: dict[str, Any] = json.loads("\n".join(output))
        except ValueError as e:
            raise FactProcessError(f"tailscale status --json: not JSON ({e})") from None
        me = raw.get("Self") or {}
        return {
            "backend_state": str(raw.get("BackendState") or "NoState"),
            "hostname": me.get("HostName"),
            "dns_name": me.get("DNSName"),
            "ips": list(me.get("TailscaleIPs") or raw.get("TailscaleIPs") or []),
            "online": bool(me.get("Online", False)),
        }


def logged_in_as(status: Any, name: str) -> bool:
    """Whether ``status`` (a ``TailscaleStatus`` value) shows the node up and named ``name``."""
    return bool(status) and status.get("backend_state") == "Running" and status.get(
        "hostname"
    ) == name


class AdvertisedRoutesData(TypedDict):
    advertised: list[str]
    pod_subnet: str | None


class AdvertisedRoutes(FactBase[AdvertisedRoutesData]):
    """The subnet routes the node advertises (``tailscale debug prefs`` AdvertiseRoutes) and
    its K3s pod subnet (flannel's ``/run/flannel/subnet.env``), to keep across ``tailscale up
    --reset``.

    K3s advertises the pod subnet once, when flannel starts (k3s-io/k3s v1.34.2+k3s1
    ``pkg/agent/flannel/setup.go``: ``tailscale set --accept-routes --advertise-routes=$SUBNET``
    plus what ``tailscale debug prefs`` already lists, ``pkg/vpn/vpn.go``). ``up --reset``
    drops every route not given (tailscale.com v1.102.5 ``cmd/tailscale/cli/up.go``) and
    ``tailscale logout`` deletes the profile with its routes (``ipn/ipnlocal/local.go``), so
    the subnet file (flannel-io/flannel ``pkg/subnet/subnet.go`` ``WriteSubnetFile``:
    ``FLANNEL_SUBNET`` is the lease's first address) is the one source left then.

    Example output::

        {"advertised": ["10.42.1.0/24"], "pod_subnet": "10.42.1.0/24"}
    """

    MARK = "--k3sfleet-flannel--"

    def command(self) -> str:
        return (
            "(tailscale debug prefs 2>/dev/null || true); "
            f"echo {self.MARK}; cat /run/flannel/subnet.env 2>/dev/null || true"
        )

    @staticmethod
    def default() -> AdvertisedRoutesData:
        return {"advertised": [], "pod_subnet": None}

    def process(self, output: list[str]) -> AdvertisedRoutesData:
        mark = output.index(self.MARK) if self.MARK in output else len(output)
        prefs_text = "\n".join(output[:mark]).strip()
        try:
            prefs: dict[str, Any] = json.loads(prefs_text) if prefs_text else {}
        except ValueError as e:
            raise FactProcessError(f"tailscale debug prefs: not JSON ({e})") from None
        pod_subnet = None
        for line in output[mark + 1 :]:
            if line.startswith("FLANNEL_SUBNET="):
                pod_subnet = str(ipaddress.ip_interface(line.split("=", 1)[1].strip()).network)
        return {
            "advertised": [str(r) for r in prefs.get("AdvertiseRoutes") or []],
            "pod_subnet": pod_subnet,
        }


def routes_to_keep(routes: AdvertisedRoutesData) -> list[str]:
    """The routes ``tailscale up --reset`` must advertise again: sorted, no repeats.

    Example::

        routes_to_keep({"advertised": ["192.168.7.0/24"], "pod_subnet": "10.42.1.0/24"})
        # ["10.42.1.0/24", "192.168.7.0/24"]
    """
    wanted = set(routes.get("advertised") or [])
    if routes.get("pod_subnet"):
        wanted.add(str(routes["pod_subnet"]))
    return sorted(wanted)
