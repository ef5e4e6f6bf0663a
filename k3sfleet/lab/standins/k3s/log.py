"""k3s-style log lines on stderr (the journal keeps them) and systemd readiness notification.

Example::

    info("Starting k3s v1.34.2+k3s1")     # time="..." level=info msg="Starting k3s v1.34.2+k3s1"
    notify_ready()                        # READY=1 to $NOTIFY_SOCKET (units are Type=notify)
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from typing import NoReturn


def _emit(level: str, message: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stderr.write(f'time="{stamp}" level={level} msg={json.dumps(message)}\n')
    sys.stderr.flush()


def info(message: str) -> None:
    _emit("info", message)


def warning(message: str) -> None:
    _emit("warning", message)


def error(message: str) -> None:
    _emit("error", message)


class Fatal(SystemExit):
    """Raised to end the process with k3s's ``level=fatal msg="Error: ..."`` and exit 1."""

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message


def fatal(message: str) -> NoReturn:
    raise Fatal(message)


def report_fatal(error: Fatal) -> None:
    _emit("fatal", f"Error: {error.message}")


def notify(state: str) -> bool:
    """sd_notify(3): send ``state`` to the service manager if it asked for notifications."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def notify_ready() -> bool:
    return notify("READY=1")
