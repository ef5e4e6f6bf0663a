"""k3sfleet.k8s_secrets and deploys/secrets.py without an API: value sources, the
missing-variables check, the declared list, the diff. Plan/apply against the real Kubernetes
API, and the deploy through pyinfra: tests/k8s/test_secrets_api.py."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from secrets_harness import ALL_VARS, values

from k3sfleet.deploys.secrets import SECRETS
from k3sfleet.errors import ConfigError
from k3sfleet.k8s_secrets import (
    SecretSpec,
    Values,
    diff,
    env,
    literal,
    missing_problems,
    render_all,
    template,
    vault,
)
from k3sfleet.secret import Secret

# -- sources and values -------------------------------------------------------------------------


def test_env_precedence_settings_then_environment_then_vault() -> None:
    v = Values(
        {"postgres_password": Secret("from-setting"), "argocd_oidc_enabled": True},
        {"MY_TOKEN": "from-env", "POSTGRES_PASSWORD": "ignored"},
        {"vault_other_thing": "from-vault", "vault_app_db_passwords": {"a": "pw-a"}},
    )
    assert env("POSTGRES_PASSWORD").resolve(v) == "from-setting"
    assert env("MY_TOKEN").resolve(v) == "from-env"
    assert env("OTHER_THING").resolve(v) == "from-vault"
    assert env("NOT_THERE").resolve(v) is None
    assert vault("vault_app_db_passwords.a").resolve(v) == "pw-a"
    assert vault("vault_app_db_passwords.b").resolve(v) is None
    assert vault("vault_app_db_passwords").resolve(v) is None  # a map is not a value
    assert v.flag("ARGOCD_OIDC_ENABLED")
    assert "from-setting" not in repr(v)


def test_empty_values_count_as_unset() -> None:
    v = Values({"postgres_password": Secret("")}, {"X": ""})
    assert env("POSTGRES_PASSWORD").resolve(v) is None and env("X").resolve(v) is None


def test_template_names_and_resolution() -> None:
    t = template("[default]\nid=${A_ID}\nkey=$A_KEY\ncost=$$5\n")
    assert t.names() == ("A_ID", "A_KEY")
    assert t.resolve(Values({}, {"A_ID": "i"})) is None
    assert t.resolve(Values({}, {"A_ID": "i", "A_KEY": "k"})) == "[default]\nid=i\nkey=k\ncost=$5\n"


# -- the missing-variables check ----------------------------------------------------------------


def test_every_missing_variable_in_one_message() -> None:
    v = values(
        {"CLOUDFLARE_API_TOKEN": None, "R2_SECRET_ACCESS_KEY": None, "POSTGRES_PASSWORD": ""}
    )
    with pytest.raises(ConfigError) as info:
        render_all(SECRETS, v)
    text = str(info.value)
    for name in ("CLOUDFLARE_API_TOKEN", "R2_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD"):
        assert name in text
    assert "cert-manager/cloudflare-api-token, external-dns/cloudflare-api-token" in text
    assert "R2_ACCESS_KEY_ID" not in text  # set, so not named
    assert len(info.value.problems) == 3


def test_optional_secrets_follow_their_switches(tmp_path: Path) -> None:
    desired = {s.ref for s in render_all(SECRETS, values())}
    assert "argocd/argocd-oidc" not in desired
    assert "argocd/gitops-repo" not in desired
    assert "cattle-system/bootstrap-secret" not in desired  # rancher.enabled: false in the repo
    assert "database/pgadmin4" in desired  # pgadmin4.enabled: true in helm/apps

    with pytest.raises(ConfigError, match="ARGOCD_OIDC_CLIENT_SECRET"):
        render_all(SECRETS, values({"ARGOCD_OIDC_ENABLED": True}))
    on = values({"ARGOCD_OIDC_ENABLED": True, "ARGOCD_OIDC_CLIENT_SECRET": "oidc-s"})
    oidc = next(s for s in render_all(SECRETS, on) if s.name == "argocd-oidc")
    assert oidc.labels["app.kubernetes.io/part-of"] == "argocd"
    assert oidc.data == {"clientSecret": b"oidc-s"}

    with_rancher = values({"RANCHER_PASSWORD": "r-pw"})
    assert "cattle-system/bootstrap-secret" in {s.ref for s in render_all(SECRETS, with_rancher)}
    # Rancher enabled in the chart but no password: named
    chart = tmp_path / "helm" / "infrastructure"
    chart.mkdir(parents=True)
    (chart / "values.yaml").write_text("rancher:\n  enabled: true\n")
    with pytest.raises(ConfigError, match="RANCHER_PASSWORD"):
        render_all(SECRETS, values(project=tmp_path))


def test_velero_credentials_file_and_names_are_valid() -> None:
    velero = next(s for s in render_all(SECRETS, values()) if s.name == "velero-credentials")
    assert velero.data["cloud"].decode() == (
        "[default]\naws_access_key_id=AKIA-r2-id\naws_secret_access_key=r2/secret+key==\n"
    )
    assert all(not s.problems() for s in SECRETS)
    bad = SecretSpec("Bad_NS", "x", {"no/slash": literal("v")})
    assert len(bad.problems()) == 2
    dup = [SecretSpec("a", "b", {}), SecretSpec("a", "b", {})]
    assert missing_problems(dup, values()) == ["Secret a/b is declared more than once"]


def test_desired_secret_repr_has_no_values() -> None:
    for secret in render_all(SECRETS, values()):
        for v in ALL_VARS.values():
            assert v not in repr(secret)


def test_diff_names_keys_and_metadata() -> None:
    spec = SecretSpec("n", "s", {"a": literal("1"), "b": literal("2")}, labels={"l": "v"})
    desired = spec.render(values())
    current = {
        "type": "Opaque",
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "k3sfleet"}},
        "data": {"a": base64.b64encode(b"1").decode(), "b": base64.b64encode(b"X").decode()},
    }
    change = diff(current, desired)
    assert (change.action, change.keys, change.metadata) == ("update", ("b",), ("label l",))
    assert change.describe() == "update; keys b; metadata label l"
    assert diff(None, desired).describe() == "create; keys a, b"



def test_preflight_names_every_missing_variable_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from k3sfleet.inventory import Node
    from k3sfleet.preflight import entry_problems
    from k3sfleet.settings import Settings

    # the project's .envrc provides one value; the process environment another; two are missing
    (tmp_path / ".envrc").write_text('export CLOUDFLARE_API_TOKEN="from-envrc"\n')
    environ = {
        k: v for k, v in ALL_VARS.items() if k not in ("POSTGRES_PASSWORD", "R2_ACCESS_KEY_ID")
    }
    environ.pop("CLOUDFLARE_API_TOKEN")
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    for k, v in environ.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(tmp_path)
    problems = entry_problems(["secrets"], settings, [Node("s1", role="server")])
    assert problems == [
        "R2_ACCESS_KEY_ID is not set (for Secret velero/velero-credentials) "
        "(needed by deploys/secrets.py)",
        "POSTGRES_PASSWORD is not set (for Secret database/postgresql-superuser) "
        "(needed by deploys/secrets.py)",
    ]


