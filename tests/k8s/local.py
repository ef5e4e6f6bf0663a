"""Loopback ports and process ends for the k8s tests.

Example::

    plane = ControlPlane(programs, server_dir, port=free_port())
    assert gone(pid)
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gone(pid: int) -> bool:
    """True when no process ``pid`` exists (a zombie counts as there until it is reaped: our
    ``Popen.wait()`` reaps ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
