"""Backups and DR against a lab cluster's API (1 server + 1 agent; the stand-in API serves the
velero.io and argoproj.io resources): `k3sfleet backup create` makes a Backup with the right
spec, `latest` resolves to the newest Completed backup of the service, a restore-workload run
creates the Restore, the resource modifier and the Argo CD pinning, and each refusal holds.

There is no Velero controller in the lab: a small thread plays its part for Restores (marks
them Completed), as Velero would after restoring."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from labcli import deploy_cluster

from k3sfleet.backup import SERVICE_LABEL, backup_manifest
from k3sfleet.dr import DrRefused, load_services, restore_plan
from k3sfleet.kube import cluster_api

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from k3sfleet.cli import main; sys.exit(main(sys.argv[1:]))"
pytestmark = pytest.mark.lab


def k3sfleet(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "VELERO_"))}
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-c", CLI, "--project-dir", str(project), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def cluster(lab_factory: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    lab = lab_factory(servers=1, agents=1)
    project = tmp_path_factory.mktemp("backup_project")
    inventory = lab.write_inventory(project / "inventory.py")
    deploy_cluster(inventory)
    # the project's apps chart values: postgresql pinned to the server
    values = yaml.safe_load((ROOT / "helm/apps/values.yaml").read_text())
    for service in values["statefulServices"]:
        service["node"] = lab.servers[0].name
    (project / "helm/apps").mkdir(parents=True)
    (project / "helm/apps/values.yaml").write_text(yaml.safe_dump(values))
    with cluster_api(str(inventory)) as api:
        core = client.CoreV1Api(api)
        for ns in ("velero", "argocd", "database"):
            try:
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            except ApiException as e:
                if e.status != 409:
                    raise
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(
            "argoproj.io",
            "v1alpha1",
            "argocd",
            "applications",
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": "apps", "namespace": "argocd"},
                "spec": {
                    "project": "default",
                    "source": {"repoURL": "https://git.example.org/x.git", "path": "helm/apps"},
                    "destination": {"server": "https://kubernetes.default.svc"},
                    "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
                },
            },
        )
        # the shared PostgreSQL as helm/apps renders it: a CloudNativePG Cluster on the old node
        custom.create_namespaced_custom_object(
            "postgresql.cnpg.io",
            "v1",
            "database",
            "clusters",
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Cluster",
                "metadata": {
                    "name": "postgresql",
                    "namespace": "database",
                    "labels": {"cnpg.io/cluster": "postgresql"},
                },
                "spec": {
                    "instances": 1,
                    "affinity": {"nodeSelector": {"kubernetes.io/hostname": "vps-old"}},
                },
            },
        )
    return lab, project, inventory


@pytest.fixture
def velero(cluster: Any) -> Iterator[None]:
    """Plays Velero for Restores: each new Restore becomes Completed."""
    _, _, inventory = cluster
    stop = threading.Event()

    def loop() -> None:
        with cluster_api(str(inventory)) as api:
            custom = client.CustomObjectsApi(api)
            while not stop.wait(0.5):
                items = custom.list_namespaced_custom_object(
                    "velero.io", "v1", "velero", "restores"
                )["items"]
                for item in items:
                    if (item.get("status") or {}).get("phase") != "Completed":
                        # Velero v1.17.1's Restore CRD has no status subresource: its
                        # controller patches the object itself (config/crd/v1/bases)
                        custom.patch_namespaced_custom_object(
                            "velero.io",
                            "v1",
                            "velero",
                            "restores",
                            item["metadata"]["name"],
                            {"status": {"phase": "Completed"}},
                        )

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


def seed_backup(api: Any, name: str, service: str, phase: str, started: str) -> None:
    body = backup_manifest(name, ["database"], labels={SERVICE_LABEL: service})
    status = {"status": {"phase": phase, "startTimestamp": started}}
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object("velero.io", "v1", "velero", "backups", body)
    # Velero v1.17.1's Backup CRD has no status subresource (config/crd/v1/bases)
    custom.patch_namespaced_custom_object("velero.io", "v1", "velero", "backups", name, status)


def test_backup_create_makes_a_velero_backup(cluster: Any) -> None:
    _, project, inventory = cluster
    run = k3sfleet(
        project, "backup", "create", "--namespaces", "database,apps", "--name", "lab-manual-1"
    )
    assert run.returncode == 0, run.stderr
    with cluster_api(str(inventory)) as api:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "velero.io", "v1", "velero", "backups", "lab-manual-1"
        )
    assert obj["spec"]["includedNamespaces"] == ["database", "apps"]
    assert obj["spec"]["storageLocation"] == "default"
    assert obj["spec"]["defaultVolumesToFsBackup"] is True
    listing = k3sfleet(project, "backup", "list")
    assert listing.returncode == 0, listing.stderr
    assert "lab-manual-1" in listing.stdout


def test_restore_workload_latest_and_refusals(cluster: Any, velero: None) -> None:
    lab, project, inventory = cluster
    target = lab.agents[0].name
    services = load_services(project)
    with cluster_api(str(inventory)) as api:
        # refusals first: nothing is there yet
        with pytest.raises(DrRefused, match="no Completed backup of postgresql"):
            restore_plan(api, services, "postgresql", "latest", target)
        with pytest.raises(DrRefused, match="not a pinned stateful service"):
            restore_plan(api, services, "example-app", "latest", target)
        with pytest.raises(DrRefused, match="not a node of the cluster"):
            restore_plan(api, services, "postgresql", "latest", "no-such-node")
        seed_backup(api, "pg-1", "postgresql", "Completed", "2026-01-01T02:00:00Z")
        seed_backup(api, "pg-2", "postgresql", "Completed", "2026-01-02T02:00:00Z")
        seed_backup(api, "pg-3", "postgresql", "PartiallyFailed", "2026-01-03T02:00:00Z")
        core = client.CoreV1Api(api)
        core.patch_node(target, {"spec": {"unschedulable": True}})
        with pytest.raises(DrRefused, match="cordoned"):
            restore_plan(api, services, "postgresql", "latest", target)
        core.patch_node(target, {"spec": {"unschedulable": False}})

    dry = k3sfleet(
        project,
        "dr",
        "restore-workload",
        "--app",
        "postgresql",
        "--backup",
        "latest",
        "--target-node",
        target,
        "--dry",
    )
    assert dry.returncode == 0, dry.stderr
    assert "from backup pg-2 onto" in dry.stdout
    run = k3sfleet(
        project,
        "dr",
        "restore-workload",
        "--app",
        "postgresql",
        "--backup",
        "latest",
        "--target-node",
        target,
        "--timeout",
        "120",
    )
    assert run.returncode == 0, run.stdout + run.stderr

    with cluster_api(str(inventory)) as api:
        custom = client.CustomObjectsApi(api)
        restores = custom.list_namespaced_custom_object("velero.io", "v1", "velero", "restores")
        (restore,) = restores["items"]
        spec = restore["spec"]
        assert spec["backupName"] == "pg-2"
        assert spec["includedNamespaces"] == ["database"]
        assert spec["labelSelector"]["matchLabels"] == {"cnpg.io/cluster": "postgresql"}
        modifier = client.CoreV1Api(api).read_namespaced_config_map(
            spec["resourceModifier"]["name"], "velero"
        )
        assert f'"kubernetes.io/hostname": "{target}"' in modifier.data["resourcemodifier.yaml"]
        assert "/spec/affinity/nodeSelector" in modifier.data["resourcemodifier.yaml"]
        clusters = custom.list_namespaced_custom_object(
            "postgresql.cnpg.io", "v1", "database", "clusters"
        )
        assert clusters["items"] == []  # the old Cluster (and with it its Pods, PVCs) is gone
        root = custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "argocd", "applications", "apps"
        )
        assert {"name": "nodeOverrides.postgresql", "value": target} in root["spec"]["source"][
            "helm"
        ]["parameters"]
        assert root["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}

    refused = k3sfleet(
        project,
        "dr",
        "restore-workload",
        "--app",
        "postgresql",
        "--backup",
        "pg-3",
        "--target-node",
        target,
    )
    assert refused.returncode == 1
    assert "PartiallyFailed, not Completed" in refused.stderr
