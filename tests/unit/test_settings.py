"""Settings: direnv semantics of the env files, the documented precedence, typed errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3sfleet.errors import ConfigError
from k3sfleet.secret import Secret
from k3sfleet.settings import Settings, load_env_files, setting_fields
from k3sfleet.vault import set_value


def write(project: Path, name: str, text: str) -> None:
    (project / name).write_text(text)


def test_export_and_default_expansion_as_direnv(tmp_path: Path) -> None:
    write(tmp_path, ".envrc", """\
# committed defaults
export K3S_VERSION="${K3S_VERSION:-v1.33.6+k3s1}"
export DOMAIN=example.org
export VELERO_BUCKET="${VELERO_BUCKET:-velero-$DOMAIN}"
export GITOPS_REVISION='${NOT_EXPANDED:-x}'
source_env_if_exists .envrc.local
PATH_add bin
""")
    env = load_env_files(tmp_path, {})
    assert env["K3S_VERSION"] == "v1.33.6+k3s1"
    assert env["VELERO_BUCKET"] == "velero-example.org"  # $VAR sees lines above
    assert env["GITOPS_REVISION"] == "${NOT_EXPANDED:-x}"  # single quotes are literal
    assert "PATH_add" not in env and "source_env_if_exists" not in " ".join(env)

    # ${VAR:-default} sees the process environment first
    env = load_env_files(tmp_path, {"K3S_VERSION": "v1.34.2+k3s1", "DOMAIN": "from.env"})
    assert env["K3S_VERSION"] == "v1.34.2+k3s1"
    assert env["VELERO_BUCKET"] == "velero-from.env"


def test_later_files_see_earlier_ones(tmp_path: Path) -> None:
    write(tmp_path, ".envrc", "export DOMAIN=base.example\nexport VELERO_BUCKET=b1\n")
    write(tmp_path, ".envrc.local", 'export R2_ENDPOINT="https://r2.${DOMAIN}"\n'
                                    'export VELERO_BUCKET="${VELERO_BUCKET:-unused}-local"\n')
    write(tmp_path, ".env", "GITOPS_REVISION=${VELERO_BUCKET}\n")
    env = load_env_files(tmp_path, {})
    assert env["R2_ENDPOINT"] == "https://r2.base.example"
    assert env["VELERO_BUCKET"] == "b1-local"
    assert env["GITOPS_REVISION"] == "b1-local"
    assert env.source("VELERO_BUCKET") == ".envrc.local"
    assert env.source("DOMAIN") == ".envrc"


def test_precedence_defaults_vault_envrc_local_env_process(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    vault = tmp_path / "vault.yml"
    for name in ("domain", "velero_bucket", "r2_endpoint", "gitops_revision", "k3s_version"):
        set_value(vault, f"vault_{name}", f"{name}-from-vault", b"pw")
    write(tmp_path, ".envrc", "export VELERO_BUCKET=envrc\nexport R2_ENDPOINT=envrc\n"
                              "export GITOPS_REVISION=envrc\nexport K3S_VERSION=envrc\n"
                              'export DOMAIN="${DOMAIN:-}"\n')
    write(tmp_path, ".envrc.local", "export R2_ENDPOINT=local\nexport GITOPS_REVISION=local\n"
                                    "export K3S_VERSION=local\n")
    write(tmp_path, ".env", "GITOPS_REVISION=dotenv\nK3S_VERSION=dotenv\n")
    s = Settings.load(tmp_path, {"K3SFLEET_VAULT_PASSWORD_FILE": str(pw), "K3S_VERSION": "proc"})
    assert s.argocd_chart_version == "9.1.4"  # default
    assert (s.domain, s.sources["domain"]) == ("domain-from-vault", "vault")  # empty -> vault
    assert (s.velero_bucket, s.sources["velero_bucket"]) == ("envrc", ".envrc")
    assert (s.r2_endpoint, s.sources["r2_endpoint"]) == ("local", ".envrc.local")
    assert (s.gitops_revision, s.sources["gitops_revision"]) == ("dotenv", ".env")
    assert (s.k3s_version, s.sources["k3s_version"]) == ("proc", "environment")
    assert "argocd_chart_version" not in s.sources


def test_types_and_secrets(tmp_path: Path) -> None:
    write(tmp_path, ".envrc", "export ROLLING_DRAIN_TIMEOUT=120\nexport K3S_VPN_AUTH=no\n"
                              "export K3S_TOKEN=K10-very-secret\n")
    s = Settings.load(tmp_path, {"TAILSCALE_ACCEPT_ROUTES": "On"})
    assert s.rolling_drain_timeout == 120
    assert s.k3s_vpn_auth is False
    assert s.tailscale_accept_routes is True
    assert isinstance(s.k3s_token, Secret)
    assert str(s.k3s_token) == "*MASKED*" and "K10-very-secret" not in repr(s)
    assert s.k3s_token.unmask() == "K10-very-secret"
    data = s.as_host_data()
    assert data["k3s_token"] is s.k3s_token and data["rolling_drain_timeout"] == 120


def test_every_bad_value_is_named_at_once(tmp_path: Path) -> None:
    write(tmp_path, ".envrc", "export ROLLING_DRAIN_TIMEOUT=soon\nexport K3S_VPN_AUTH=maybe\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(tmp_path, {"K3SFLEET_CONNECT": "carrier-pigeon"})
    problems = err.value.problems
    assert len(problems) == 3
    text = str(err.value)
    assert "ROLLING_DRAIN_TIMEOUT: expected a whole number, got 'soon'" in text
    assert "K3S_VPN_AUTH: expected true or false, got 'maybe'" in text
    assert "K3SFLEET_CONNECT: expected one of public, tailnet, got 'carrier-pigeon'" in text


def test_vault_problems_join_the_other_problems(tmp_path: Path) -> None:
    set_value(tmp_path / "vault.yml", "vault_domain", "x", b"right")
    wrong = tmp_path / "pw"
    wrong.write_text("wrong\n")
    write(tmp_path, ".envrc", "export ROLLING_AGENT_BATCH=many\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(tmp_path, {"ANSIBLE_VAULT_PASSWORD_FILE": str(wrong)})
    assert len(err.value.problems) == 2
    assert "wrong vault password" in str(err.value)
    assert "ROLLING_AGENT_BATCH" in str(err.value)


def test_vault_file_setting_and_missing_password(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    set_value(tmp_path / "secrets" / "prod.yml", "vault_domain", "prod.example", b"pw")
    write(tmp_path, ".envrc", "export K3SFLEET_VAULT_FILE=secrets/prod.yml\n")
    with pytest.raises(ConfigError, match="no password file is set"):
        Settings.load(tmp_path, {})
    pw = tmp_path / "pw"
    pw.write_text("pw")
    s = Settings.load(tmp_path, {}, vault_password_file=str(pw))
    assert s.domain == "prod.example"
    # without a vault file nothing is needed
    assert Settings.load(tmp_path / "secrets", {}).domain is None


def test_a_configured_vault_file_must_exist(tmp_path: Path) -> None:
    write(tmp_path, ".envrc", "export K3SFLEET_VAULT_FILE=secrets/missing.yml\n")
    with pytest.raises(ConfigError, match=r"missing\.yml \(K3SFLEET_VAULT_FILE\) does not exist"):
        Settings.load(tmp_path, {})
    settings, problems = Settings.load_partial(tmp_path, {})
    assert len(problems) == 1 and not settings.vault_readable


def test_plain_vault_needs_no_password(tmp_path: Path) -> None:
    write(tmp_path, "vault.yml", "vault_domain: plain.example\n")
    assert Settings.load(tmp_path, {}).domain == "plain.example"


def test_no_deploy_repeats_a_default_inline() -> None:
    """A deploy reads a default from one place (its DEFAULTS block, or the setting's): never
    `data.get("k") or "v"` / `data.get("k", v)` with a value of its own for a known key."""
    import re

    from k3sfleet.inventory import declared_data_keys

    root = Path(__file__).resolve().parents[2]
    known = declared_data_keys() | {f.name for f in setting_fields()}
    value = r"""(?:"[^"]+"|'[^']+'|[0-9.]+|True|False|[A-Z][A-Z0-9_]+)"""  # a default of its own
    inline = re.compile(rf"""\bget\(\s*"([a-z0-9_]+)"\s*(?:\)\s*or\s*{value}|,\s*{value}\s*\))""")
    found = [
        f"{path.name}: {m.group(0)}"
        for path in sorted((root / "deploys").glob("*.py"))
        for m in inline.finditer(path.read_text(encoding="utf-8"))
        if m.group(1) in known
    ]
    assert found == []


def test_data_value_reads_the_data_then_the_block_then_the_setting() -> None:
    from k3sfleet.settings import Default, data_value

    block = {"demo_timeout": Default(30, "seconds")}
    assert data_value({"demo_timeout": 5}, "demo_timeout", block) == 5
    assert data_value({"demo_timeout": None}, "demo_timeout", block) == 30
    assert data_value({}, "gitops_revision") == Settings.gitops_revision == "main"
    assert data_value({"gitops_revision": "v2"}, "gitops_revision") == "v2"
    assert data_value({}, "nobody_sets_this", block) is None
