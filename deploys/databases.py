"""Per-application PostgreSQL databases and their ``<app>-db`` Secrets (``appDatabases``).

Run it with ``pyinfra inventory.py deploys/databases.py`` after ``k3sfleet db
generate-passwords``. From this machine, through the Kubernetes API (``k3sfleet.kube``), it runs
``psql`` inside the PostgreSQL pod (exec; SQL on stdin) to give every app declared in
``helm/apps/values.yaml`` a LOGIN role and a database it owns, with CONNECT revoked from PUBLIC
and from the other apps; then it writes the Secret ``<app>-db`` (host, port, database, username,
password, connection-string) in the app's namespace (``spec.destination.namespace`` of
``helm/apps/templates/<app>.yaml``). Both steps change nothing when all is in place, and
``--dry`` names what would change (never a password). This replaces the Ansible repository's
``setup-secrets-database.yml``.

Example (your own deploy)::

    from deploys.databases import databases

    databases()
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyinfra import host, state
from pyinfra.api import FunctionCommand, deploy, operation

from k3sfleet.databases import (
    AppDatabase,
    PodPsql,
    Server,
    SqlExecutor,
    inspect_sql,
    load_apps,
    missing_passwords,
    passwords_from_vault,
    plan_sql,
    provision,
    secret_data,
)
from k3sfleet.entry import under_pyinfra
from k3sfleet.errors import ConfigError
from k3sfleet.k8s_secrets import (
    MANAGED_BY,
    ApiSession,
    DesiredSecret,
    Values,
    api_host_name,
    project_dir,
    secrets_ops,
)

DATA_DEFAULTS: dict[str, Any] = {
    # Where the shared PostgreSQL runs (the bitnami chart's primary pod and container).
    "databases_postgres_namespace": "database",
    "databases_postgres_selector": (
        "app.kubernetes.io/instance=postgresql,app.kubernetes.io/component=primary"
    ),
    "databases_postgres_container": "postgresql",
}


@dataclass(repr=False)
class ProvisionJob:
    """What the execute-time callback needs; its ``repr`` (shown by ``-v``) holds no password."""

    executor: SqlExecutor
    apps: Sequence[AppDatabase]
    passwords: Mapping[str, str] = field(repr=False)
    session: ApiSession | None = None

    def __repr__(self) -> str:
        return f"ProvisionJob(apps={[a.name for a in self.apps]})"


def _provision_callback(state: Any, host: Any, job: ProvisionJob) -> None:
    try:
        provision(job.executor, job.apps, job.passwords)
    finally:
        if job.session is not None:
            job.session.done()


@operation()
def app_databases(job: ProvisionJob, changes: Sequence[str]) -> Generator[Any, None, None]:
    """Create or repair the apps' roles and databases (planned at prepare time).

    + job: the ``ProvisionJob`` (apps, passwords, executor)
    + changes: descriptions of the planned actions (no passwords)
    """
    if not changes:
        host.noop("application databases are up to date")
        return
    yield FunctionCommand(_provision_callback, (job,), {})


def db_secrets(
    apps: Sequence[AppDatabase], passwords: Mapping[str, str], server: Server
) -> list[DesiredSecret]:
    """The ``<app>-db`` Secrets."""
    return [
        DesiredSecret(
            app.namespace,
            app.secret_name,
            "Opaque",
            {**MANAGED_BY, "k3sfleet.io/app-database": app.name},
            {},
            {k: v.encode() for k, v in secret_data(app, passwords[app.name], server).items()},
        )
        for app in apps
    ]


@deploy("Application databases", data_defaults=DATA_DEFAULTS)
def databases(
    values: Values | None = None,
    session: ApiSession | None = None,
    executor: SqlExecutor | None = None,
) -> None:
    """On the run's API host: check every app has a vault password (nothing touched otherwise),
    plan the SQL through ``psql`` in the PostgreSQL pod, then plan the ``<app>-db`` Secrets."""
    if host.name != api_host_name(state):
        return
    if values is None:
        values = Values.load(project_dir(), overrides=host.data.dict())
    apps_path = str(values.settings.get("gitops_apps_path") or "helm/apps")
    apps = load_apps(values.project_dir, apps_path)
    problems = missing_passwords(apps, values.vault)
    if problems:
        raise ConfigError(problems)
    passwords = passwords_from_vault(apps, values.vault)
    session = session or ApiSession()
    if executor is None:
        executor = PodPsql(
            session.api,
            namespace=host.data.databases_postgres_namespace,
            selector=host.data.databases_postgres_selector,
            container=host.data.databases_postgres_container,
        )
    actions = plan_sql(executor.fetch_json(inspect_sql(apps)), apps, passwords) if apps else []
    changes = [a.description for a in actions]
    if changes:
        session.pending += 1
    app_databases(
        name="PostgreSQL: " + ("; ".join(changes) if changes else "databases up to date"),
        job=ProvisionJob(executor, apps, passwords, session),
        changes=changes,
    )
    server = Server.from_chart(values.project_dir, apps_path)
    secrets_ops(db_secrets(apps, passwords, server), session, label="Secret")


if under_pyinfra():
    databases()
