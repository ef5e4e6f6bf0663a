"""benchmarks/counting.py counts pyinfra's SSH work per host (the benchmark's numbers)."""

from __future__ import annotations

import atexit
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paramiko
import pytest
from pyinfra.connectors.ssh import SSHConnector

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import counting  # noqa: E402


def test_counts_commands_uploads_connections_and_handshakes_per_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake(kind: str) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> str:
            calls.append(kind)
            return kind

        return method

    # what install() wraps: the real methods would need a host; the wrappers must still call them
    monkeypatch.setattr(SSHConnector, "run_shell_command", fake("run"))
    monkeypatch.setattr(SSHConnector, "put_file", fake("put"))
    monkeypatch.setattr(SSHConnector, "_connect", fake("connect"))
    monkeypatch.setattr(paramiko.Transport, "start_client", fake("handshake"))
    out = tmp_path / "counts.json"
    write = counting.install(out)
    atexit.unregister(write)
    a = SimpleNamespace(host=SimpleNamespace(name="node-a"))
    b = SimpleNamespace(host=SimpleNamespace(name="node-b"))
    for connector in (a, b):
        SSHConnector._connect(connector)  # type: ignore[arg-type]
        paramiko.Transport.start_client(connector)  # type: ignore[arg-type]
    assert SSHConnector.run_shell_command(a, "true") == "run"  # type: ignore[arg-type]
    SSHConnector.run_shell_command(a, "true")  # type: ignore[arg-type]
    SSHConnector.run_shell_command(b, "true")  # type: ignore[arg-type]
    SSHConnector.put_file(b, "src", "/dst")  # type: ignore[arg-type]
    write()
    assert json.loads(out.read_text()) == {
        "commands": {"node-a": 2, "node-b": 1},
        "uploads": {"node-b": 1},
        "connections": {"node-a": 1, "node-b": 1},
        "handshakes": 2,
    }
    assert calls.count("run") == 3 and calls.count("put") == 1


def test_summary_prints_each_ratio_with_its_cpu_floor() -> None:
    import run as bench

    def r(size: int, seconds: float, cpu: float, machine: float) -> bench.Run:
        return bench.Run(size=size, profile="lan", entry="cluster", kind="noop", seconds=seconds,
                         ok=True, commands_per_host={"a": 1, "b": 2},
                         connections_per_host={"a": 1, "b": 1},
                         cpu_seconds=cpu, machine_cpu_seconds=machine)  # fmt: skip

    one, ten = r(1, 0.8, 0.6, 0.7), r(10, 1.6, 0.9, 2.4)
    assert bench.cpu_floor(ten, cores=2) == 1.2  # the hosts' CPU, shared by 2 cores
    assert bench.cpu_floor(one, cores=2) == 0.6  # the one-thread pyinfra process
    lines = bench.summary([one, ten])
    ratio = next(line for line in lines if "noop cluster 10 hosts / 1 host" in line)
    assert "= 2.00 (<= 1.3)" in ratio
    floor = bench.cpu_floor(ten)
    assert f"at best {floor / 0.8:.2f}" in ratio
    assert "remote commands per host 2 (<= 30), SSH connections per host 1 (1)" in lines[-1]
