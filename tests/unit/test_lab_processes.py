"""How the lab tells its helper processes are alive (k3sfleet.lab.hosts): real processes,
started and reaped here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3sfleet.lab import hosts

MARKER = "k3sfleet-unit-marker"


def _exec_chain(tmp_path: Path, times: int) -> subprocess.Popen[bytes]:
    """A process that replaces itself with execve(2) ``times`` times, then sleeps 0.2 s."""
    script = tmp_path / "chain.sh"
    script.write_text('#!/bin/sh\n[ "$2" -gt 0 ] && exec "$0" "$1" $(($2 - 1))\nsleep 0.2\n')
    script.chmod(0o755)
    return subprocess.Popen([str(script), MARKER, str(times)])


def test_a_process_in_execve_is_alive(tmp_path: Path) -> None:
    # `ip netns exec tailscaled ...` is in execve(2) right after the lab starts it; CI's
    # lab once called the operator's tailscaled dead 15 ms after starting it, with an empty
    # log. Here: 300 execs, polled all the while; each poll must say alive.
    chain = _exec_chain(tmp_path, 300)
    polls, dead = 0, 0
    try:
        while chain.poll() is None:
            seen = hosts.alive(chain.pid, MARKER)
            if chain.poll() is None:  # still running after the answer: it must be "alive"
                polls += 1
                dead += not seen
    finally:
        chain.kill()
        chain.wait()
    assert polls > 100, polls
    assert dead == 0, f"{dead} of {polls} polls called a running process dead"


def test_gone_zombie_and_foreign_processes_are_not_alive(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", MARKER])
    try:
        assert hosts.alive(sleeper.pid, MARKER)
        assert not hosts.alive(sleeper.pid, "another-marker")  # a reused PID is not ours
        sleeper.kill()
        deadline = time.monotonic() + 5
        while hosts._stat(sleeper.pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hosts._stat(sleeper.pid)[0] == "Z"
        assert not hosts.alive(sleeper.pid, MARKER)  # a zombie (not yet reaped) is dead
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not hosts.alive(sleeper.pid, MARKER)  # reaped: no /proc entry
    assert not hosts.alive(None, MARKER)


def test_wait_started_names_what_exited_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "helper.log"
    pid = hosts.detached([sys.executable, "-c", f"import sys; print('bind: address in use'); "
                          f"sys.exit(1)  # {MARKER}"], log)
    with pytest.raises(hosts.HostError) as failed:
        hosts.wait_started(pid, MARKER, lambda: False, log, "the helper", timeout=20)
    message = str(failed.value)
    assert message.startswith(f"the helper exited; see {log}:"), message
    assert "bind: address in use" in message


def test_wait_started_returns_once_ready_and_says_when_it_timed_out(tmp_path: Path) -> None:
    log = tmp_path / "helper.log"
    ready = tmp_path / "ready"
    pid = hosts.detached([sys.executable, "-c", f"import pathlib, time; time.sleep(0.3); "
                          f"pathlib.Path({str(ready)!r}).touch(); time.sleep(30)  # {MARKER}"],
                         log)
    try:
        hosts.wait_started(pid, MARKER, ready.exists, log, "the helper")
        assert ready.exists()
        with pytest.raises(hosts.HostError) as failed:
            hosts.wait_started(pid, MARKER, lambda: False, log, "the helper", timeout=0.2)
        assert str(failed.value) == f"the helper was not up after 0.2 s; see {log} (empty)"
    finally:
        os.kill(pid, signal.SIGTERM)
        assert hosts.wait_gone(pid, MARKER, 10)


def test_kernel_threads_are_answered_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # `lab leftovers` asks about every PID in /proc: a kernel thread (no command line, ever)
    # must not cost the execve grace each.
    kthreads = [int(p.name) for p in Path("/proc").iterdir()
                if p.name.isdigit() and hosts._stat(int(p.name))[1] & hosts._PF_KTHREAD]
    if not kthreads:
        pytest.skip("no kernel threads visible in this PID namespace")

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"alive() waited {seconds} s on a kernel thread")

    monkeypatch.setattr(hosts.time, "sleep", no_sleep)
    assert not any(hosts.alive(pid, "") for pid in kthreads[:20])


def test_processes_finds_every_live_process_naming_the_marker(tmp_path: Path) -> None:
    """hosts.processes (lab.leftovers and the tests' "nothing left running" checks): each
    process naming the marker, one in execve among them, and a command line that is not UTF-8
    does not stop the scan."""
    marker = f"{MARKER}-{os.getpid()}"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    odd = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", b"\xff\xfe"])
    chain = _exec_chain(tmp_path, 200)
    try:
        found = hosts.processes(marker)
        assert list(found) == [sleeper.pid] and marker in found[sleeper.pid]
        assert odd.pid in hosts.processes("time.sleep(30)")
        seen = 0
        while chain.poll() is None:
            present = chain.pid in hosts.processes(MARKER)
            if chain.poll() is None:
                assert present, "a process in execve(2) was missed"
                seen += 1
        assert seen > 0
        sleeper.kill()
        sleeper.wait()
        assert hosts.processes(marker) == {}
    finally:
        for proc in (sleeper, odd, chain):
            proc.kill()
            proc.wait()
