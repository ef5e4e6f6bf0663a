"""k3sfleet.databases without a server: appDatabases and namespaces, passwords in the vault
(`k3sfleet db generate-passwords`), the psql-in-pod executor's command, the SQL plan, the
<app>-db Secret, and deploys/databases.py through pyinfra against the stand-in API."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from standin_api import StandinApi

from k3sfleet.cli import main
from k3sfleet.databases import (
    PASSWORD_ALPHABET,
    VAULT_KEY,
    AppDatabase,
    PodPsql,
    Server,
    connection_string,
    generate_passwords,
    load_apps,
    new_password,
    plan_sql,
    preflight_problems,
    secret_data,
    template_namespace,
    with_new_passwords,
)
from k3sfleet.errors import ConfigError
from k3sfleet.k8s_secrets import ApiSession, Values, read_secret
from k3sfleet.vault import encrypt, load_vault, read_vault_file

ROOT = Path(__file__).resolve().parents[2]

APP_TEMPLATE = """{{- if .Values.myapp.enabled }}
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: myapp
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "apps.labels" . | nindent 4 }}
spec:
  project: {{ .Values.global.project }}
  source:
    repoURL: {{ .Values.global.repoURL }}
  destination:
    server: https://kubernetes.default.svc
    namespace: web
  {{- include "apps.syncPolicy" . | nindent 2 }}
{{- end }}
"""


def make_project(tmp_path: Path, apps: list[dict[str, str]], templates: dict[str, str]) -> Path:
    chart = tmp_path / "helm" / "apps"
    (chart / "templates").mkdir(parents=True)
    (chart / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "appDatabases": apps,
                "postgresql": {"fullnameOverride": "pg", "namespace": "db", "port": 5433},
            }
        )
    )
    for name, text in templates.items():
        (chart / "templates" / f"{name}.yaml").write_text(text)
    return tmp_path


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
        ],
        {"myapp": APP_TEMPLATE, "dup": APP_TEMPLATE},
    )
    with pytest.raises(ConfigError) as info:
        load_apps(project)
    text = "\n".join(info.value.problems)
    assert "ghost.yaml (its Argo CD Application) does not exist" in text
    assert "'Bad_Name' is not a valid application name" in text
    assert "database 'x\"; DROP' must be lower-case" in text
    assert "database 'my_db' is used more than once" in text
    assert "username 'postgres' is reserved" in text


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


# -- SQL plan and Secret --------------------------------------------------------------------


def test_plan_sql_fresh_server_and_passwords_only_as_verifiers() -> None:
    apps = [AppDatabase("a", "a_db", "a_user", "n"), AppDatabase("b", "b_db", "b_user", "n")]
    pw = {"a": "secret-a-PW", "b": "secret-b-PW"}
    actions = plan_sql({"version": 170002, "roles": {}, "databases": {}}, apps, pw)
    assert [a.description for a in actions] == [
        "create role a_user",
        "create database a_db owned by a_user",
        "revoke PUBLIC access to database a_db",
        "create role b_user",
        "create database b_db owned by b_user",
        "revoke PUBLIC access to database b_db",
    ]
    sql = "\n".join(a.sql for a in actions)
    assert "SCRAM-SHA-256$4096:" in sql and "secret-a-PW" not in sql
    with pytest.raises(Exception, match="PostgreSQL 15"):
        plan_sql({"version": 140000}, apps, pw)


def test_secret_data_and_connection_string() -> None:
    app = AppDatabase("myapp", "my_db", "my_user", "web")
    pw = "a@b:c/d?e#f%g"
    data = secret_data(app, pw, Server("pg.db.svc.cluster.local", 5433))
    assert data["host"] == "pg.db.svc.cluster.local" and data["port"] == "5433"
    url = urlsplit(data["connection-string"])
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "postgresql",
        "pg.db.svc.cluster.local",
        5433,
        "/my_db",
    )
    assert unquote(url.password or "") == pw and url.username == "my_user"
    assert Server.from_chart(ROOT) == Server("postgresql.database.svc.cluster.local", 5432)
    assert connection_string(app, "x", Server("h", 1)) == "postgresql://my_user:x@h:1/my_db"


class FakeWs:
    """What kubernetes.stream returns with _preload_content=False."""

    def __init__(self, stdout: str, rc: int, stderr: str = "") -> None:
        self.stdin = b""
        self._out, self._err, self.returncode = stdout, stderr, rc
        self.closed = False

    def write_stdin(self, data: bytes) -> None:
        self.stdin += data

    def run_forever(self, timeout: float) -> None:
        pass

    def read_stdout(self) -> str:
        return self._out

    def read_stderr(self) -> str:
        return self._err

    def close(self) -> None:
        self.closed = True


def test_pod_psql_sends_sql_on_stdin_only() -> None:
    calls: list[dict[str, Any]] = []
    ws = FakeWs('{"version": 170000}\n', 0)

    def stream(func: Any, pod: str, ns: str, **kw: Any) -> FakeWs:
        calls.append({"pod": pod, "ns": ns, **kw})
        return ws

    psql = PodPsql(api=None, stream=stream)
    psql._pod = "postgresql-0"
    secret_sql = "ALTER ROLE x PASSWORD 'SCRAM-SHA-256$4096:abc'"
    psql.execute([secret_sql])
    call = calls[0]
    assert call["pod"] == "postgresql-0" and call["ns"] == "database"
    assert call["container"] == "postgresql" and call["stdin"] and not call["tty"]
    argv = call["command"]
    assert argv[:2] == ["sh", "-c"] and not any("SCRAM" in a for a in argv)
    assert argv[-1] == str(len(ws.stdin))  # head -c reads exactly the SQL
    assert ws.stdin.decode() == secret_sql + ";\n" and ws.closed
    assert psql.fetch_json("SELECT 1") == {"version": 170000}

    failing = PodPsql(api=None, stream=lambda *a, **k: FakeWs("", 3, "ERROR: boom\n"))
    failing._pod = "postgresql-0"
    with pytest.raises(Exception, match="ERROR: boom"):
        failing.execute(["SELECT 1"])


# -- preflight ------------------------------------------------------------------------------


def test_preflight_names_apps_without_passwords(project: Path) -> None:
    _add_app(project, "other")

    class S:
        gitops_apps_path = "helm/apps"
        vault = {VAULT_KEY: {"myapp": "x"}}

    assert preflight_problems(S(), project) == [
        f"no password for app other in vault {VAULT_KEY} (run `k3sfleet db generate-passwords`)"
    ]


# -- the deploy, through pyinfra, against the stand-in API ---------------------------------------


class FakeExecutor:
    """A server that remembers what was created (SQL planning is tested on a real server)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"version": 170000, "roles": {}, "databases": {}}
        self.executed: list[str] = []

    def fetch_json(self, sql: str) -> Any:
        return json.loads(json.dumps(self.state))

    def execute(self, statements: list[str]) -> None:
        self.executed += statements
        for s in statements:
            words = s.split()
            if words[:2] == ["CREATE", "ROLE"]:
                self.state["roles"][words[2].strip('"')] = {
                    "login": True, "password": s.split("'")[1]
                }  # fmt: skip
            if words[:2] == ["CREATE", "DATABASE"]:
                self.state["databases"][words[2].strip('"')] = {
                    "owner": words[4].strip('"'), "acl": None
                }  # fmt: skip
            if words[:2] == ["REVOKE", "ALL"]:
                db = self.state["databases"][words[4].strip('"')]
                db["acl"] = [f"{db['owner']}=CTc/{db['owner']}"]


def test_deploy_creates_db_secrets_and_second_run_changes_nothing(
    project: Path, tmp_path: Path
) -> None:
    api = StandinApi(tmp_path)
    try:
        values = Values(
            {"gitops_apps_path": "helm/apps"}, {}, {VAULT_KEY: {"myapp": "pw:@/x"}}, project
        )
        executor = FakeExecutor()

        def run() -> State:
            names = ["@fake/s1"]
            inv = Inventory(
                (names, {"fake_delay": 0, "fake_delay_jitter": 0}), k3s_servers=(names, {})
            )
            state = State(inv, Config())
            connect_all(state)

            @contextlib.contextmanager
            def opener() -> Iterator[Any]:
                with api.client() as c:
                    yield c

            from deploys.databases import databases

            add_deploy(
                state, databases, values=values, session=ApiSession(opener=opener),
                executor=executor,
            )  # fmt: skip
            run_ops(state)
            return state

        run()
        assert any(s.startswith("CREATE ROLE") for s in executor.executed)
        with api.client() as c:
            secret = read_secret(c, "web", "myapp-db")
        assert secret is not None
        assert set(secret["data"]) == {
            "host", "port", "database", "username", "password", "connection-string"
        }  # fmt: skip
        writes = len(api.writes())
        executed = len(executor.executed)
        run()
        assert len(api.writes()) == writes and len(executor.executed) == executed
    finally:
        api.server.stop()


def test_provision_job_and_db_secrets_show_no_password() -> None:
    from deploys.databases import ProvisionJob, db_secrets

    app = AppDatabase("myapp", "my_db", "my_user", "web")
    job = ProvisionJob(FakeExecutor(), [app], {"myapp": "Sup3r-S3cret"})
    secrets = db_secrets([app], {"myapp": "Sup3r-S3cret"}, Server())
    for text in (repr(job), repr(secrets)):
        assert "Sup3r-S3cret" not in text and "myapp" in text
    assert secrets[0].ref == "web/myapp-db"
    assert secrets[0].data["password"] == b"Sup3r-S3cret"
