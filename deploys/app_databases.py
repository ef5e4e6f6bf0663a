"""Per-application PostgreSQL credentials as Kubernetes Secrets (the ``databases`` deploy).

``appDatabases`` in ``helm/apps/values.yaml``; the entry file ``deploys/databases.py`` runs it.

For every app declared in ``helm/apps/values.yaml`` it writes, through the
Kubernetes API (``k3sfleet.kube``), two Secrets from the vault password:

- ``<cluster>-role-<app>`` (``kubernetes.io/basic-auth``: ``username``, ``password``) in the
  PostgreSQL namespace: the ``passwordSecret`` of the app's managed role in the CloudNativePG
  ``Cluster`` (helm/apps templates/postgresql.yaml). The operator creates the role, its
  ``Database`` and keeps the password in step; label ``cnpg.io/reload`` makes a changed
  password apply at once.
- ``<app>-db`` in the app's namespace (``spec.destination.namespace`` of
  ``helm/apps/templates/<app>.yaml``): host (the Cluster's ``-rw`` Service), port, database,
  username, password, connection-string.

A Secret is written only when it differs; ``--dry`` names what would change (never a password).

Example (your own deploy)::

    from k3sfleet.deploys.app_databases import databases

    databases()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyinfra import host, state
from pyinfra.api import deploy

from k3sfleet.api_ops import api_host_name
from k3sfleet.databases import (
    AppDatabase,
    Server,
    load_apps,
    missing_passwords,
    passwords_from_vault,
    role_secret_data,
    secret_data,
)
from k3sfleet.errors import ConfigError
from k3sfleet.k8s_secrets import MANAGED_BY, DesiredSecret, Values, project_dir, secrets_ops
from k3sfleet.kube import ApiSession
from k3sfleet.settings import data_value

BASIC_AUTH = "kubernetes.io/basic-auth"
# CloudNativePG applies a change of a Secret carrying this label at once
# (docs/src/labels_annotations.md, declarative_role_management.md at v1.30.0).
CNPG_RELOAD = {"cnpg.io/reload": "true"}


def db_secrets(
    apps: Sequence[AppDatabase], passwords: Mapping[str, str], server: Server
) -> list[DesiredSecret]:
    """Per app: the role's basic-auth Secret (PostgreSQL namespace) and ``<app>-db``."""
    out: list[DesiredSecret] = []
    for app in apps:
        labels = {**MANAGED_BY, "k3sfleet.io/app-database": app.name}
        password = passwords[app.name]
        out.append(
            DesiredSecret(
                server.namespace,
                server.role_secret(app),
                BASIC_AUTH,
                {**labels, **CNPG_RELOAD, "cnpg.io/cluster": server.cluster},
                {},
                {k: v.encode() for k, v in role_secret_data(app, password).items()},
            )
        )
        out.append(
            DesiredSecret(
                app.namespace,
                app.secret_name,
                "Opaque",
                labels,
                {},
                {k: v.encode() for k, v in secret_data(app, password, server).items()},
            )
        )
    return out


@deploy("Application databases")
def databases(values: Values | None = None, session: ApiSession | None = None) -> None:
    """On the run's API host: check every app has a vault password (nothing touched otherwise),
    then plan the role Secrets and the ``<app>-db`` Secrets."""
    if host.name != api_host_name(state):
        return
    if values is None:
        values = Values.load(project_dir(), overrides=host.data.dict())
    apps_path = str(data_value(values.settings, "gitops_apps_path"))
    apps = load_apps(values.project_dir, apps_path)
    problems = missing_passwords(apps, values.vault)
    if problems:
        raise ConfigError(problems)
    passwords = passwords_from_vault(apps, values.vault)
    server = Server.from_chart(values.project_dir, apps_path)
    secrets_ops(db_secrets(apps, passwords, server), session or ApiSession(), label="Secret")
