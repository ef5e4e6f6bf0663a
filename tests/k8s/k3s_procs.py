"""The stand-in ``k3s`` run as processes of a test on 127.0.0.1, on the real control plane.

``K3SFLEET_LAB_PROGRAMS`` names the built programs, laid out as lab hosts see them under
``/opt/k3sfleet-standin/go`` (``standins.k3s.controlplane.programs``).

Example::

    procs = K3sProcs(tmp_path, binaries)
    server = procs.start("server", K3S_VERSION, "--data-dir=...", "--cluster-init")
    procs.run("etcd-snapshot", "ls", "--data-dir=...")     # a one-shot command
    procs.stop(server)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from k3sfleet.lab import hosts
from k3sfleet.lab.controlplane import K3S_VERSION, Binaries
from tests.k8s.local import free_port

TOKEN = "lab-token-0123456789"
RUN = "import sys; from k3sfleet.lab.standins.k3s.main import main; sys.exit(main(sys.argv[2:], sys.argv[1]))"  # noqa: E501


class K3sProcs:
    """Every ``k3s`` process a test starts under ``root``; :meth:`stop_all` ends them by PID."""

    def __init__(self, root: Path, binaries: Binaries) -> None:
        self.root = root
        self.port = free_port()
        bins = root / "go"
        bins.mkdir(exist_ok=True)
        for name, directory in binaries.directories.items():
            if not (bins / name).exists():
                (bins / name).symlink_to(directory)
        self.env = {**os.environ, "K3SFLEET_LAB_PROGRAMS": str(bins)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, role: str, version: str, *args: str) -> subprocess.Popen[bytes]:
        """``k3s <role> <args>`` of ``version`` in the background, its output in a log file."""
        log = (self.root / f"{role}-{len(self.procs)}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", RUN, version, role, *args], env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """What ``proc`` (started by :meth:`start`) has written so far."""
        index = self.procs.index(proc)
        return next(self.root.glob(f"*-{index}.log")).read_text()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A one-shot ``k3s <args>`` (etcd-snapshot, --cluster-reset), waited for."""
        return subprocess.run(  # noqa: S603
            [sys.executable, "-c", RUN, K3S_VERSION, *args], env=self.env, text=True,
            capture_output=True, timeout=120)

    def executable(self, directory: Path, version: str = K3S_VERSION) -> Path:
        """A ``k3s`` command in ``directory`` for shell commands run as an operator would."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "k3s"
        path.write_text(f"#!/bin/sh\nexec {sys.executable} -c '{RUN}' {version} \"$@\"\n")
        path.chmod(0o755)
        return path

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL to its process group after ``timeout`` s.

        A stand-in server stops its control plane on SIGTERM; its components run in sessions of
        their own (so a plain death would leave them running). When it had to be killed, what
        it started under :attr:`root` is stopped here by PID, and its log says so: once in CI
        a server killed this way left kine serving 127.0.0.1:2379, and the next module's
        server refused to start ("another datastore would be served")."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self._stop_leftovers(proc, timeout)

    def _stop_leftovers(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Stop, by PID, processes under :attr:`root` that no running k3s of ours started."""
        ours = {p.pid for p in self.procs if p.poll() is None}
        left = {pid: command for pid, command in hosts.processes(str(self.root)).items()
                if pid not in ours and _parent(pid) not in ours}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid, command in left.items():
            if not hosts.wait_gone(pid, command, 30):  # (a kube-apiserver may take a while)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                hosts.wait_gone(pid, command, 10)
        with (self.root / f"killed-{proc.pid}.log").open("a") as note:
            note.write(f"k3s pid {proc.pid} outlived SIGTERM by {timeout:.0f} s and was killed; "
                       f"stopped what it left running: {sorted(left.values())}\n")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def _parent(pid: int) -> int:
    """The parent PID of ``pid`` (``/proc/<pid>/stat``), 0 if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0
