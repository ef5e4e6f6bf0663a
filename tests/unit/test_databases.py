"""k3sfleet.databases without a server: appDatabases and namespaces, passwords in the vault
(`k3sfleet db generate-passwords`), the role's basic-auth Secret CloudNativePG reads and the
<app>-db Secret. deploys/databases.py through pyinfra against the real Kubernetes API:
tests/k8s/test_databases_api.py."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from databases_harness import APP_TEMPLATE, make_project

from k3sfleet.cli import main
from k3sfleet.databases import (
    PASSWORD_ALPHABET,
    VAULT_KEY,
    AppDatabase,
    Server,
    connection_string,
    generate_passwords,
    load_apps,
    new_password,
    preflight_problems,
    role_secret_data,
    secret_data,
    template_namespace,
    with_new_passwords,
)
from k3sfleet.errors import ConfigError
from k3sfleet.vault import encrypt, load_vault, read_vault_file

ROOT = Path(__file__).resolve().parents[2]

# -- declaration ----------------------------------------------------------------------------


def test_repo_apps_chart_declares_example_app_in_apps_namespace() -> None:
    apps = load_apps(ROOT, "helm/apps")
    assert AppDatabase("example-app", "example_app", "example_app", "apps") in apps


def test_template_namespace_ignores_templated_values() -> None:
    assert template_namespace(APP_TEMPLATE) == "web"
    templated = APP_TEMPLATE.replace("namespace: web", "namespace: {{ .Values.ns }}")
    assert template_namespace(templated) is None


def test_load_apps_names_every_problem(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        [
            {"name": "myapp", "database": "my_db", "username": "my_user"},
            {"name": "ghost", "database": "g_db", "username": "g_user"},
            {"name": "Bad_Name", "database": "x", "username": "y"},
            {"name": "evil", "database": 'x"; DROP', "username": "ok_user"},
            {"name": "dup", "database": "my_db", "username": "postgres"},
            {"name": "op", "database": "template1", "username": "cnpg_x"},
        ],
        {"myapp": APP_TEMPLATE, "dup": APP_TEMPLATE, "op": APP_TEMPLATE},
    )
    with pytest.raises(ConfigError) as info:
        load_apps(project)
    text = "\n".join(info.value.problems)
    assert "ghost.yaml (its Argo CD Application) does not exist" in text
    assert "'Bad_Name' is not a valid application name" in text
    assert "database 'x\"; DROP' must be lower-case" in text
    assert "database 'my_db' is used more than once" in text
    assert "username 'postgres' is reserved" in text
    # CloudNativePG's own (pkg/postgres/roles.go IsRoleReserved, Database CRD rules, v1.30.0)
    assert "username 'cnpg_x' is reserved" in text
    assert "database 'template1' is reserved" in text


# -- passwords ------------------------------------------------------------------------------


def test_new_password_is_32_chars_from_the_alphabet() -> None:
    pws = {new_password() for _ in range(50)}
    assert len(pws) == 50
    assert all(len(p) == 32 and set(p) <= set(PASSWORD_ALPHABET) for p in pws)


def test_with_new_passwords_keeps_existing() -> None:
    apps = [AppDatabase("a", "a", "a", "n"), AppDatabase("b", "b", "b", "n")]
    passwords, added = with_new_passwords(apps, {"a": "kept", "gone": "also-kept"})
    assert added == ["b"] and passwords["a"] == "kept" and passwords["gone"] == "also-kept"
    assert len(passwords["b"]) == 32


@pytest.fixture
def project(tmp_path: Path) -> Path:
    apps = [{"name": "myapp", "database": "my_db", "username": "my_user"}]
    return make_project(tmp_path, apps, {"myapp": APP_TEMPLATE})


def _add_app(project: Path, name: str) -> None:
    values_file = project / "helm/apps/values.yaml"
    values = yaml.safe_load(values_file.read_text())
    values["appDatabases"].append(
        {"name": name, "database": f"{name}_db", "username": f"{name}_user"}
    )
    values_file.write_text(yaml.safe_dump(values))
    (project / f"helm/apps/templates/{name}.yaml").write_text(APP_TEMPLATE.replace("myapp", name))


def test_generate_passwords_survive_reruns_only_new_app_gets_one(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / ".vault-pass").write_text("pw\n")
    (project / "vault.yml").write_text(
        encrypt("# my vault\nvault_tailscale_auth_key: tskey-x\n", b"pw")
    )
    (project / "vault.yml").chmod(0o600)
    argv = ["--project-dir", str(project), "--vault-password-file", str(project / ".vault-pass")]
    assert main([*argv, "db", "generate-passwords"]) == 0
    first = load_vault(project / "vault.yml", b"pw")[VAULT_KEY]
    assert list(first) == ["myapp"] and len(first["myapp"]) == 32
    out = capsys.readouterr().out
    assert "myapp: new password stored" in out and first["myapp"] not in out

    assert main([*argv, "db", "generate-passwords"]) == 0
    assert load_vault(project / "vault.yml", b"pw")[VAULT_KEY] == first
    assert "nothing to do" in capsys.readouterr().out

    _add_app(project, "second")
    assert main([*argv, "db", "generate-passwords"]) == 0
    vf = read_vault_file(project / "vault.yml", b"pw")
    third = vf.data[VAULT_KEY]
    assert third["myapp"] == first["myapp"] and len(third["second"]) == 32
    assert vf.data["vault_tailscale_auth_key"] == "tskey-x"
    assert "# my vault" in vf.plaintext  # the rest of the vault is kept as written
    assert (project / "vault.yml").stat().st_mode & 0o777 == 0o600

    assert main([*argv, "db", "list"]) == 0
    listing = capsys.readouterr().out
    assert "myapp" in listing and "namespace=web" in listing and "password=yes" in listing
    for pw in third.values():
        assert pw not in listing


def test_generate_passwords_in_an_inline_vault_stays_inline(project: Path) -> None:
    cipher = encrypt("tskey-y", b"pw")
    (project / "vault.yml").write_text(
        "vault_tailscale_auth_key: !vault |\n"
        + "".join(f"  {line}\n" for line in cipher.splitlines())
    )
    added, kept = generate_passwords(project, project / "vault.yml", b"pw")
    assert (added, kept) == (["myapp"], [])
    raw = (project / "vault.yml").read_text()
    stored = load_vault(project / "vault.yml", b"pw")[VAULT_KEY]["myapp"]
    assert stored not in raw  # encrypted inline
    assert load_vault(project / "vault.yml", b"pw")["vault_tailscale_auth_key"] == "tskey-y"
    assert generate_passwords(project, project / "vault.yml", b"pw") == ([], ["myapp"])
    assert load_vault(project / "vault.yml", b"pw")[VAULT_KEY]["myapp"] == stored


# -- the Secrets --------------------------------------------------------------------------


def test_secret_data_and_connection_string() -> None:
    app = AppDatabase("myapp", "my_db", "my_user", "web")
    pw = "a@b:c/d?e#f%g"
    data = secret_data(app, pw, Server("pg-rw.db.svc.cluster.local", 5433, "pg", "db"))
    assert data["host"] == "pg-rw.db.svc.cluster.local" and data["port"] == "5433"
    url = urlsplit(data["connection-string"])
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "postgresql",
        "pg-rw.db.svc.cluster.local",
        5433,
        "/my_db",
    )
    assert unquote(url.password or "") == pw and url.username == "my_user"
    assert connection_string(app, "x", Server("h", 1)) == "postgresql://my_user:x@h:1/my_db"


def test_server_is_the_cnpg_clusters_rw_service() -> None:
    """The repository's chart: CloudNativePG Cluster "postgresql" in "database"; apps reach its
    read-write Service <cluster>-rw (cloudnative-pg api/v1/cluster_types.go
    ServiceReadWriteSuffix at v1.30.0)."""
    server = Server.from_chart(ROOT)
    assert server == Server(
        "postgresql-rw.database.svc.cluster.local", 5432, "postgresql", "database"
    )
    app = AppDatabase("myapp", "my_db", "my_user", "web")
    assert server.role_secret(app) == "postgresql-role-myapp"
    assert role_secret_data(app, "pw") == {"username": "my_user", "password": "pw"}


def test_server_follows_the_values(tmp_path: Path) -> None:
    project = make_project(tmp_path, [], {})
    values = project / "helm" / "apps" / "values.yaml"
    values.write_text(
        yaml.safe_dump({"postgresql": {"clusterName": "pg", "namespace": "db", "port": 5433}})
    )
    server = Server.from_chart(project)
    assert (server.host, server.port, server.namespace) == (
        "pg-rw.db.svc.cluster.local",
        5433,
        "db",
    )


# -- preflight ------------------------------------------------------------------------------


def test_preflight_names_apps_without_passwords(project: Path) -> None:
    _add_app(project, "other")

    class S:
        gitops_apps_path = "helm/apps"
        vault = {VAULT_KEY: {"myapp": "x"}}

    assert preflight_problems(S(), project) == [
        f"no password for app other in vault {VAULT_KEY} (run `k3sfleet db generate-passwords`)"
    ]


def test_db_secrets_show_no_password() -> None:
    from k3sfleet.deploys.app_databases import db_secrets

    app = AppDatabase("myapp", "my_db", "my_user", "web")
    secrets = db_secrets([app], {"myapp": "Sup3r-S3cret"}, Server())
    assert "Sup3r-S3cret" not in repr(secrets) and "myapp" in repr(secrets)
    assert [s.ref for s in secrets] == ["database/postgresql-role-myapp", "web/myapp-db"]
    assert all(s.data["password"] == b"Sup3r-S3cret" for s in secrets)
