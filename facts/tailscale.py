"""What Tailscale says about the node: backend state, tailnet addresses, hostname.

Example::

    status = host.get_fact(TailscaleStatus)
    status["backend_state"]     # "Running", "NeedsLogin", "Stopped", or "NoState" (no daemon)
    status["hostname"]          # "vps-hetzner-1"
    status["ips"]               # ["100.64.0.11", "fd7a:115c:a1e0::b"]
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError


class TailscaleStatusData(TypedDict):
    backend_state: str
    hostname: str | None
    dns_name: str | None
    ips: list[str]
    online: bool


class TailscaleStatus(FactBase[TailscaleStatusData]):
    """``tailscale status --json`` reduced to what deploys decide on.

    ``backend_state`` is ``NoState`` when tailscale is not installed or tailscaled does not answer.

    Example output::

        {"backend_state": "Running", "hostname": "vps-aws-1", "dns_name": "vps-aws-1.tail1.ts.net.",
         "ips": ["100.64.0.11"], "online": True}
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "tailscale"

    def command(self) -> str:
        # Logged out, tailscale still prints JSON; with no daemon it prints nothing on stdout.
        return "tailscale status --json 2>/dev/null || true"

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
