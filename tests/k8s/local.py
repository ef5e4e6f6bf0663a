"""Loopback ports and process ends for the k8s tests.

Example::

    plane = ControlPlane(programs, server_dir, port=free_port())
    assert gone(pid)
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, whose successor is free too (a stand-in k3s server's
    kube-apiserver takes port + 1, as K3s's 6444 beside 6443)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def gone(pid: int) -> bool:
    """True when no process ``pid`` exists (a zombie counts as there until it is reaped: our
    ``Popen.wait()`` reaps ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
