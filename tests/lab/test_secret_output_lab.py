"""No secret a run uses reaches pyinfra's output at any verbosity, and the cluster token can be
kept in the vault: on real Debian hosts (the lab), through the real pyinfra CLI.

One lab of 1 server + 1 agent, ``K3S_TOKEN`` unset, etcd snapshots to R2 on (so the R2 keys are
in the servers' config.yaml). ``deploys/cluster.py`` runs three times: the first converge at
``-vvv --debug`` (the agent reads the server's node-token while the run executes), a no-op at
``-vvv --debug-all`` (the token is read while the run prepares), and ``--dry --diff -vvv`` with a
changed label (config.yaml would change). The whole output of each is searched for the
node-token (and its password part), the Tailscale auth key and both R2 keys. Then ``k3sfleet
token save`` stores the server's token in a vault without printing it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3sfleet.secret import Secret

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.lab

R2_KEY_ID = "lab-r2-key-id-5f0e2c7d1b"
R2_SECRET = "lab-r2-secret-9a8b7c6d5e4f3a2b1c0d"


def pyinfra(inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real pyinfra CLI from the project directory, stderr merged, no K3S_* variables of the
    developer's environment."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("K3S_", "R2_"))}
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "pyinfra", *args, str(inventory), "deploys/cluster.py"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
        stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def sudo(lab: Any, host: Any, command: str) -> str:
    rc, out, err = lab.ssh(host, f"sudo sh -c '{command}'")
    assert rc == 0, f"{command} on {host}: {err}"
    return str(out)


@pytest.fixture(scope="module")
def runs(lab_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    lab = lab_factory(servers=1, agents=1)
    work = tmp_path_factory.mktemp("secret-output")
    data = {
        "k3s_etcd_s3": True,
        "k3s_etcd_s3_bucket": "lab-etcd",
        "r2_endpoint": "https://r2.lab.invalid",  # never contacted: the stand-in uploads nothing
        "r2_access_key_id": Secret(R2_KEY_ID),
        "r2_secret_access_key": Secret(R2_SECRET),
    }
    inventory = lab.write_inventory(work / "inventory.py", data)
    boot = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pyinfra", "-y", str(inventory), "deploys/bootstrap.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert boot.returncode == 0, boot.stdout[-4000:]
    first = pyinfra(inventory, "-y", "-vvv", "--debug")
    noop = pyinfra(inventory, "-y", "-vvv", "--debug-all")
    relabelled = lab.write_inventory(
        work / "relabelled.py", {**data, "k3s_node_labels": {"k3sfleet/test": "diff"}}
    )
    diff = pyinfra(relabelled, "--dry", "--diff", "-vvv")
    yield {"lab": lab, "inventory": inventory, "work": work,
           "runs": {"first": first, "noop": noop, "diff": diff}}  # fmt: skip


def test_every_run_succeeded(runs: dict[str, Any]) -> None:
    for name, run in runs["runs"].items():
        assert run.returncode == 0, f"{name}:\n{run.stdout[-5000:]}"
    # the verbose runs did print commands and fact output, so the search below means something
    assert "node-token" in runs["runs"]["first"].stdout
    assert "Loaded fact" in runs["runs"]["noop"].stdout


def test_no_secret_in_any_output(runs: dict[str, Any]) -> None:
    lab = runs["lab"]
    server = lab.servers[0]
    token = sudo(lab, server, "cat /var/lib/rancher/k3s/server/node-token").strip()
    config = sudo(lab, server, "cat /etc/rancher/k3s/config.yaml")
    assert R2_SECRET in config and R2_KEY_ID in config  # the run really used them
    secrets = {
        "node-token": token,
        "token password": token.rsplit(":", 1)[-1],
        "tailscale auth key": lab.auth_key,
        "R2 access key id": R2_KEY_ID,
        "R2 secret key": R2_SECRET,
    }
    for name, run in runs["runs"].items():
        for what, value in secrets.items():
            assert value not in run.stdout, f"the {what} is in the output of the {name} run"


def test_the_run_says_how_to_keep_the_token(runs: dict[str, Any]) -> None:
    out = runs["runs"]["first"].stdout
    assert "K3S_TOKEN is not set" in out and "`k3sfleet token save`" in out


def test_token_save_stores_it_in_the_vault_and_prints_nothing(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from k3sfleet.cli import main
    from k3sfleet.settings import Settings

    lab, work = runs["lab"], runs["work"]
    project = work / "project"
    project.mkdir()
    password = work / "vault-pass"
    password.write_text("lab vault password\n")
    (project / ".envrc").write_text(f"export K3SFLEET_VAULT_PASSWORD_FILE={password}\n")
    for name in ("K3S_TOKEN", "K3SFLEET_VAULT_FILE", "K3SFLEET_VAULT_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    rc = main(["--project-dir", str(project), "token", "save",
               "--inventory", str(runs["inventory"])])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    token = sudo(lab, lab.servers[0], "cat /var/lib/rancher/k3s/server/node-token").strip()
    assert token not in out.out + out.err and "stored in" in out.err
    assert token not in (project / "vault.yml").read_text()
    settings = Settings.load(project)
    assert settings.k3s_token is not None and settings.k3s_token.unmask() == token
