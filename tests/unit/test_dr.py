"""DR plans against an in-memory API: refusals, `latest`, and the objects each step writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from k3sfleet.backup import SERVICE_LABEL, backup_manifest
from k3sfleet.dr import (
    DrRefused,
    StatefulService,
    failover_plan,
    load_services,
    restore_plan,
)
from k3sfleet.errors import K3sfleetError

SERVICES = {
    "postgresql": StatefulService(
        "postgresql", "database", node="node-a", selector={"app.kubernetes.io/instance": "pg"}
    ),
    "pgadmin4": StatefulService(
        "pgadmin4", "database", node="node-a", selector={"app.kubernetes.io/instance": "pga"}
    ),
    "cache": StatefulService("cache", "apps", node_selector={"disk": "ssd"}),
}


def node(name: str, ready: bool = True, cordoned: bool = False, **labels: str) -> Any:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels=labels, annotations={}),
        spec=client.V1NodeSpec(unschedulable=cordoned or None),
        status=client.V1NodeStatus(
            conditions=[client.V1NodeCondition(type="Ready", status="True" if ready else "False")]
        ),
    )


class FakeApi:
    """core / apps / custom in one object, recording every write."""

    def __init__(self) -> None:
        self.nodes = {"node-a": node("node-a"), "node-b": node("node-b", disk="ssd")}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, ...]] = []
        self.pvcs = {"data-pg-0": {"app.kubernetes.io/instance": "pg"}, "other": {}}
        self.apps_objects = {
            ("argocd", "apps"): {
                "spec": {
                    "source": {"path": "helm/apps", "helm": {"valuesObject": {"a": 1}}},
                    "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
                }
            },
            ("argocd", "postgresql"): {"spec": {"syncPolicy": {"automated": {"prune": True}}}},
        }

    # core
    def read_node(self, name: str) -> Any:
        if name not in self.nodes:
            raise ApiException(status=404, reason="Not Found")
        return self.nodes[name]

    def patch_node(self, name: str, body: dict[str, Any]) -> None:
        self.writes.append(("patch_node", name, json.dumps(body, sort_keys=True)))
        self.nodes[name].spec.unschedulable = body["spec"]["unschedulable"]

    def list_namespaced_persistent_volume_claim(self, ns: str, label_selector: str) -> Any:
        want = dict(kv.split("=") for kv in label_selector.split(",") if kv)
        items = [
            client.V1PersistentVolumeClaim(metadata=client.V1ObjectMeta(name=n))
            for n, labels in self.pvcs.items()
            if all(labels.get(k) == v for k, v in want.items())
        ]
        return client.V1PersistentVolumeClaimList(items=items)

    def delete_namespaced_persistent_volume_claim(self, name: str, ns: str) -> None:
        self.writes.append(("delete_pvc", ns, name))
        del self.pvcs[name]

    def create_namespaced_config_map(self, ns: str, body: dict[str, Any]) -> None:
        self.writes.append(("create_configmap", ns, body["metadata"]["name"]))
        self.objects[("configmaps", ns, body["metadata"]["name"])] = body

    # apps
    def list_namespaced_stateful_set(self, ns: str, label_selector: str) -> Any:
        sts = client.V1StatefulSet.model_construct(metadata=client.V1ObjectMeta(name="pg"))
        return client.V1StatefulSetList.model_construct(items=[sts])

    def delete_namespaced_stateful_set(self, name: str, ns: str) -> None:
        self.writes.append(("delete_sts", ns, name))

    def list_namespaced_deployment(self, ns: str, label_selector: str) -> Any:
        return client.V1DeploymentList.model_construct(items=[])

    def delete_namespaced_deployment(self, name: str, ns: str) -> None:
        self.writes.append(("delete_deploy", ns, name))

    # custom
    def create_namespaced_custom_object(self, group, version, ns, plural, body):  # type: ignore[no-untyped-def]
        self.writes.append(("create", plural, body["metadata"]["name"]))
        body = json.loads(json.dumps(body))
        if plural == "restores":
            body["status"] = {"phase": "Completed"}  # Velero is quick here
        self.objects[(plural, ns, body["metadata"]["name"])] = body

    def get_namespaced_custom_object(self, group, version, ns, plural, name):  # type: ignore[no-untyped-def]
        if plural == "applications":
            if (ns, name) not in self.apps_objects:
                raise ApiException(status=404, reason="Not Found")
            return json.loads(json.dumps(self.apps_objects[(ns, name)]))
        if (plural, ns, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return self.objects[(plural, ns, name)]

    def list_namespaced_custom_object(self, group, version, ns, plural, label_selector="", **kw):  # type: ignore[no-untyped-def]
        want = dict(kv.split("=") for kv in label_selector.split(",") if kv)
        return {
            "items": [
                o
                for (p, _, _), o in self.objects.items()
                if p == plural
                and all(o["metadata"].get("labels", {}).get(k) == v for k, v in want.items())
            ]
        }

    def delete_namespaced_custom_object(self, group, version, ns, plural, name):  # type: ignore[no-untyped-def]
        self.writes.append(("delete_" + plural, ns, name))
        del self.objects[(plural, ns, name)]

    def patch_namespaced_custom_object(self, group, version, ns, plural, name, body):  # type: ignore[no-untyped-def]
        self.writes.append(("patch_app", name, json.dumps(body, sort_keys=True)))
        obj = self.apps_objects[(ns, name)]
        for key, value in body["spec"].items():
            if key == "syncPolicy":
                obj["spec"].setdefault("syncPolicy", {})["automated"] = value["automated"]
            else:
                obj["spec"][key] = value

    def add_backup(self, name: str, service: str, phase: str, started: str) -> None:
        body = backup_manifest(name, ["database"], labels={SERVICE_LABEL: service})
        body["status"] = {"phase": phase, "startTimestamp": started}
        self.objects[("backups", "velero", name)] = body


@pytest.fixture(autouse=True)
def in_memory_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """``FakeApi`` reaches the DR code the way a cluster does: through the kubernetes client's
    ``CoreV1Api`` / ``AppsV1Api`` / ``CustomObjectsApi`` of an API client."""
    for name in ("CoreV1Api", "AppsV1Api", "CustomObjectsApi"):
        real = getattr(client, name)
        monkeypatch.setattr(
            client, name, lambda api=None, real=real: api if isinstance(api, FakeApi) else real(api)
        )


def cnpg_cluster(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": "database", "labels": labels},
        "spec": {"affinity": {"nodeSelector": {"kubernetes.io/hostname": "node-a"}}},
    }


def api_with_backups() -> FakeApi:
    api = FakeApi()
    api.add_backup("pg-old", "postgresql", "Completed", "2026-01-01T02:00:00Z")
    api.add_backup("pg-new", "postgresql", "Completed", "2026-01-03T02:00:00Z")
    api.add_backup("pg-failed", "postgresql", "Failed", "2026-01-04T02:00:00Z")
    api.add_backup("pga-1", "pgadmin4", "Completed", "2026-01-02T02:00:00Z")
    return api


def test_latest_is_the_newest_completed_backup_of_the_service() -> None:
    api = api_with_backups()
    plan = restore_plan(api, SERVICES, "postgresql", "latest", "node-b")
    assert "from backup pg-new onto node-b" in plan.title
    assert api.writes == []  # planning changes nothing


def test_restore_workload_writes_the_right_objects_in_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = api_with_backups()
    api.objects[("clusters", "database", "pg")] = cnpg_cluster(
        "pg", **{"app.kubernetes.io/instance": "pg"}
    )
    api.objects[("clusters", "database", "other")] = cnpg_cluster("other")
    plan = restore_plan(api, SERVICES, "postgresql", "latest", "node-b")
    plan.apply(api)
    lines = capsys.readouterr().out.splitlines()
    restore_name = plan.restores[0]
    restore = api.objects[("restores", "velero", restore_name)]
    assert restore["spec"]["backupName"] == "pg-new"
    assert restore["spec"]["includedNamespaces"] == ["database"]
    assert restore["spec"]["labelSelector"] == {"matchLabels": {"app.kubernetes.io/instance": "pg"}}
    assert restore["spec"]["restorePVs"] is True
    modifier = restore["spec"]["resourceModifier"]
    cm = api.objects[("configmaps", "velero", modifier["name"])]
    rules = yaml.safe_load(cm["data"]["resourcemodifier.yaml"])["resourceModifierRules"]
    paths = {r["conditions"]["groupResource"]: r["patches"][0] for r in rules}
    assert {k: p["path"] for k, p in paths.items()} == {
        "statefulsets.apps": "/spec/template/spec/nodeSelector",
        "deployments.apps": "/spec/template/spec/nodeSelector",
        # the CloudNativePG Cluster of the shared PostgreSQL pins its Pods here
        "clusters.postgresql.cnpg.io": "/spec/affinity/nodeSelector",
    }
    for patch in paths.values():
        assert json.loads(patch["value"]) == {"kubernetes.io/hostname": "node-b"}
    # order: pause sync, delete old objects, modifier, restore, then pin and resume
    kinds = [w[0] for w in api.writes]
    assert kinds.index("patch_app") < kinds.index("delete_pvc") < kinds.index("create")
    assert ("delete_pvc", "database", "data-pg-0") in api.writes
    assert ("delete_sts", "database", "pg") in api.writes
    assert ("delete_clusters", "database", "pg") in api.writes
    assert "other" in api.pvcs  # only the service's claims
    assert ("clusters", "database", "other") in api.objects  # and Clusters
    root = api.apps_objects[("argocd", "apps")]["spec"]
    assert {"name": "nodeOverrides.postgresql", "value": "node-b"} in root["source"]["helm"][
        "parameters"
    ]
    assert root["source"]["helm"]["valuesObject"] == {"a": 1}
    assert root["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    child = api.apps_objects[("argocd", "postgresql")]["spec"]
    assert child["syncPolicy"]["automated"] == {"prune": True}
    assert len(lines) == len(plan.steps)


def test_named_backup_must_exist_and_be_completed() -> None:
    api = api_with_backups()
    assert "pg-old" in restore_plan(api, SERVICES, "postgresql", "pg-old", "node-b").title
    with pytest.raises(DrRefused, match="no backup named nope"):
        restore_plan(api, SERVICES, "postgresql", "nope", "node-b")
    with pytest.raises(DrRefused, match="Failed, not Completed"):
        restore_plan(api, SERVICES, "postgresql", "pg-failed", "node-b")


def test_refuses_without_any_completed_backup() -> None:
    api = FakeApi()
    api.add_backup("pg-failed", "postgresql", "Failed", "2026-01-04T02:00:00Z")
    with pytest.raises(DrRefused, match="no Completed backup of postgresql"):
        restore_plan(api, SERVICES, "postgresql", "latest", "node-b")
    assert api.writes == []


def test_refuses_a_target_that_is_not_ready_cordoned_or_unknown() -> None:
    api = api_with_backups()
    api.nodes["node-b"] = node("node-b", ready=False)
    with pytest.raises(DrRefused, match="node-b is not Ready"):
        restore_plan(api, SERVICES, "postgresql", "latest", "node-b")
    api.nodes["node-b"] = node("node-b", cordoned=True)
    with pytest.raises(DrRefused, match="cordoned"):
        restore_plan(api, SERVICES, "postgresql", "latest", "node-b")
    with pytest.raises(DrRefused, match="node-z is not a node"):
        restore_plan(api, SERVICES, "postgresql", "latest", "node-z")
    assert api.writes == []


def test_refuses_an_app_that_is_not_a_pinned_stateful_service() -> None:
    api = api_with_backups()
    with pytest.raises(DrRefused, match="example-app is not a pinned stateful service"):
        restore_plan(api, SERVICES, "example-app", "latest", "node-b")
    loose = {"x": StatefulService("x", "ns")}
    with pytest.raises(DrRefused, match="not pinned"):
        restore_plan(api, loose, "x", "latest", "node-b")


def test_failover_cordons_source_and_moves_every_service_pinned_to_it() -> None:
    api = api_with_backups()
    plan = failover_plan(api, SERVICES, "node-a", "node-b")
    text = plan.render()
    assert text.splitlines()[1].endswith("cordon node-a")
    assert "[postgresql]" in text and "[pgadmin4]" in text and "[cache]" not in text
    assert api.writes == []
    plan.apply(api)
    assert api.nodes["node-a"].spec.unschedulable
    restores = [o for (p, _, _), o in api.objects.items() if p == "restores"]
    assert {r["spec"]["backupName"] for r in restores} == {"pg-new", "pga-1"}


def test_failover_refusals() -> None:
    api = api_with_backups()
    with pytest.raises(DrRefused, match="no stateful service is pinned to node-b"):
        failover_plan(api, {k: v for k, v in SERVICES.items() if k != "cache"}, "node-b", "node-a")
    del api.objects[("backups", "velero", "pga-1")]
    with pytest.raises(DrRefused, match="no Completed backup of pgadmin4"):
        failover_plan(api, SERVICES, "node-a", "node-b")
    assert api.writes == []


def test_label_pinned_service_found_on_its_node() -> None:
    api = api_with_backups()
    api.nodes["node-c"] = node("node-c")
    api.add_backup("cache-1", "cache", "Completed", "2026-01-02T02:00:00Z")
    plan = failover_plan(api, SERVICES, "node-b", "node-c")
    assert "[cache]" in plan.render()


def test_services_from_the_apps_chart(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    services = load_services(repo)
    assert services  # the chart lists stateful services
    for s in services.values():
        assert s.namespace and (s.node or s.node_selector)
    chart = tmp_path / "helm" / "apps"
    chart.mkdir(parents=True)
    (chart / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "statefulServices": [
                    {"name": "pg", "namespace": "db", "node": "a", "selector": {"x": "y"}}
                ],
                "nodeOverrides": {"pg": "b"},
            }
        )
    )
    assert load_services(tmp_path)["pg"].node == "b"


def test_an_api_error_mid_way_names_the_step_and_what_is_done() -> None:
    api = api_with_backups()
    plan = restore_plan(api, SERVICES, "postgresql", "latest", "node-b")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ApiException(status=403, reason="Forbidden")

    api.create_namespaced_config_map = broken  # type: ignore[method-assign]
    with pytest.raises(K3sfleetError) as e:
        plan.apply(api)
    assert "DR stopped at step 3" in str(e.value)
    assert "403 Forbidden" in str(e.value) and "steps 1..2 are done" in str(e.value)
