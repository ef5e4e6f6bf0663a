"""tests/k8s/k3s_procs.py's teardown: a k3s that outlives SIGTERM is killed, and what it left
running under the harness's root is stopped by PID (never another running k3s's programs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from k3sfleet.lab import hosts
from k3sfleet.lab.controlplane import Binaries
from tests.k8s.k3s_procs import K3sProcs

# A "k3s" that ignores SIGTERM after starting a program of its own in a session of its own,
# as the stand-in starts kine and kube-apiserver.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); time.sleep(120)"
subprocess.Popen([sys.executable, "-c", child, sys.argv[1] + "-child"],
                 start_new_session=True)
time.sleep(120)
"""


def _start(procs: K3sProcs, marker: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN, str(marker)],  # noqa: S603
                            start_new_session=True)
    procs.procs.append(proc)
    return proc


def test_a_killed_k3s_leaves_nothing_running_and_says_so(tmp_path: Path) -> None:
    procs = K3sProcs(tmp_path, Binaries({}))
    stubborn = _start(procs, tmp_path / "stubborn-child")  # its program: ...-child-child
    healthy = _start(procs, tmp_path / "healthy-child")
    deadline = time.monotonic() + 10
    def children() -> list[str]:
        return [c for c in hosts.processes(str(tmp_path)).values() if "-child-child" in c]

    while len(children()) < 2 and time.monotonic() < deadline:  # both ignore SIGTERM by now
        time.sleep(0.05)
    try:
        procs.stop(stubborn, timeout=1)
        left = hosts.processes(str(tmp_path))
        assert not any("stubborn-child" in c for c in left.values()), left
        assert any("healthy-child" in c for c in left.values()), left  # another k3s's: kept
        (note,) = tmp_path.glob("killed-*.log")
        assert "stubborn-child" in note.read_text()
    finally:
        healthy.kill()
        healthy.wait()
        for pid in hosts.processes(str(tmp_path)):
            os.kill(pid, 9)
