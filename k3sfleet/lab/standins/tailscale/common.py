"""Paths and state shared by the stand-in tailscale CLI and daemon (standard library only).

The lab writes /etc/k3sfleet-lab/host.json into each host: its tailnet address and prefix and the
sha256 of every valid lab auth key. ``tailscale up`` with a valid key brings ``tailscale0`` up
with that address; tailscaled re-applies the state when it starts and takes the interface down
when it stops (a real tailscaled's TUN device disappears with it).

Example::

    state = load_state()       # {"LoggedIn": false, "WantRunning": false, ...}
    apply_interface(state)     # tailscale0 up with 100.64.1.11/24 when logged in and wanted
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

VERSION = "1.90.0"
STATE_DIR = Path(os.environ.get("TS_STANDIN_STATE_DIR", "/var/lib/tailscale"))
STATE_FILE = STATE_DIR / "tailscaled.state"
ARGV_LOG = STATE_DIR / "argv.log"
SOCKET = Path(os.environ.get("TS_STANDIN_SOCKET", "/run/tailscale/tailscaled.sock"))
HOST_FILE = Path(os.environ.get("TS_STANDIN_HOST_FILE", "/etc/k3sfleet-lab/host.json"))
INTERFACE = "tailscale0"


def host_info() -> dict[str, Any]:
    try:
        info: dict[str, Any] = json.loads(HOST_FILE.read_text())
        return info
    except (OSError, json.JSONDecodeError):
        return {}


def load_state() -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(STATE_FILE.read_text())
        return state
    except (OSError, json.JSONDecodeError):
        return {"LoggedIn": False, "WantRunning": False}


def save_state(state: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = STATE_FILE.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
    os.replace(tmp, STATE_FILE)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def interface_address() -> str | None:
    out = _ip("-4", "-o", "addr", "show", "dev", INTERFACE).stdout.split()
    return out[out.index("inet") + 1].split("/")[0] if "inet" in out else None


def apply_interface(state: dict[str, Any], daemon_running: bool = True) -> None:
    """tailscale0 up with the host's tailnet address iff running; else down, no address."""
    info = host_info()
    address = info.get("tailnet_address")
    if daemon_running and state.get("LoggedIn") and state.get("WantRunning") and address:
        cidr = f"{address}/{info.get('tailnet_prefix', 24)}"
        if interface_address() != address:
            _ip("addr", "flush", "dev", INTERFACE)
            _ip("addr", "add", cidr, "dev", INTERFACE)
        _ip("link", "set", INTERFACE, "up")
    else:
        _ip("addr", "flush", "dev", INTERFACE)
        _ip("link", "set", INTERFACE, "down")
