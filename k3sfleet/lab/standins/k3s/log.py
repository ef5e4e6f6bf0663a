"""k3s-style log lines on stderr (the journal keeps them) and systemd readiness notification.

Upstream: k3s logs with sirupsen/logrus's TextFormatter; on a non-terminal (the journal) that is
``time="<RFC 3339>" level=<level> msg="<message>"`` (logrus text_formatter.go; logrus quotes
the message only when it needs quoting, the stand-in always does). A command's error ends k3s
through ``logrus.Fatal`` (k3s-io/k3s cmd/k3s/main.go, cmd/server/main.go ``main``): level
``fatal``, exit status 1. The ``Error: `` prefix of the fatal message is what real k3s v1.3x
journals show (``level=fatal msg="Error: ..."``); the line that adds it was not found in the
revisions of k3s the search index holds (their main.go calls ``logrus.Fatal(err)``); kept
because the lab's tests and k3sfleet's docs quote real journals.

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
    """sd_notify(3): send ``state`` to the service manager if it asked for notifications.

    K3s's units are ``Type=notify``: ``k3s server`` sends ``READY=1`` once its API server is
    ready ("k3s is up and running", k3s-io/k3s pkg/cli/server/server.go ``run``, systemd
    ``SdNotify``). DISAGREES, kept: the stand-in's server and agent both send it only once
    their Node is registered (:mod:`.kubelet`), a little later than real k3s's server, so a
    started unit always has its Node (lab tests read it right after ``systemctl start``).
    """
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
