"""Per-application PostgreSQL databases: declaration, passwords, and the Secrets that carry them.

Applications are declared in ``helm/apps/values.yaml`` under ``appDatabases`` (``name``,
``database``, ``username``); an app's namespace is ``spec.destination.namespace`` of its Argo CD
Application in ``helm/apps/templates/<name>.yaml``, as the Ansible repository read it.

Passwords: 32 characters from ``secrets``, kept in the vault map ``vault_app_db_passwords``
(``k3sfleet db generate-passwords`` adds one for each new app and never changes existing ones).

The roles and databases are CloudNativePG's work: ``helm/apps/templates/postgresql.yaml``
renders, per app, a managed role (LOGIN, no other attribute) whose password comes from the
basic-auth Secret ``<cluster>-role-<app>`` in the PostgreSQL namespace, a ``Database`` it owns,
and pg_hba lines that keep every other app's role out of it. k3sfleet writes that Secret
(``role_secret_data``) and the app's own ``<app>-db`` (``secret_data``: host = the Cluster's
``-rw`` Service).

Example::

    apps = load_apps(Path("."))
    server = Server.from_chart(Path("."))
    secret_data(apps[0], "...", server)["host"]   # 'postgresql-rw.database.svc.cluster.local'
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from k3sfleet import vault
from k3sfleet.errors import ConfigError
from k3sfleet.project import chart_dir
from k3sfleet.vault import read_vault_file

VAULT_KEY = "vault_app_db_passwords"
PASSWORD_LENGTH = 32
# Letters, digits and punctuation that needs URL-encoding in a connection string (":@/?#%")
# but no quotes, backslash, `$` or spaces, so the password is safe to paste into a shell or YAML.
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!#%*+,-./:=?@^_~"
IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
APP_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Role names CloudNativePG keeps for itself or PostgreSQL (pkg/postgres/roles.go IsRoleReserved
# at v1.30.0: postgres, streaming_replica, cnpg_*, pg_*) and the owner of the database its
# initdb bootstrap makes ("app"); database names its Database CRD refuses (postgres, template0,
# template1) and that bootstrap database.
RESERVED_USERS = ("postgres", "streaming_replica", "app", "public")
RESERVED_USER_PREFIXES = ("pg_", "cnpg_")
RESERVED_DATABASES = ("postgres", "template0", "template1", "app")


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
    chart = chart_dir(project_dir, apps_path)
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
    for app in apps:
        if app.username in RESERVED_USERS or app.username.startswith(RESERVED_USER_PREFIXES):
            problems.append(f"{values_file}: username {app.username!r} is reserved")
        if app.database in RESERVED_DATABASES:
            problems.append(f"{values_file}: database {app.database!r} is reserved")
    if problems:
        raise ConfigError(problems)
    return apps


# -- passwords ------------------------------------------------------------------------------


def new_password() -> str:
    """A random password of ``PASSWORD_LENGTH`` from ``secrets`` (about 6.3 bits per character)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


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


# -- the <app>-db Secret --------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """The CloudNativePG Cluster of helm/apps values ``postgresql``: where applications reach it
    (its read-write Service ``<cluster>-rw``, api/v1 ServiceReadWriteSuffix at v1.30.0) and where
    the roles' Secrets live (the Cluster's namespace, as ``passwordSecret`` is a local reference).
    """

    host: str = "postgresql-rw.database.svc.cluster.local"
    port: int = 5432
    cluster: str = "postgresql"
    namespace: str = "database"

    @classmethod
    def from_chart(cls, project_dir: Path | str = ".", apps_path: str = "helm/apps") -> Server:
        path = chart_dir(project_dir, apps_path) / "values.yaml"
        pg = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("postgresql") or {}
        cluster = str(pg.get("clusterName") or "postgresql")
        namespace = str(pg.get("namespace") or "database")
        return cls(
            f"{cluster}-rw.{namespace}.svc.cluster.local",
            int(pg.get("port") or 5432),
            cluster,
            namespace,
        )

    def role_secret(self, app: AppDatabase) -> str:
        """The basic-auth Secret the app's managed role reads (templates/postgresql.yaml)."""
        return f"{self.cluster}-role-{app.name}"


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


def role_secret_data(app: AppDatabase, password: str) -> dict[str, str]:
    """The keys of the role's ``kubernetes.io/basic-auth`` Secret: CloudNativePG wants
    ``username`` (the role) and ``password`` (docs/src/declarative_role_management.md, v1.30.0)."""
    return {"username": app.username, "password": password}


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
    vf = vault.read_vault_file(path, vault_password)
    wanted = dict(passwords)
    if vf.kind in ("file", "absent"):
        return vault.set_value(path, VAULT_KEY, wanted, vault_password)  # type: ignore[arg-type]
    if dict(vault._plain(vf.data).get(VAULT_KEY) or {}) == wanted:
        return False
    text = vault.render(vf, {**vf.data, VAULT_KEY: wanted}, vault_password)
    vault.write_atomic(path, text, vf.mode)
    return True


def generate_passwords(
    project_dir: Path | str,
    vault_path: Path,
    vault_password: bytes,
    apps_path: str = "helm/apps",
) -> tuple[list[str], list[str]]:
    """Give every declared app without a password a new one in the vault; never change an
    existing one. Returns (apps that got a password, apps that already had one)."""
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
