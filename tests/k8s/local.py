"""Loopback ports, process ends and control planes for the k8s tests.

Example::

    with control_plane(binaries, tmp_path / "server") as plane:
        ...                                  # every process ended by its PID, proved gone
    assert gone(pid)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from k3sfleet.lab.controlplane import Binaries
from k3sfleet.lab.standins.k3s.controlplane import PROGRAMS, ControlPlane


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


@contextmanager
def control_plane(binaries: Binaries, server_dir: Path) -> Iterator[ControlPlane]:
    """kine + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1, their
    files in ``server_dir``; on leaving, every process is ended by its PID and proved gone."""
    plane = ControlPlane({program: binaries.path(program) for program in PROGRAMS}, server_dir,
                         port=free_port())
    plane.start()
    pids = plane.pids()
    try:
        yield plane
    finally:
        plane.stop()
    assert all(gone(pid) for pid in pids.values()), f"left running: {pids}"
