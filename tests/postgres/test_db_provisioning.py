"""The per-app databases as CloudNativePG makes them from our chart, on a real PostgreSQL server.

helm/apps/templates/postgresql.yaml is rendered with the real helm; the roles and databases it
declares are created with the statements CloudNativePG 1.30.0 issues for them
(``cnpg_role_sql``/``cnpg_database_sql``, cited), and its pg_hba lines go into the server's
pg_hba.conf between a stand-in of CNPG's fixed rules and its default rule. Then the apps' real
connections over 127.0.0.1 (scram-sha-256) show what the chart promises: each role reaches its
own database with the ``<app>-db`` connection string, no other app's database, and postgres
(pgAdmin) reaches all. The server: Debian's postgresql, a private cluster in a temp dir."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3sfleet.databases import AppDatabase, Server, connection_string, new_password

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster, run as the `postgres` user when we are root."""

    def __init__(self, hba_rules: list[str]) -> None:
        if not PG_BIN or not (PG_BIN[-1] / "initdb").exists():
            pytest.skip("PostgreSQL server binaries not installed (apt install postgresql)")
        self.bin = PG_BIN[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="k3sfleet-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        conf = (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.dir}'\nfsync = off\nlog_statement = 'all'\n"
            "logging_collector = off\npassword_encryption = 'scram-sha-256'\n"
        )
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(conf)
        # pg_hba.conf laid out as CloudNativePG writes it (pkg/postgres/configuration.go
        # hbaTemplateString at v1.30.0): its fixed rules, the Cluster's pg_hba lines, then
        # `host all all all scram-sha-256`. The fixed rules here are the test superuser's socket
        # (CNPG: `local all all peer map=local`); its replication cert rules do not concern apps.
        hba = ["local all all trust", *hba_rules, "host all all all scram-sha-256"]
        (self.data / "pg_hba.conf").write_text("".join(f"{line}\n" for line in hba))
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "start")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True)

    def admin(self) -> Any:
        return psycopg.connect(
            host=str(self.dir), port=self.port, user="postgres", dbname="postgres"
        )

    def connect_as(self, user: str, password: str, dbname: str) -> Any:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=user, password=password, dbname=dbname,
            connect_timeout=5,
        )  # fmt: skip

    def log(self) -> str:
        return (self.dir / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# -- what the chart declares -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
# App "c" owns a database named `all`: its quoted pg_hba lines must not read as the keyword
# (unquoted, `host all all all reject` would shut every app out). It comes first, so a wrong
# line would be the first to match.
APPS = [
    AppDatabase("c", "all", "c_user", "apps"),
    AppDatabase("a", "a_db", "a_user", "apps"),
    AppDatabase("b", "b_db", "b_user", "apps"),
]
PASSWORDS = {"a": new_password(), "b": new_password(), "c": "p@ss:w/rd?#%&=+ 'quote\"$(x)"}
SUPERUSER_PASSWORD = new_password()


def render_chart(tmp: Path) -> list[dict[str, Any]]:
    """The Cluster and Databases of helm/apps for APPS, rendered by the real helm."""
    if not HELM.is_file():
        pytest.skip("helm not installed (.tools/bin/helm): run scripts/setup.sh")
    values = tmp / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {"appDatabases": [{"name": a.name, "database": a.database, "username": a.username}
                              for a in APPS]}  # fmt: skip
        )
    )
    done = subprocess.run(  # noqa: S603 - our helm, our chart
        [str(HELM), "template", "apps", str(ROOT / "helm" / "apps"), "-f", str(values),
         "-s", "templates/postgresql.yaml"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier (RFC 7677, PostgreSQL's stored form) of an ASCII password:
    what CloudNativePG sends instead of the password (pkg/management/postgres/utils/password.go
    EnsureEncryptedPassword at v1.30.0)."""
    salt, iterations = secrets.token_bytes(16), 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    stored = hashlib.sha256(client_key).digest()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server_key)}"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def cnpg_role_sql(role: dict[str, Any], password: str) -> str:
    """CREATE ROLE as CloudNativePG 1.30.0 builds it for a managed role
    (internal/management/controller/roles/postgres.go: Create, appendRoleOptions - every
    attribute spelled out, BYPASSRLS CREATEDB CREATEROLE INHERIT LOGIN REPLICATION SUPERUSER,
    then CONNECTION LIMIT and the encoded PASSWORD)."""
    options = [
        ("BYPASSRLS", role.get("bypassrls", False)),
        ("CREATEDB", role.get("createdb", False)),
        ("CREATEROLE", role.get("createrole", False)),
        ("INHERIT", role.get("inherit", True)),
        ("LOGIN", role.get("login", False)),
        ("REPLICATION", role.get("replication", False)),
        ("SUPERUSER", role.get("superuser", False)),
    ]
    text = " ".join(name if on else "NO" + name for name, on in options)
    return (
        f"CREATE ROLE {quote_ident(role['name'])} {text} "
        f"CONNECTION LIMIT {int(role.get('connectionLimit', -1))} "
        f"PASSWORD {quote_literal(scram_verifier(password))}"
    )


def cnpg_database_sql(spec: dict[str, Any]) -> str:
    """CREATE DATABASE as CloudNativePG 1.30.0 builds it for a Database with an owner
    (internal/management/controller/database_controller_sql.go createDatabase)."""
    return f"CREATE DATABASE {quote_ident(spec['name'])} OWNER {quote_ident(spec['owner'])}"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    docs = render_chart(tmp_path_factory.mktemp("chart"))
    (cluster,) = [d for d in docs if d["kind"] == "Cluster"]
    databases = [d for d in docs if d["kind"] == "Database"]
    return {"cluster": cluster, "databases": databases}


@pytest.fixture(scope="module")
def cluster(rendered: dict[str, Any]) -> Iterator[Cluster]:
    """The server, with the chart's pg_hba, and the roles and databases CNPG would make."""
    spec = rendered["cluster"]["spec"]
    c = Cluster(spec["postgresql"]["pg_hba"])
    try:
        by_user = {a.username: a for a in APPS}
        with c.admin() as conn:
            conn.autocommit = True
            conn.execute(
                f"ALTER ROLE postgres PASSWORD {quote_literal(scram_verifier(SUPERUSER_PASSWORD))}"
            )
            for role in spec["managed"]["roles"]:
                conn.execute(cnpg_role_sql(role, PASSWORDS[by_user[role["name"]].name]))
            for db in rendered["databases"]:
                conn.execute(cnpg_database_sql(db["spec"]))
            # CNPG's initdb bootstrap: database "app" owned by role "app"
            # (pkg/management/postgres/initdb.go at v1.30.0)
            conn.execute("CREATE ROLE app LOGIN")
            conn.execute("CREATE DATABASE app OWNER app")
        yield c
    finally:
        c.stop()


def url(app: AppDatabase, cluster: Cluster) -> str:
    """The app's ``connection-string`` (its <app>-db Secret), pointed at the test server."""
    return connection_string(app, PASSWORDS[app.name], Server("127.0.0.1", cluster.port))


# -- the tests ----------------------------------------------------------------------------------


def test_chart_declares_one_database_per_app_owned_by_its_role(rendered: dict[str, Any]) -> None:
    owners = {d["spec"]["name"]: d["spec"]["owner"] for d in rendered["databases"]}
    assert owners == {a.database: a.username for a in APPS}
    roles = rendered["cluster"]["spec"]["managed"]["roles"]
    assert [r["name"] for r in roles] == [a.username for a in APPS]


def test_each_role_is_login_and_nothing_else(cluster: Cluster) -> None:
    with cluster.admin() as conn:
        rows = conn.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
            "rolbypassrls FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
            ([a.username for a in APPS],),
        ).fetchall()
    assert rows == [(a.username, True, False, False, False, False, False)
                    for a in sorted(APPS, key=lambda a: a.username)]  # fmt: skip


def test_each_app_works_in_its_own_database_with_its_connection_string(cluster: Cluster) -> None:
    for app in APPS:
        with psycopg.connect(url(app, cluster), connect_timeout=5) as conn:
            conn.execute("CREATE TABLE mine (id int)")  # the owner may create objects
            conn.execute("INSERT INTO mine VALUES (1)")
            row = conn.execute("SELECT current_user, current_database()").fetchone()
        assert row == (app.username, app.database)


def test_an_app_role_cannot_reach_another_apps_database(cluster: Cluster) -> None:
    a, b = APPS[1], APPS[2]
    for user, other in ((a, b), (b, a), (a, APPS[0]), (APPS[0], a)):
        with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
            cluster.connect_as(user.username, PASSWORDS[user.name], other.database)
    # nor the maintenance database or CNPG's bootstrap one: an app has its own database only
    for dbname in ("postgres", "app"):
        with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
            cluster.connect_as(a.username, PASSWORDS[a.name], dbname)
    # and a wrong password is refused in its own one
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        cluster.connect_as(a.username, "wrong", a.database)


def test_postgres_reaches_every_app_database_as_pgadmin_does(cluster: Cluster) -> None:
    for app in APPS:
        with cluster.connect_as("postgres", SUPERUSER_PASSWORD, app.database) as conn:
            row = conn.execute("SELECT current_user, current_database()").fetchone()
        assert row == ("postgres", app.database)
