"""``k3sfleet token save``: the cluster token into the vault, never onto stdout; the notice.

The server side (SSH ``cat`` of the node-token) is replaced by a function returning a token;
the vault is real: written by k3sfleet, decrypted by the ``ansible-vault`` CLI and read back by
``Settings`` as ``K3S_TOKEN``. The lab test (tests/lab/test_secret_output_lab.py) runs the
command against a real server.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import k3sfleet.token as token_module
from k3sfleet.cli import main
from k3sfleet.secret import Secret
from k3sfleet.settings import Settings
from k3sfleet.vault import set_value

PASSWORD = "correct horse battery"
TOKEN = "K10aa11bb22cc33dd44ee55ff66::server:0123456789abcdef0123456789abcdef"
INVENTORY = """\
from k3sfleet.inventory import Node, groups

NODES = [
    Node("s1", role="server", address="192.0.2.10", ssh_user="admin"),
    Node("a1", role="agent", address="192.0.2.11", ssh_user="admin"),
]
k3s_servers, k3s_agents = groups(NODES)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "inventory.py").write_text(INVENTORY)
    pw = tmp_path / "vault-pass"
    pw.write_text(PASSWORD + "\n")
    (tmp_path / ".envrc").write_text(f"export K3SFLEET_VAULT_PASSWORD_FILE={pw}\n")
    monkeypatch.chdir(tmp_path)
    for name in ("K3S_TOKEN", "K3SFLEET_VAULT_FILE", "K3SFLEET_VAULT_PASSWORD_FILE",
                 "ANSIBLE_VAULT_PASSWORD_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def fake_server(monkeypatch: pytest.MonkeyPatch, value: str) -> list[str]:
    read: list[str] = []

    def fetch(server: object) -> Secret:
        read.append(getattr(server, "name", "?"))
        return Secret(value)

    monkeypatch.setattr(token_module, "fetch", fetch)
    return read


def write_vault(project: Path, data: dict[str, str]) -> None:
    for key, value in data.items():
        set_value(project / "vault.yml", key, value, PASSWORD.encode())


def save(project: Path, *args: str) -> int:
    return main(["--project-dir", str(project), "token", "save", *args])


def test_save_stores_the_token_and_prints_it_nowhere(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_vault(project, {"vault_tailscale_auth_key": "tskey-auth-x"})
    read = fake_server(monkeypatch, TOKEN)
    assert save(project) == 0
    out = capsys.readouterr()
    assert read == ["s1"]  # the first server of the inventory
    assert TOKEN not in out.out + out.err and TOKEN.rsplit(":", 1)[-1] not in out.out + out.err
    assert "stored in" in out.err and "vault_k3s_token" in out.err
    text = (project / "vault.yml").read_text()
    assert text.startswith("$ANSIBLE_VAULT;1.1;AES256") and TOKEN not in text
    # K3S_TOKEN now comes from the vault, as every deploy reads it
    settings = Settings.load(project)
    assert isinstance(settings.k3s_token, Secret) and settings.k3s_token.unmask() == TOKEN
    assert settings.tailscale_auth_key == Secret("tskey-auth-x")  # other keys kept
    if shutil.which("ansible-vault"):  # the real CLI reads it too
        plain = subprocess.run(
            ["ansible-vault", "view", "--vault-password-file", str(project / "vault-pass"),
             str(project / "vault.yml")],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        assert yaml.safe_load(plain)["vault_k3s_token"] == TOKEN


def test_save_again_changes_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_server(monkeypatch, TOKEN)
    assert save(project) == 0
    before = (project / "vault.yml").read_bytes()
    capsys.readouterr()
    assert save(project) == 0
    assert "already in" in capsys.readouterr().err
    assert (project / "vault.yml").read_bytes() == before


def test_a_different_token_in_the_vault_is_never_overwritten(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_vault(project, {"vault_k3s_token": "the-token-the-cluster-started-with"})
    before = (project / "vault.yml").read_bytes()
    fake_server(monkeypatch, TOKEN)
    assert save(project) == 1  # refused: the operation failed
    err = capsys.readouterr().err
    assert "not the token of s1" in err and "nothing was changed" in err
    assert TOKEN not in err and "the-token-the-cluster-started-with" not in err
    assert (project / "vault.yml").read_bytes() == before


def test_server_option_and_unknown_server(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    read = fake_server(monkeypatch, TOKEN)
    assert save(project, "--server", "a1") == 3  # bad input: an agent holds no token
    assert "no server a1" in capsys.readouterr().err and read == []


def test_notice_names_the_server_and_the_command() -> None:
    text = token_module.notice("vps-aws-1")
    assert "K3S_TOKEN is not set" in text and "`k3sfleet token save`" in text
    assert "vps-aws-1:/var/lib/rancher/k3s/server/node-token" in text
