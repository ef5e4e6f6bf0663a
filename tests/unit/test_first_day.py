"""A new user's first day from a project made by ``k3sfleet init`` (in this environment; the
installed-wheel version of the same path is tests/unit/test_package.py): the CLI contract, the
Ansible habits users bring, and the input refused before any host is contacted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from k3sfleet.cli import build_parser, main
from k3sfleet.vault import load_vault, resolve_password

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "first-day-pw"
FULL_VAULT = """vault_ansible_hosts: {vps-aws-1: 127.0.0.1, vps-hetzner-1: 127.0.0.1,
  vps-vultr-1: 127.0.0.1}
vault_ansible_users: {vps-aws-1: root, vps-hetzner-1: root, vps-vultr-1: root}
vault_tailscale_auth_key: tskey-auth-x
"""


def k3sfleet(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k3sfleet", *args], cwd=project, capture_output=True, text=True,
        timeout=120, check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(project), **env},
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project from ``k3sfleet init`` with a password file ``pw`` and a complete vault."""
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    assert main(["init", str(tmp_path), "--vault-password-file", str(tmp_path / "pw")]) == 0
    from k3sfleet.vault import read_vault_file, save_edited

    vf = read_vault_file(tmp_path / "vault.yml", PASSWORD.encode())
    save_edited(vf, FULL_VAULT, PASSWORD.encode())
    return tmp_path


def test_init_refuses_to_overwrite_and_names_every_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["init", str(project), "--vault-password-file", str(project / "pw")]) == 3
    err = capsys.readouterr().err
    for name in ("inventory.py", "vault.yml", "secrets.py", "helm"):
        assert name in err
    # without a password and without a terminal there is nothing to encrypt with
    empty = project / "empty"
    run = k3sfleet(project, "init", str(empty))
    assert run.returncode == 3 and "--ask-vault-pass" in run.stderr
    assert not (empty / "vault.yml").exists()


def test_check_passes_on_a_complete_project_and_contacts_nobody(project: Path) -> None:
    run = k3sfleet(project, "check", "bootstrap")
    assert run.returncode == 0, run.stderr
    assert "no problems, 3 host(s); no host was contacted" in run.stdout


def test_exit_codes_usage_2_failed_1_bad_input_3(project: Path) -> None:
    assert k3sfleet(project, "no-such-command").returncode == 2
    assert k3sfleet(project, "deploy").returncode == 2  # no entry named
    bad = k3sfleet(project, "check", "no-such-entry")
    assert bad.returncode == 3 and "the entry files are: argocd, bootstrap" in bad.stderr
    (project / "vault.yml").write_text("vault_ansible_hosts: [unclosed\n")
    assert k3sfleet(project, "check").returncode == 3
    # an operation that fails after the input was accepted: 1
    assert k3sfleet(project, "verify", "--inventory", "missing.py").returncode == 3
    down = k3sfleet(project, "lab", "down", "nothing-here", K3SFLEET_LAB_DIR=str(project / "l"))
    assert down.returncode == 1, down.stderr


def test_global_options_after_the_subcommand_and_python_m(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = k3sfleet(elsewhere, "vault", "view", "--project-dir", str(project),
                   "--vault-password-file", str(project / "pw"))
    assert run.returncode == 0, run.stderr
    assert "tskey-auth-x" in run.stdout
    assert k3sfleet(elsewhere, "--version").stdout.startswith("k3sfleet ")


def test_relative_executable_password_file_runs_as_ansible_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\necho {PASSWORD}\n")
    script.chmod(0o700)
    monkeypatch.chdir(tmp_path)
    assert resolve_password("pw.sh", {}) == PASSWORD.encode()


def test_ask_vault_pass_prompts(project: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    (project / ".envrc").unlink()  # no password file anywhere: only the prompt
    asked: list[str] = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: asked.append(prompt) or PASSWORD)
    assert main(["vault", "view", "--project-dir", str(project), "--ask-vault-pass"]) == 0
    assert asked == ["Vault password: "]
    assert "tskey-auth-x" in capsys.readouterr().out
    # the typed password is forgotten once the command is done
    with pytest.raises(Exception, match="no password file"):
        resolve_password(None, {})


def test_syntax_error_in_the_inventory_is_one_message(project: Path) -> None:
    (project / "inventory.py").write_text("from k3sfleet.inventory import Node\n_NODES = [\n")
    for args in (("check", "cluster"), ("upgrade", "--dry"), ("verify",), ("deploy", "cluster")):
        run = k3sfleet(project, *args)
        assert run.returncode == 3, (args, run.stderr)
        assert "inventory.py line 2: '[' was never closed (not valid Python)" in run.stderr
        assert "Traceback" not in run.stderr


def test_missing_default_vault_file_is_named(project: Path) -> None:
    (project / "vault.yml").unlink()
    run = k3sfleet(project, "check")
    assert run.returncode == 3
    assert f"the vault file {project / 'vault.yml'} does not exist" in run.stderr
    config = k3sfleet(project, "config")
    assert "none (vault.yml does not exist)" in config.stdout


def test_config_names_the_vault_file_it_read(project: Path) -> None:
    (project / "ansible/inventory/group_vars/all").mkdir(parents=True)
    (project / "vault.yml").rename(project / "ansible/inventory/group_vars/all/vault.yml")
    run = k3sfleet(project, "config")
    assert run.returncode == 0, run.stderr
    assert "ansible/inventory/group_vars/all/vault.yml (read)" in run.stdout


def test_an_empty_vault_value_is_unset(project: Path) -> None:
    """The vault skeleton has ``vault_tailscale_auth_key: ""``: check names it as missing."""
    from k3sfleet.vault import read_vault_file, save_edited

    vf = read_vault_file(project / "vault.yml", PASSWORD.encode())
    save_edited(vf, FULL_VAULT.replace("tskey-auth-x", '""'), PASSWORD.encode())
    run = k3sfleet(project, "check", "bootstrap")
    assert "TAILSCALE_AUTH_KEY is not set (needed by deploys/bootstrap.py)" in run.stderr


def test_the_projects_own_secrets_list_is_checked(project: Path) -> None:
    own = project / "deploys" / "secrets.py"
    own.write_text(own.read_text().replace(
        "SECRETS: list[SecretSpec] = [",
        'SECRETS: list[SecretSpec] = [\n'
        '    SecretSpec("mine", "apps", {"k": env("MY_OWN_TOKEN")}),',
    ))
    run = k3sfleet(project, "check", "secrets")
    assert "MY_OWN_TOKEN" in run.stderr, run.stderr


def test_development_tools_stay_out_of_the_everyday_help() -> None:
    text = build_parser().format_help()
    listed = [line.split()[0] for line in text.splitlines() if line.startswith("    ")]
    assert "lab" not in listed and "init" in listed and "check" in listed
    assert "exit codes: 0 done, 1 failed, 2 usage error, 3 bad input" in " ".join(text.split())
    config = subprocess.run([sys.executable, "-m", "k3sfleet", "config", "--help"],
                            capture_output=True, text=True, check=True).stdout
    assert "--readme-table" not in config


def test_readme_inventory_example_gives_pyinfra_no_group_warning(project: Path) -> None:
    """pyinfra takes each public top-level list for a host group (pyinfra_cli/inventory.py
    ``_is_inventory_group``, 3.10.0): the example's node list starts with "_"."""
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```python\nfrom k3sfleet.inventory import Node, groups\n", 1)[1]
    example = "from k3sfleet.inventory import Node, groups\n" + example.split("```", 1)[0]
    (project / "inventory.py").write_text(example)
    vf_text = "vault_ansible_hosts: {vps-aws-1: 127.0.0.1, vps-hetzner-1: 127.0.0.1}\n" \
              "vault_ansible_users: {vps-aws-1: root, vps-hetzner-1: root}\n"
    from k3sfleet.vault import read_vault_file, save_edited

    save_edited(read_vault_file(project / "vault.yml", PASSWORD.encode()), vf_text,
                PASSWORD.encode())
    run = subprocess.run(
        [sys.executable, "-m", "pyinfra", "inventory.py", "debug-inventory"], cwd=project,
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(project),
             "K3SFLEET_VAULT_PASSWORD_FILE": str(project / "pw")},
    )
    assert run.returncode == 0, run.stderr
    assert "vps-hetzner-1" in run.stdout + run.stderr
    assert "Ignoring host group" not in run.stdout + run.stderr


def test_vault_skeleton_lists_every_node_of_the_inventory_skeleton(project: Path) -> None:
    from k3sfleet.project import SKELETON_DIR

    text = (SKELETON_DIR / "vault.skeleton.yml").read_text()
    import yaml

    skeleton = yaml.safe_load(text)
    inventory = (SKELETON_DIR / "inventory.py").read_text()
    for name in skeleton["vault_ansible_hosts"]:
        assert f'Node("{name}"' in inventory
    assert load_vault(project / "vault.yml", PASSWORD.encode())["vault_ansible_users"]


def test_vault_view_takes_a_file_as_ansible_vault_does(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from k3sfleet.vault import set_value

    other = tmp_path / "elsewhere" / "secrets.yml"
    other.parent.mkdir()
    set_value(other, "vault_other", "from-the-other-file", PASSWORD.encode())
    capsys.readouterr()
    assert main(["vault", "view", str(other), "--project-dir", str(project),
                 "--vault-password-file", str(project / "pw")]) == 0
    out = capsys.readouterr().out
    assert "from-the-other-file" in out and "tskey-auth-x" not in out
