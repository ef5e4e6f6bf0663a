"""The stand-in ``tailscaled``: holds the control socket and the tailnet interface's state.

Started by tailscaled.service. While it runs, the CLI can reach it on
/run/tailscale/tailscaled.sock; on start it brings tailscale0 back as the saved state says (a
logged-in node reconnects after a reboot); on SIGTERM it takes tailscale0 down.

Example::

    systemctl start tailscaled     # then: tailscale up --auth-key=file:/etc/tailscale/authkey
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from types import FrameType

from .common import SOCKET, apply_interface, load_state

PUBLIC_STATE = (
    "LoggedIn", "WantRunning", "HostName", "AdvertiseTags", "AcceptRoutes", "AdvertiseRoutes"
)


def main() -> int:
    apply_interface(load_state())  # before the socket exists: a CLI never sees a half state
    SOCKET.parent.mkdir(parents=True, exist_ok=True)
    if SOCKET.exists():
        SOCKET.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(SOCKET))
    os.chmod(SOCKET, 0o666)
    server.listen(16)

    def stop(signum: int, frame: FrameType | None) -> None:
        apply_interface(load_state(), daemon_running=False)
        server.close()
        SOCKET.unlink(missing_ok=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"tailscaled (stand-in): listening on {SOCKET}", flush=True)
    while True:
        connection, _ = server.accept()
        with connection:
            # The CLI of any user reads the state through the socket, as with the real daemon.
            state = {k: v for k, v in load_state().items() if k in PUBLIC_STATE}
            connection.sendall(json.dumps({"ok": True, "state": state}).encode() + b"\n")
