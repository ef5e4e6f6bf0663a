"""Per-application PostgreSQL databases: declaration, passwords, least-privilege provisioning.

Applications are declared in ``helm/apps/values.yaml`` under ``appDatabases`` (``name``,
``database``, ``username``); an app's namespace is ``spec.destination.namespace`` of its Argo CD
Application in ``helm/apps/templates/<name>.yaml``, as the Ansible repository read it.

Passwords: 32 characters from ``secrets``, kept in the vault map ``vault_app_db_passwords``
(``k3sfleet db generate-passwords`` adds one for each new app and never changes existing ones).

Provisioning is one piece of code (``plan_sql`` / ``provision``) over a ``SqlExecutor``: in
production ``PodPsql`` runs ``psql`` inside the PostgreSQL pod through the API's exec; the tests
use ``PsycopgExecutor`` against a real server. Per app: a LOGIN role with no other attribute, a
database it owns, CONNECT (and TEMP) revoked from PUBLIC and from the other apps' roles. The
password is sent as a SCRAM-SHA-256 verifier computed here, so the plain password never reaches
the server, its logs or a command line; a role's password is compared with its stored verifier,
so a second run changes nothing.

Example::

    apps = load_apps(Path("."))
    actions = provision(PsycopgExecutor(conn), apps, {"myapp": "..."})
    [a.description for a in actions]      # ['create role myapp_user', 'create database ...']
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import yaml

from k3sfleet.errors import ConfigError, K3sfleetError

VAULT_KEY = "vault_app_db_passwords"
PASSWORD_LENGTH = 32
# Letters, digits and punctuation that needs URL-encoding in a connection string (":@/?#%")
# but no quotes, backslash, `$` or spaces, so the password is safe to paste into a shell or YAML.
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!#%*+,-./:=?@^_~"
IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
APP_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SCRAM_ITERATIONS = 4096
ROLE_FLAGS = ("superuser", "createdb", "createrole", "replication", "bypassrls")


@dataclass(frozen=True)
class AppDatabase:
    """One application's database: its Argo CD app name, database, role and namespace."""

    name: str
    database: str
    username: str
    namespace: str

    @property
    def secret_name(self) -> str:
        return f"{self.name}-db"


# -- the declaration ------------------------------------------------------------------------


def template_namespace(text: str) -> str | None:
    """``spec.destination.namespace`` of an Argo CD Application template, read as YAML after
    dropping Helm template lines and expressions (the namespace itself must be a literal).

    Example::

        template_namespace(Path("helm/apps/templates/myapp.yaml").read_text())   # "apps"
    """
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("{{") and stripped.endswith("}}"):
            continue  # a control line: {{- if ... }}, {{- include ... | nindent 2 }}
        lines.append(re.sub(r"\{\{.*?\}\}", "TEMPLATED", line))
    try:
        docs = list(yaml.safe_load_all("\n".join(lines)))
    except yaml.YAMLError:
        return None
    for doc in docs:
        if not isinstance(doc, Mapping) or doc.get("kind") != "Application":
            continue
        ns = ((doc.get("spec") or {}).get("destination") or {}).get("namespace")
        if isinstance(ns, str) and ns != "TEMPLATED" and "TEMPLATED" not in ns:
            return ns
    return None


def load_apps(project_dir: Path | str = ".", apps_path: str = "helm/apps") -> list[AppDatabase]:
    """The ``appDatabases`` of the apps chart, with namespaces; one ``ConfigError`` naming
    every problem (bad names, duplicates, missing template or namespace)."""
    chart = Path(project_dir) / apps_path
    values_file = chart / "values.yaml"
    if not values_file.is_file():
        raise ConfigError(f"{values_file} does not exist (GITOPS_APPS_PATH)")
    try:
        values = yaml.safe_load(values_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{values_file} is not valid YAML: {e}") from None
    entries = values.get("appDatabases") or []
    problems: list[str] = []
    apps: list[AppDatabase] = []
    if not isinstance(entries, list):
        raise ConfigError(f"{values_file}: appDatabases must be a list")
    for i, entry in enumerate(entries):
        where = f"{values_file} appDatabases[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: must be a mapping with name, database, username")
            continue
        name, db, user = (str(entry.get(k) or "") for k in ("name", "database", "username"))
        bad = False
        if not APP_RE.match(name):
            problems.append(f"{where}: name {name!r} is not a valid application name")
            bad = True
        for what, ident in (("database", db), ("username", user)):
            if not IDENT_RE.match(ident):
                problems.append(
                    f"{where}: {what} {ident!r} must be lower-case letters, digits and _ "
                    "(at most 63, not starting with a digit)"
                )
                bad = True
        if bad:
            continue
        template = chart / "templates" / f"{name}.yaml"
        namespace = None
        if not template.is_file():
            problems.append(f"{where}: {template} (its Argo CD Application) does not exist")
        else:
            namespace = template_namespace(template.read_text(encoding="utf-8"))
            if namespace is None:
                problems.append(f"{template}: no literal spec.destination.namespace")
        if namespace:
            apps.append(AppDatabase(name, db, user, namespace))
    for what in ("name", "database", "username"):
        seen = [getattr(a, what) for a in apps]
        for dup in sorted({v for v in seen if seen.count(v) > 1}):
            problems.append(f"{values_file}: appDatabases {what} {dup!r} is used more than once")
    users = {a.username for a in apps}
    for reserved in sorted(users & {"postgres", "public"}):
        problems.append(f"{values_file}: username {reserved!r} is reserved")
    if problems:
        raise ConfigError(problems)
    return apps


# -- passwords ------------------------------------------------------------------------------


def new_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password from ``secrets`` (about 6.3 bits per character)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def with_new_passwords(
    apps: Sequence[AppDatabase], existing: Mapping[str, Any] | None
) -> tuple[dict[str, str], list[str]]:
    """The password map with one new password for each app that has none; existing entries
    (including those of apps no longer declared) are kept as they are. Returns (map, added)."""
    passwords = {str(k): str(v) for k, v in (existing or {}).items() if v}
    added = []
    for app in apps:
        if app.name not in passwords:
            passwords[app.name] = new_password()
            added.append(app.name)
    return passwords, added


def missing_passwords(apps: Sequence[AppDatabase], vault: Mapping[str, Any]) -> list[str]:
    """Problems for apps without a password in the vault."""
    stored = vault.get(VAULT_KEY) or {}
    if not isinstance(stored, Mapping):
        return [f"vault {VAULT_KEY} must be a map of app name -> password"]
    return [
        f"no password for app {a.name} in vault {VAULT_KEY} (run `k3sfleet db generate-passwords`)"
        for a in apps
        if not stored.get(a.name)
    ]


# -- SCRAM-SHA-256 verifiers ----------------------------------------------------------------


def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """What PostgreSQL stores for ``password`` (``SCRAM-SHA-256$4096:salt$stored:server``).

    Our passwords are ASCII, so SASLprep leaves them unchanged."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    stored, server = _scram_keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def password_matches(stored: str | None, password: str, username: str) -> bool:
    """Whether PostgreSQL's stored verifier (SCRAM or legacy md5) is for ``password``."""
    if not stored:
        return False
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", stored)
    if m:
        iterations, salt = int(m.group(1)), base64.b64decode(m.group(2))
        want_stored, want_server = _scram_keys(password, salt, iterations)
        return hmac.compare_digest(base64.b64decode(m.group(3)), want_stored) and (
            hmac.compare_digest(base64.b64decode(m.group(4)), want_server)
        )
    if stored.startswith("md5"):
        digest = hashlib.md5((password + username).encode(), usedforsecurity=False).hexdigest()
        return hmac.compare_digest(stored, "md5" + digest)
    return False


# -- SQL ------------------------------------------------------------------------------------


def ident(name: str) -> str:
    """A quoted SQL identifier (names are validated by ``IDENT_RE`` first)."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings)."""
    return "'" + value.replace("'", "''") + "'"


class SqlExecutor(Protocol):
    """Runs SQL as the PostgreSQL superuser."""

    def fetch_json(self, sql: str) -> Any:
        """Run one query returning a single JSON value; return it parsed."""
        ...

    def execute(self, statements: Sequence[str]) -> None:
        """Run statements in order, each on its own (CREATE DATABASE cannot run in a
        transaction); stop at the first error."""
        ...


@dataclass(frozen=True)
class Action:
    """One change: a description without secrets, and its SQL (which may hold a verifier)."""

    description: str
    sql: str = field(repr=False)


def inspect_sql(apps: Sequence[AppDatabase]) -> str:
    """The one query that reads everything ``plan_sql`` compares."""
    roles = ", ".join(literal(a.username) for a in apps) or "NULL"
    dbs = ", ".join(literal(a.database) for a in apps) or "NULL"
    # Names are validated (IDENT_RE) and quoted as literals: no user text reaches SQL raw.
    return f"""SELECT json_build_object(
  'version', current_setting('server_version_num')::int,
  'roles', COALESCE((SELECT json_object_agg(rolname, json_build_object(
      'login', rolcanlogin, 'superuser', rolsuper, 'createdb', rolcreatedb,
      'createrole', rolcreaterole, 'replication', rolreplication, 'bypassrls', rolbypassrls,
      'password', rolpassword))
    FROM pg_authid WHERE rolname IN ({roles})), '{{}}'::json),
  'databases', COALESCE((SELECT json_object_agg(datname, json_build_object(
      'owner', pg_get_userbyid(datdba), 'acl', datacl::text[]))
    FROM pg_database WHERE datname IN ({dbs})), '{{}}'::json)
)"""  # noqa: S608


def _grantees(acl: Sequence[str] | None) -> dict[str, str]:
    """``{grantee: privileges}`` of a datacl; ``None`` (the default) grants PUBLIC ``Tc``."""
    if acl is None:
        return {"": "Tc"}
    out: dict[str, str] = {}
    for item in acl:
        grantee, _, rest = item.partition("=")
        out[grantee.strip('"')] = rest.split("/", 1)[0]
    return out


def plan_sql(
    state: Mapping[str, Any], apps: Sequence[AppDatabase], passwords: Mapping[str, str]
) -> list[Action]:
    """The actions that bring the server (``state`` from ``inspect_sql``) to the declaration."""
    if int(state.get("version") or 0) < 150000:
        raise K3sfleetError(
            "PostgreSQL 15 or newer is needed (the public schema of a new database must belong "
            "to its owner)"
        )
    roles, dbs = state.get("roles") or {}, state.get("databases") or {}
    app_users = {a.username for a in apps}
    actions: list[Action] = []
    for app in apps:
        user, db, pw = app.username, app.database, passwords[app.name]
        role = roles.get(user)
        attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        if role is None:
            actions.append(
                Action(
                    f"create role {user}",
                    f"CREATE ROLE {ident(user)} {attrs} PASSWORD {literal(scram_verifier(pw))}",
                )
            )
        else:
            if not role.get("login") or any(role.get(flag) for flag in ROLE_FLAGS):
                actions.append(
                    Action(f"reset attributes of role {user}", f"ALTER ROLE {ident(user)} {attrs}")
                )
            if not password_matches(role.get("password"), pw, user):
                actions.append(
                    Action(
                        f"set password of role {user}",
                        f"ALTER ROLE {ident(user)} PASSWORD {literal(scram_verifier(pw))}",
                    )
                )
        database = dbs.get(db)
        if database is None:
            actions.append(
                Action(
                    f"create database {db} owned by {user}",
                    f"CREATE DATABASE {ident(db)} OWNER {ident(user)}",
                )
            )
            grantees: dict[str, str] = {"": "Tc"}
        else:
            if database.get("owner") != user:
                actions.append(
                    Action(
                        f"make {user} the owner of database {db}",
                        f"ALTER DATABASE {ident(db)} OWNER TO {ident(user)}",
                    )
                )
            grantees = _grantees(database.get("acl"))
        if grantees.get(""):
            actions.append(
                Action(
                    f"revoke PUBLIC access to database {db}",
                    f"REVOKE ALL ON DATABASE {ident(db)} FROM PUBLIC",
                )
            )
        for other in sorted(app_users - {user}):
            if grantees.get(other):
                actions.append(
                    Action(
                        f"revoke {other}'s access to database {db}",
                        f"REVOKE ALL ON DATABASE {ident(db)} FROM {ident(other)}",
                    )
                )
    return actions


def provision(
    executor: SqlExecutor,
    apps: Sequence[AppDatabase],
    passwords: Mapping[str, str],
    *,
    dry: bool = False,
) -> list[Action]:
    """Inspect, plan and (unless ``dry``) run the actions; returns them (empty: nothing to do)."""
    missing = [a.name for a in apps if not passwords.get(a.name)]
    if missing:
        raise ConfigError(
            [f"no password for app {n} (run `k3sfleet db generate-passwords`)" for n in missing]
        )
    if not apps:
        return []
    actions = plan_sql(executor.fetch_json(inspect_sql(apps)), apps, passwords)
    if actions and not dry:
        executor.execute([a.sql for a in actions])
    return actions


# -- executors ------------------------------------------------------------------------------


class PsycopgExecutor:
    """A direct connection (psycopg 3, autocommit) as a superuser: what the tests use."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        conn.autocommit = True

    def fetch_json(self, sql: str) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            value = cur.fetchone()[0]
        return json.loads(value) if isinstance(value, str) else value

    def execute(self, statements: Sequence[str]) -> None:
        with self.conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)


# The script run in the PostgreSQL container: the admin password comes from the container's own
# environment (the bitnami chart's POSTGRES_[POSTGRES_]PASSWORD[_FILE]); the SQL arrives on
# stdin, exactly $1 bytes (the exec protocol cannot close stdin, so `head -c` ends the input).
POD_SCRIPT = """set -e
if [ -n "${POSTGRES_POSTGRES_PASSWORD_FILE:-}" ]; then
  PGPASSWORD=$(cat "$POSTGRES_POSTGRES_PASSWORD_FILE")
elif [ -n "${POSTGRES_POSTGRES_PASSWORD:-}" ]; then
  PGPASSWORD=$POSTGRES_POSTGRES_PASSWORD
elif [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  PGPASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
else
  PGPASSWORD=${POSTGRES_PASSWORD:-}
fi
export PGPASSWORD
head -c "$1" | psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d postgres -f -
"""


@dataclass
class PodPsql:
    """``psql`` inside the PostgreSQL pod, through the API's exec (``kubernetes.stream``).

    The pod is the running one matching ``selector`` in ``namespace`` (the bitnami chart's
    primary). SQL goes over stdin, never on a command line.
    """

    api: Any
    namespace: str = "database"
    selector: str = "app.kubernetes.io/instance=postgresql,app.kubernetes.io/component=primary"
    container: str = "postgresql"
    timeout: float = 120.0
    stream: Any = None  # kubernetes.stream.stream, replaceable in tests
    _pod: str | None = field(default=None, init=False)

    def pod(self) -> str:
        if self._pod is None:
            from kubernetes import client

            pods = client.CoreV1Api(self.api).list_namespaced_pod(
                self.namespace, label_selector=self.selector
            )
            running = sorted(
                str(p.metadata.name)
                for p in pods.items
                if p.metadata and p.status and p.status.phase == "Running"
            )
            if not running:
                raise K3sfleetError(
                    f"no running PostgreSQL pod in namespace {self.namespace} ({self.selector})"
                )
            self._pod = running[0]
        return self._pod

    def command(self, size: int) -> list[str]:
        return ["sh", "-c", POD_SCRIPT, "k3sfleet-psql", str(size)]

    def run(self, sql: str) -> str:
        from kubernetes import client

        stream = self.stream
        if stream is None:
            from kubernetes.stream import stream
        data = sql.encode("utf-8")
        core = client.CoreV1Api(self.api)
        resp = stream(
            core.connect_get_namespaced_pod_exec,
            self.pod(),
            self.namespace,
            command=self.command(len(data)),
            container=self.container,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        out: list[str] = []
        err: list[str] = []
        try:
            resp.write_stdin(data)
            resp.run_forever(timeout=self.timeout)
            out.append(resp.read_stdout() or "")
            err.append(resp.read_stderr() or "")
            rc = resp.returncode
            if rc is None:
                raise K3sfleetError(f"psql in pod {self.namespace}/{self.pod()} timed out")
        finally:
            resp.close()
        if rc != 0:
            reason = "".join(err).strip().splitlines()[-1:] or ["(no message)"]
            raise K3sfleetError(f"psql in pod {self.namespace}/{self.pod()} failed: {reason[0]}")
        return "".join(out)

    def fetch_json(self, sql: str) -> Any:
        return json.loads(self.run(sql + ";\n").strip())

    def execute(self, statements: Sequence[str]) -> None:
        self.run("".join(f"{s};\n" for s in statements))


# -- the <app>-db Secret --------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """Where applications reach PostgreSQL (from helm/apps values ``postgresql``)."""

    host: str = "postgresql.database.svc.cluster.local"
    port: int = 5432

    @classmethod
    def from_chart(cls, project_dir: Path | str = ".", apps_path: str = "helm/apps") -> Server:
        path = Path(project_dir) / apps_path / "values.yaml"
        pg = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("postgresql") or {}
        name = pg.get("fullnameOverride") or "postgresql"
        namespace = pg.get("namespace") or "database"
        return cls(f"{name}.{namespace}.svc.cluster.local", int(pg.get("port") or 5432))


def connection_string(app: AppDatabase, password: str, server: Server) -> str:
    """``postgresql://user:password@host:port/database``, user and password URL-encoded."""
    return (
        f"postgresql://{quote(app.username, safe='')}:{quote(password, safe='')}"
        f"@{server.host}:{server.port}/{quote(app.database, safe='')}"
    )


def secret_data(app: AppDatabase, password: str, server: Server) -> dict[str, str]:
    """The keys of the ``<app>-db`` Secret."""
    return {
        "host": server.host,
        "port": str(server.port),
        "database": app.database,
        "username": app.username,
        "password": password,
        "connection-string": connection_string(app, password, server),
    }


def passwords_from_vault(apps: Iterable[AppDatabase], vault: Mapping[str, Any]) -> dict[str, str]:
    stored = vault.get(VAULT_KEY) or {}
    return {
        a.name: str(stored[a.name])
        for a in apps
        if isinstance(stored, Mapping) and stored.get(a.name)
    }


# -- the vault ------------------------------------------------------------------------------


def store_passwords(path: Path, passwords: Mapping[str, str], vault_password: bytes) -> bool:
    """Write the password map to the vault at ``path`` (created as a whole-file vault, 0600,
    when absent); a whole-file vault keeps its other content and comments, an inline file gets
    each new password as an inline ``!vault`` value. Returns whether the file changed."""
    from k3sfleet import vault as v

    vf = v.read_vault_file(path, vault_password)
    wanted = dict(passwords)
    if vf.kind in ("file", "absent"):
        return v.set_value(path, VAULT_KEY, wanted, vault_password)  # type: ignore[arg-type]
    if dict(v._plain(vf.data).get(VAULT_KEY) or {}) == wanted:
        return False
    text = v.render(vf, {**vf.data, VAULT_KEY: wanted}, vault_password)
    v.write_atomic(path, text, vf.mode)
    return True


def generate_passwords(
    project_dir: Path | str,
    vault_path: Path,
    vault_password: bytes,
    apps_path: str = "helm/apps",
) -> tuple[list[str], list[str]]:
    """Give every declared app without a password a new one in the vault; never change an
    existing one. Returns (apps that got a password, apps that already had one)."""
    from k3sfleet.vault import read_vault_file

    apps = load_apps(project_dir, apps_path)
    existing = read_vault_file(vault_path, vault_password).data.get(VAULT_KEY) or {}
    if not isinstance(existing, Mapping):
        raise ConfigError(f"vault {VAULT_KEY} must be a map of app name -> password")
    passwords, added = with_new_passwords(apps, existing)
    if added:
        store_passwords(vault_path, passwords, vault_password)
    return added, [a.name for a in apps if a.name not in added]


def preflight_problems(settings: Any, project: Path | None = None) -> list[str]:
    """What ``deploys/databases.py`` would miss: bad ``appDatabases`` entries, templates without
    a namespace, apps without a vault password (all at once)."""
    project = project or Path.cwd()
    try:
        apps = load_apps(project, settings.gitops_apps_path)
    except ConfigError as e:
        return list(e.problems)
    return missing_passwords(apps, settings.vault)
