"""The rolling engine (k3sfleet.rolling) against the real Kubernetes API (kube-apiserver v1.34.2
on kine with kube-controller-manager, the k8s tests' one control plane): it cordons, evicts and
uncordons one node after another through the eviction API, leaves DaemonSet pods, and stops
at a PodDisruptionBudget the disruption controller says allows no disruption (the API's 429).

Each test has Nodes and a namespace of its own (``<prefix>-*``), deleted at its end (the
engine's health gate looks at every Node of the cluster). No kubelet runs here: the test
plays each Node's status (Ready, kubeletVersion) and the upgrade; its pods carry
``terminationGracePeriodSeconds: 0`` so that an eviction deletes them at once, as a kubelet
would finish them (k8s.io/kubernetes v1.34.2 pkg/registry/core/pod/strategy.go
CheckGracefulDelete; k8s.io/apiserver v0.34.2 pkg/registry/generic/registry/store.go
deleteImmediately), and owners that exist, or the garbage collector would delete them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from k3sfleet import rolling
from k3sfleet.rolling import (
    CORDON_ANNOTATION,
    RollingEngine,
    RollingFailed,
    RollingTarget,
    kubelet_version,
)
from tests.polling import wait_for

pytestmark = pytest.mark.k8s

Writes = Callable[[str], list[dict[str, Any]]]
V1, V2 = "v1.33.6+k3s1", "v1.34.2+k3s1"
ROLES = (("server-1", "server"), ("agent-1", "agent"), ("agent-2", "agent"))
NODE_INFO = {
    "architecture": "amd64",
    "bootID": "b",
    "containerRuntimeVersion": "containerd://2.0",
    "kernelVersion": "6.1",
    "kubeProxyVersion": "",
    "machineID": "m",
    "operatingSystem": "linux",
    "osImage": "Debian GNU/Linux 12",
    "systemUUID": "u",
}
NOWHERE = {"k3sfleet.test/nowhere": "true"}  # owners' selectors: they own no pod, run none


class Fleet:
    """Three Nodes ``<prefix>-server-1``, ``-agent-1``, ``-agent-2`` (Ready, ``V1``) and the
    namespace ``<prefix>-apps``."""

    def __init__(self, api: client.ApiClient, prefix: str) -> None:
        self.api, self.prefix = api, prefix
        self.core = client.CoreV1Api(api)
        self.namespace = f"{prefix}-apps"
        self.targets = [RollingTarget(self.node(name), role) for name, role in ROLES]
        self.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))
        # pods are admitted once the serviceaccounts controller made the namespace's "default"
        wait_for("the namespace's default ServiceAccount",
                 lambda: self.core.read_namespaced_service_account("default", self.namespace),
                 60, interval=0.2)
        for name, role in ROLES:
            labels = {"node-role.kubernetes.io/etcd": "true"} if role == "server" else {}
            self.core.create_node(
                client.V1Node(metadata=client.V1ObjectMeta(name=self.node(name), labels=labels)))
            self.set_status(self.node(name), V1)

    def node(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def set_status(self, node: str, version: str) -> None:
        """What the node's kubelet reports: Ready, running ``version``."""
        self.core.patch_node_status(node, {"status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {**NODE_INFO, "kubeletVersion": version},
        }})

    def owner(self, kind: str) -> client.V1OwnerReference:
        """A ReplicaSet, DaemonSet or StatefulSet ``o`` that exists (owning no pod of its own)."""
        apps = client.AppsV1Api(self.api)
        template = client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels=NOWHERE),
            spec=client.V1PodSpec(node_selector=NOWHERE,
                                  containers=[client.V1Container(name="c", image="i")]))
        selector = client.V1LabelSelector(match_labels=NOWHERE)
        meta = client.V1ObjectMeta(name="o")
        made: Any
        if kind == "ReplicaSet":
            made = apps.create_namespaced_replica_set(self.namespace, client.V1ReplicaSet(
                metadata=meta, spec=client.V1ReplicaSetSpec(
                    replicas=0, selector=selector, template=template)))
        elif kind == "DaemonSet":
            made = apps.create_namespaced_daemon_set(self.namespace, client.V1DaemonSet(
                metadata=meta, spec=client.V1DaemonSetSpec(selector=selector, template=template)))
        else:
            made = apps.create_namespaced_stateful_set(self.namespace, client.V1StatefulSet(
                metadata=meta, spec=client.V1StatefulSetSpec(
                    replicas=0, service_name="o", selector=selector, template=template)))
        return client.V1OwnerReference(
            api_version="apps/v1", kind=kind, name="o", uid=made.metadata.uid)

    def add_pod(self, name: str, node: str, labels: dict[str, str], owner: str) -> None:
        """A pod bound to ``node``, Running and Ready as its kubelet reports (a Pending pod's
        eviction ignores PodDisruptionBudgets: canIgnorePDB, k8s.io/kubernetes v1.34.2
        pkg/registry/core/pod/storage/eviction.go)."""
        self.core.create_namespaced_pod(self.namespace, client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=name, labels=labels, owner_references=[self.owner(owner)]),
            spec=client.V1PodSpec(
                node_name=self.node(node), termination_grace_period_seconds=0,
                containers=[client.V1Container(name="c", image="i")]),
        ))
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": {
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
        }})

    def engine(self, **kw: Any) -> RollingEngine:
        """An upgrade to ``V2``: the action reports the new version, as a restarted kubelet."""

        def upgrade(names: Any) -> None:
            for name in names:
                self.set_status(name, V2)

        return RollingEngine(
            self.api, self.targets, action=upgrade,
            needs_action=lambda t, node: kubelet_version(node) != V2,
            target_version=V2, action_name="upgrade", **kw,
        )

    def node_writes(self, writes: Writes) -> list[tuple[str, str, str]]:
        """The admin's Node patches (cordon, uncordon) and evictions, in the API's order."""
        return [
            (w["kind"], w["name"], w["subresource"])
            for w in writes(self.prefix)
            if (w["verb"] == "patch" and w["kind"] == "Node" and w["subresource"] == "")
            or (w["verb"] == "create" and w["subresource"] == "eviction")
        ]

    def delete(self) -> None:
        for name, _ in ROLES:
            try:
                self.core.delete_node(self.node(name))
            except ApiException as e:
                if e.status != 404:
                    raise
        self.core.delete_namespace(self.namespace)


@pytest.fixture
def fleet(
    api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Fleet]]:
    """``fleet(prefix)``: a Fleet, deleted at the end of the test."""
    # the API answers in milliseconds: poll it often rather than every 2 s
    monkeypatch.setattr(rolling, "POLL_INTERVAL", 0.05)
    made: list[Fleet] = []

    def make(prefix: str) -> Fleet:
        made.append(Fleet(api, prefix))
        return made[-1]

    yield make
    for f in made:
        f.delete()


def test_engine_cordons_evicts_and_uncordons_in_order(
    fleet: Callable[[str], Fleet], admin_writes: Writes
) -> None:
    f = fleet("roll")
    f.add_pod("web-1", "agent-1", {"app": "web"}, owner="ReplicaSet")
    f.add_pod("ds-1", "agent-1", {"app": "ds"}, owner="DaemonSet")
    f.engine().run()
    writes = [w for w in f.node_writes(admin_writes) if w[0] == "Node" or w[1] == "web-1"]
    assert writes == [
        ("Node", "roll-server-1", ""),
        ("Node", "roll-server-1", ""),
        ("Node", "roll-agent-1", ""),
        ("Pod", "web-1", "eviction"),
        ("Node", "roll-agent-1", ""),
        ("Node", "roll-agent-2", ""),
        ("Node", "roll-agent-2", ""),
    ]
    names = {p.metadata.name for p in f.core.list_namespaced_pod(f.namespace).items}
    assert names == {"ds-1"}  # the DaemonSet pod stays, the other one was evicted
    for target in f.targets:
        node = f.core.read_node(target.name)
        assert not node.spec.unschedulable
        assert CORDON_ANNOTATION not in (node.metadata.annotations or {})
        assert kubelet_version(node) == V2


def test_engine_honours_a_pdb_and_stops(
    fleet: Callable[[str], Fleet], admin_writes: Writes
) -> None:
    f = fleet("pdb")
    f.add_pod("pg-0", "agent-1", {"app": "pg"}, owner="StatefulSet")
    policy = client.PolicyV1Api(f.api)
    policy.create_namespaced_pod_disruption_budget(
        f.namespace,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="pg"),
            spec=client.V1PodDisruptionBudgetSpec(
                min_available=1, selector=client.V1LabelSelector(match_labels={"app": "pg"})
            ),
        ),
    )

    def computed() -> bool:
        pdb = policy.read_namespaced_pod_disruption_budget("pg", f.namespace)
        status = pdb.status
        return bool(status and status.observed_generation == pdb.metadata.generation)

    # the disruption controller's answer: the one healthy pod must stay
    wait_for("the disruption controller's PDB status", computed, 60, interval=0.2)
    status = policy.read_namespaced_pod_disruption_budget("pg", f.namespace).status
    assert (status.disruptions_allowed, status.current_healthy, status.desired_healthy) == (
        0, 1, 1
    )
    with pytest.raises(RollingFailed) as e:
        f.engine(drain_timeout=0.5).run()
    assert e.value.node == "pdb-agent-1" and e.value.step == "drain"
    assert "pdb-apps/pg-0 (disruption budget)" in str(e.value)
    agent2 = f.core.read_node("pdb-agent-2")
    assert not (agent2.spec and agent2.spec.unschedulable)
    assert kubelet_version(agent2) == V1
    assert f.core.read_node("pdb-agent-1").spec.unschedulable  # left cordoned, and reported
    # the eviction was asked for and refused (429): not a write in the log
    assert ("Pod", "pg-0", "eviction") not in f.node_writes(admin_writes)
    assert f.core.read_namespaced_pod("pg-0", f.namespace)  # not deleted without permission
