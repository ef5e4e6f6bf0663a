"""First contact: ``k3sfleet hostkeys`` against a real SSH server on loopback (paramiko's server
side), fingerprints compared with what ``ssh-keygen -lf`` prints for the same keys."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from k3sfleet.cli import main
from k3sfleet.kube import HostInfo, KubeAccessError, ssh_client

RSA = paramiko.RSAKey.generate(2048)
ECDSA = paramiko.ECDSAKey.generate()


class Server:
    """An SSH server on 127.0.0.1 offering ``keys``; it accepts no login."""

    def __init__(self, keys: list[paramiko.PKey]) -> None:
        self.keys = keys
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            for key in self.keys:
                transport.add_server_key(key)
            try:
                transport.start_server(server=paramiko.ServerInterface())
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server([RSA, ECDSA])
    yield s
    s.close()


def project_for(tmp_path: Path, port: int) -> tuple[Path, Path]:
    known = tmp_path / "ssh" / "known_hosts"
    (tmp_path / ".envrc").write_text(f'export K3SFLEET_KNOWN_HOSTS="{known}"\n')
    (tmp_path / "inventory.py").write_text(
        "from k3sfleet.inventory import Node, groups\n"
        f'_NODES = [Node("vps-1", role="server", address="127.0.0.1", ssh_port={port}, '
        'ssh_user="root")]\n'
        "k3s_servers, k3s_agents = groups(_NODES)\n"
    )
    return tmp_path, known


def keygen_fingerprint(key: paramiko.PKey, tmp_path: Path) -> str:
    pub = tmp_path / f"{key.get_name()}.pub"
    pub.write_text(f"{key.get_name()} {key.get_base64()} vps-1\n")
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs openssh-client")
def test_first_contact_prints_ssh_keygen_fingerprints_and_records_the_keys(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project, known = project_for(tmp_path, server.port)
    host = HostInfo("vps-1", "127.0.0.1", user="root", port=server.port, known_hosts=str(known))
    with pytest.raises(KubeAccessError, match="not found in known_hosts"):
        ssh_client(host, timeout=5).close()

    assert main(["--project-dir", str(project), "hostkeys", "--yes"]) == 0
    out = capsys.readouterr().out
    for key in (RSA, ECDSA):
        assert keygen_fingerprint(key, tmp_path) in out
    lines = known.read_text().splitlines()
    assert sorted(lines) == sorted(
        f"[127.0.0.1]:{server.port} {k.get_name()} {k.get_base64()}" for k in (ECDSA, RSA)
    )
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    # the strict client now gets past the host key (and fails only at login, as it should)
    with pytest.raises(KubeAccessError) as err:
        ssh_client(host, timeout=5).close()
    assert "known_hosts" not in str(err.value)

    assert main(["--project-dir", str(project), "hostkeys", "--yes"]) == 0
    assert "already recorded" in capsys.readouterr().out
    assert known.read_text().splitlines() == lines


def test_a_changed_key_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = Server([ECDSA])
    project, known = project_for(tmp_path, first.port)
    try:
        assert main(["--project-dir", str(project), "hostkeys", "--yes"]) == 0
    finally:
        first.close()
    before = known.read_text()
    rebuilt = Server([paramiko.ECDSAKey.generate()])
    try:
        project_for(tmp_path, rebuilt.port)
        known.write_text(before.replace(f":{first.port}", f":{rebuilt.port}"))
        before = known.read_text()
        assert main(["--project-dir", str(project), "hostkeys", "--yes"]) == 1
    finally:
        rebuilt.close()
    err = capsys.readouterr().err
    assert "differs from the one in" in err and "ssh-keygen -R" in err
    assert known.read_text() == before


def test_it_asks_and_a_no_records_nothing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project, known = project_for(tmp_path, server.port)
    # no terminal and no --yes: refused before contacting anyone
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["--project-dir", str(project), "hostkeys"]) == 3
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter(["maybe", "no"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert main(["--project-dir", str(project), "hostkeys"]) == 0
    assert "vps-1: not recorded" in capsys.readouterr().out
    assert not known.exists()
    assert main(["--project-dir", str(project), "hostkeys", "no-such-node", "--yes"]) == 3
