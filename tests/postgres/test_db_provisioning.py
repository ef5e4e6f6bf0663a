"""Per-app database provisioning (k3sfleet.databases) against a real PostgreSQL server that this
module starts: Debian's postgresql, a private cluster in a temp dir, unix socket for the
superuser (trust) and 127.0.0.1 with scram-sha-256 for the apps' real connection attempts."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3sfleet.databases import (
    AppDatabase,
    PsycopgExecutor,
    Server,
    connection_string,
    new_password,
    password_matches,
    provision,
    scram_verifier,
)

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster, run as the `postgres` user when we are root."""

    def __init__(self) -> None:
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.stop()


@pytest.fixture
def admin(cluster: Cluster) -> Iterator[Any]:
    conn = cluster.admin()
    yield conn
    conn.close()


SPECIAL = "p@ss:w/rd?#%&=+ 'quote\"back\\slash$(x)"


def _apps(prefix: str) -> list[AppDatabase]:
    return [
        AppDatabase(f"{prefix}-a", f"{prefix}_a_db", f"{prefix}_a_user", "apps"),
        AppDatabase(f"{prefix}-b", f"{prefix}_b_db", f"{prefix}_b_user", "apps"),
    ]


def test_provision_twice_second_run_changes_nothing(cluster: Cluster, admin: Any) -> None:
    apps = _apps("twice")
    passwords = {"twice-a": new_password(), "twice-b": new_password()}
    first = provision(PsycopgExecutor(admin), apps, passwords)
    descriptions = [a.description for a in first]
    assert "create role twice_a_user" in descriptions
    assert "create database twice_b_db owned by twice_b_user" in descriptions
    assert "revoke PUBLIC access to database twice_a_db" in descriptions
    for pw in passwords.values():
        assert all(pw not in a.description for a in first)
        assert pw not in repr(first)

    assert provision(PsycopgExecutor(admin), apps, passwords) == []

    # the role is what we declared: LOGIN, nothing else; the database is its own
    with admin.cursor() as cur:
        cur.execute(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
            "rolbypassrls FROM pg_roles WHERE rolname = 'twice_a_user'"
        )
        assert cur.fetchone() == (True, False, False, False, False, False)
        cur.execute(
            "SELECT pg_get_userbyid(datdba), datacl::text[] FROM pg_database "
            "WHERE datname = 'twice_a_db'"
        )
        owner, acl = cur.fetchone()
        assert owner == "twice_a_user"
        assert not any(item.startswith("=") for item in acl)  # no PUBLIC entry


def test_plain_passwords_never_reach_the_server(cluster: Cluster, admin: Any) -> None:
    apps = _apps("logged")
    passwords = {"logged-a": new_password(), "logged-b": new_password()}
    provision(PsycopgExecutor(admin), apps, passwords)
    log = cluster.log()
    assert 'CREATE ROLE "logged_a_user"' in log  # log_statement = 'all' is on
    for pw in passwords.values():
        assert pw not in log


def test_app_role_cannot_reach_another_apps_database(cluster: Cluster, admin: Any) -> None:
    apps = _apps("iso")
    passwords = {"iso-a": new_password(), "iso-b": new_password()}
    provision(PsycopgExecutor(admin), apps, passwords)

    # A works in its own database (owner: can create objects)
    with cluster.connect_as("iso_a_user", passwords["iso-a"], "iso_a_db") as conn:
        conn.execute("CREATE TABLE mine (id int)")
        conn.execute("INSERT INTO mine VALUES (1)")
        conn.commit()

    # A cannot connect to B's database at all
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        cluster.connect_as("iso_a_user", passwords["iso-a"], "iso_b_db")

    # nor create objects in it (even if it could get in through the maintenance db, it is not
    # the owner): prove with B's owner granting nothing, then A trying through a superuser-made
    # CONNECT grant being revoked by the next provisioning run
    with admin.cursor() as cur:
        cur.execute('GRANT CONNECT ON DATABASE "iso_b_db" TO "iso_a_user"')
    with cluster.connect_as("iso_a_user", passwords["iso-a"], "iso_b_db") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE intruder (id int)")
    again = provision(PsycopgExecutor(admin), apps, passwords)
    assert [a.description for a in again] == ["revoke iso_a_user's access to database iso_b_db"]
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        cluster.connect_as("iso_a_user", passwords["iso-a"], "iso_b_db")

    # a role with no password of ours cannot log in with a wrong one
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        cluster.connect_as("iso_b_user", "wrong", "iso_b_db")


def test_special_character_password_through_connection_string(cluster: Cluster, admin: Any) -> None:
    app = AppDatabase("special", "special_db", "special_user", "apps")
    provision(PsycopgExecutor(admin), [app], {"special": SPECIAL})
    url = connection_string(app, SPECIAL, Server("127.0.0.1", cluster.port))
    assert SPECIAL not in url and "%40" in url  # '@' encoded
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == ("special_user", "special_db")
    assert provision(PsycopgExecutor(admin), [app], {"special": SPECIAL}) == []


def test_generated_passwords_work_and_rotation_is_one_action(cluster: Cluster, admin: Any) -> None:
    app = AppDatabase("rot", "rot_db", "rot_user", "apps")
    old, new = new_password(), new_password()
    provision(PsycopgExecutor(admin), [app], {"rot": old})
    actions = provision(PsycopgExecutor(admin), [app], {"rot": new})
    assert [a.description for a in actions] == ["set password of role rot_user"]
    url = connection_string(app, new, Server("127.0.0.1", cluster.port))
    with psycopg.connect(url, connect_timeout=5):
        pass
    with pytest.raises(psycopg.OperationalError):
        cluster.connect_as("rot_user", old, "rot_db")


def test_drifted_role_and_owner_are_repaired(cluster: Cluster, admin: Any) -> None:
    app = AppDatabase("drift", "drift_db", "drift_user", "apps")
    pw = new_password()
    provision(PsycopgExecutor(admin), [app], {"drift": pw})
    with admin.cursor() as cur:
        cur.execute('ALTER ROLE "drift_user" CREATEDB CREATEROLE')
        cur.execute('ALTER DATABASE "drift_db" OWNER TO postgres')
        cur.execute('GRANT CONNECT ON DATABASE "drift_db" TO PUBLIC')
    actions = [a.description for a in provision(PsycopgExecutor(admin), [app], {"drift": pw})]
    assert actions == [
        "reset attributes of role drift_user",
        "make drift_user the owner of database drift_db",
        "revoke PUBLIC access to database drift_db",
    ]
    assert provision(PsycopgExecutor(admin), [app], {"drift": pw}) == []


def test_scram_verifier_matches_what_postgres_stores(admin: Any) -> None:
    pw = new_password()
    with admin.cursor() as cur:
        cur.execute("SET password_encryption = 'scram-sha-256'")
        cur.execute("DROP ROLE IF EXISTS scram_probe")
        cur.execute(f"CREATE ROLE scram_probe PASSWORD '{pw}'")  # noqa: S608 - test-only value
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe'")
        stored = cur.fetchone()[0]
        cur.execute("DROP ROLE scram_probe")
    assert password_matches(stored, pw, "scram_probe")
    assert not password_matches(stored, pw + "x", "scram_probe")
    assert password_matches(scram_verifier(pw), pw, "u")


class LocalExec:
    """Stands in for the API's exec stream: runs the pod command (the real POD_SCRIPT, psql and
    `head -c`) as a local process with the container's environment, so the production executor
    (PodPsql) is exercised against the real server."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - the script under test
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.stdin = b""
        self.out = self.err = ""
        self.returncode: int | None = None

    def write_stdin(self, data: bytes) -> None:
        self.stdin += data

    def run_forever(self, timeout: float) -> None:
        # the exec protocol cannot close stdin: keep it open so `head -c` must end the input
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.stdin)
        self.proc.stdin.flush()
        out, err = b"", b""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out = self.proc.stdout.read()
        err = self.proc.stderr.read()
        self.returncode = self.proc.wait(timeout=timeout)
        self.out, self.err = out.decode(), err.decode()

    def read_stdout(self) -> str:
        return self.out

    def read_stderr(self) -> str:
        return self.err

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def test_pod_psql_script_against_the_real_server(cluster: Cluster, admin: Any) -> None:
    from k3sfleet.databases import PodPsql

    admin_pw = new_password()
    with admin.cursor() as cur:
        cur.execute(f"ALTER ROLE postgres PASSWORD '{scram_verifier(admin_pw)}'")  # noqa: S608
    admin.commit()
    # what the bitnami container has: the admin password in its environment, psql on PATH
    env = {"PATH": os.environ["PATH"], "POSTGRES_PASSWORD": admin_pw, "PGPORT": str(cluster.port)}
    argv_seen: list[list[str]] = []

    def stream(func: Any, pod: str, ns: str, *, command: list[str], **kw: Any) -> LocalExec:
        argv_seen.append(command)
        return LocalExec(command, env)

    psql = PodPsql(api=None, stream=stream)
    psql._pod = "postgresql-0"
    app = AppDatabase("viapod", "viapod_db", "viapod_user", "apps")
    pw = new_password()
    actions = provision(psql, [app], {"viapod": pw})
    assert "create role viapod_user" in [a.description for a in actions]
    assert provision(psql, [app], {"viapod": pw}) == []
    assert all(pw not in " ".join(argv) and admin_pw not in " ".join(argv) for argv in argv_seen)
    with psycopg.connect(
        connection_string(app, pw, Server("127.0.0.1", cluster.port)), connect_timeout=5
    ) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("viapod_db",)

    # a failing statement stops the run with psql's message
    with pytest.raises(Exception, match="does not exist"):
        psql.execute(['ALTER DATABASE "no_such_db" OWNER TO viapod_user'])
