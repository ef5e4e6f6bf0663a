"""deploys/databases.py through pyinfra against the real Kubernetes API (kube-apiserver v1.34.2
on kine, the k8s tests' one control plane): the app's ``<app>-db`` Secret and the basic-auth Secret
CloudNativePG's managed role reads are created, and a second run writes nothing (counted from
kube-apiserver's audit log). The app and its PostgreSQL Cluster live in namespaces of this
test's own (``dbapi-*``)."""

from __future__ import annotations

from base64 import b64decode
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops

from k3sfleet.databases import VAULT_KEY
from k3sfleet.deploys.app_databases import databases
from k3sfleet.k8s_secrets import Values
from k3sfleet.kube import ApiSession
from tests.unit.databases_harness import APP_TEMPLATE, make_project
from tests.unit.secrets_harness import HOST_DATA

pytestmark = pytest.mark.k8s

APP_NAMESPACE, PG_NAMESPACE = "dbapi-web", "dbapi-db"


def test_deploy_creates_db_secrets_and_second_run_changes_nothing(
    api: client.ApiClient, admin_writes: Callable[[str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    project = make_project(
        tmp_path,
        [{"name": "myapp", "database": "my_db", "username": "my_user"}],
        {"myapp": APP_TEMPLATE.replace("namespace: web", f"namespace: {APP_NAMESPACE}")},
        pg_namespace=PG_NAMESPACE,
    )
    values = Values(
        {"gitops_apps_path": "helm/apps"}, {}, {VAULT_KEY: {"myapp": "pw:@/x"}}, project
    )

    def run() -> State:
        names = ["@fake/s1"]
        state = State(Inventory((names, HOST_DATA), k3s_servers=(names, {})), Config())
        connect_all(state)
        session = ApiSession(api)  # an API client of our own, used as it is
        add_deploy(state, databases, values=values, session=session)
        run_ops(state)
        return state

    run()
    core = client.CoreV1Api(api)
    secret = core.read_namespaced_secret("myapp-db", APP_NAMESPACE)
    role = core.read_namespaced_secret("postgresql-role-myapp", PG_NAMESPACE)
    assert set(secret.data) == {
        "host", "port", "database", "username", "password", "connection-string"
    }  # fmt: skip
    host = f"postgresql-rw.{PG_NAMESPACE}.svc.cluster.local"
    assert b64decode(secret.data["host"]) == host.encode()
    # what CloudNativePG's managed role reads: basic-auth, username = the role, reload label
    assert role.type == "kubernetes.io/basic-auth"
    assert {k: b64decode(v) for k, v in role.data.items()} == {
        "username": b"my_user",
        "password": b"pw:@/x",
    }
    assert role.metadata.labels["cnpg.io/reload"] == "true"
    writes = admin_writes("dbapi")
    assert sorted((w["verb"], w["kind"], w["namespace"], w["name"]) for w in writes) == sorted([
        ("create", "Namespace", "", APP_NAMESPACE),
        ("create", "Namespace", "", PG_NAMESPACE),
        ("create", "Secret", APP_NAMESPACE, "myapp-db"),
        ("create", "Secret", PG_NAMESPACE, "postgresql-role-myapp"),
    ])
    run()
    assert admin_writes("dbapi") == writes
