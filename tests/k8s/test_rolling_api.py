"""The rolling engine (k3sfleet.rolling) against the real Kubernetes API: kine +
kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1, three Nodes whose
kubelets kwok plays (``--manage-all-nodes``), real DaemonSet, Deployment and StatefulSet
controllers, and a PodDisruptionBudget whose status the disruption controller computes.

Proved through kube-apiserver's audit log (``standins.k3s.audit.writes``): one node at a time,
servers first, cordon, evictions, the action, uncordon; DaemonSet pods are left alone; an
evicted pod is finalised by kwok and replaced by its ReplicaSet; an eviction a budget refuses
(429, kube-apiserver's eviction REST) stops the run at that node, left cordoned and reported,
with nothing deleted.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from k3sfleet import rolling
from k3sfleet.lab.controlplane import Binaries
from k3sfleet.lab.standins.k3s.audit import writes
from k3sfleet.lab.standins.k3s.controlplane import ControlPlane
from k3sfleet.rolling import (
    CORDON_ANNOTATION,
    RollingEngine,
    RollingFailed,
    RollingTarget,
    kubelet_version,
)
from tests.k8s.local import control_plane, gone
from tests.polling import wait_for

pytestmark = pytest.mark.k8s

V1, V2 = "v1.33.6+k3s1", "v1.34.2+k3s1"
ADMIN = "system:admin"  # the admin kubeconfig's certificate (controlplane.CLIENTS)
TARGETS = [
    RollingTarget("server-1", "server"),
    RollingTarget("agent-1", "agent"),
    RollingTarget("agent-2", "agent"),
]


@pytest.fixture(scope="module")
def rolling_plane(binaries: Binaries,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own: its kwok plays every Node there is
    (``--manage-all-nodes``), which on the shared plane would take other tests' Nodes."""
    with control_plane(binaries, tmp_path_factory.mktemp("server")) as plane:
        yield plane


@pytest.fixture(scope="module")
def rolling_api(rolling_plane: ControlPlane, binaries: Binaries) -> Iterator[client.ApiClient]:
    """The admin client, with three Nodes (server-1 carrying K3s's etcd role label) at V1
    whose kubelets one kwok process plays."""
    plane = rolling_plane
    api = config.new_client_from_config(config_file=str(plane.admin_kubeconfig))
    core = client.CoreV1Api(api)
    for target in TARGETS:
        labels = {"kubernetes.io/hostname": target.name}
        if target.role == "server":
            labels["node-role.kubernetes.io/etcd"] = "true"
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=target.name,
                                                                    labels=labels)))
        set_version(core, target.name, V1)
    log = plane.log("kwok").open("ab")
    kwok = subprocess.Popen(  # noqa: S603
        [str(binaries.path("kwok")), f"--kubeconfig={plane.admin_kubeconfig}",
         "--manage-all-nodes=true", "--node-ip=127.0.0.1",
         # kubelet's default; kwok keeps no Lease without it (sigs.k8s.io/kwok
         # pkg/kwok/controllers/controller.go, v0.8.0)
         "--node-lease-duration-seconds=40",
         *(f"--config={stage}" for stage in binaries.kwok_stages)],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        for target in TARGETS:
            wait_for(f"{target.name} Ready", lambda n=target.name: rolling.is_ready(
                core.read_node(n)), 120)  # fmt: skip
        yield api
    finally:
        kwok.terminate()
        kwok.wait(20)
        log.close()
        api.close()
        assert gone(kwok.pid)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rolling, "POLL_INTERVAL", 0.2)


def set_version(core: Any, name: str, version: str) -> None:
    """The Node's kubeletVersion, as a restarted kubelet of ``version`` reports it."""
    core.patch_node_status(name, {"status": {"nodeInfo": {"kubeletVersion": version}}})


def fresh_nodes(core: Any) -> None:
    """Every Node at V1, schedulable, Ready (what the previous test left is undone)."""
    for target in TARGETS:
        core.patch_node(target.name, {"spec": {"unschedulable": None}})
        set_version(core, target.name, V1)
        wait_for(f"{target.name} Ready", lambda n=target.name: rolling.is_ready(
            core.read_node(n)), 60)  # fmt: skip


def namespace(core: Any, name: str) -> str:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(f"the default ServiceAccount of {name}",
             lambda: core.list_namespaced_service_account(name).items, 60)
    return name


def pod_template(app: str, node: str | None = None) -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": app}),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="registry.invalid/app:1")],
            node_selector={"kubernetes.io/hostname": node} if node else None,
        ),
    )


def running(core: Any, ns: str, app: str, count: int) -> list[Any]:
    """The ``app`` pods of ``ns`` once ``count`` of them are Running and not terminating."""
    def found() -> list[Any] | None:
        pods = [p for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
                if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
        return pods if len(pods) == count else None

    return wait_for(f"{count} {app} pod(s) Running in {ns}", found, 120)


def admin_writes(plane: ControlPlane, since: int) -> list[tuple[str, str, str]]:
    """Our cordons/uncordons and evictions after the first ``since`` log entries."""
    return [
        (e["kind"], e["name"], e["subresource"])
        for e in writes(plane.audit_log.read_text())[since:]
        if e["user"] == ADMIN
        and ((e["verb"] == "patch" and e["kind"] == "Node" and e["subresource"] == "")
             or (e["verb"] == "create" and e["subresource"] == "eviction"))
    ]


def engine(api: Any, **kw: Any) -> RollingEngine:
    core = client.CoreV1Api(api)

    def upgrade(names: Any) -> None:
        for name in names:
            set_version(core, name, V2)

    return RollingEngine(api, TARGETS, action=upgrade,
                         needs_action=lambda t, node: kubelet_version(node) != V2,
                         target_version=V2, action_name="upgrade", **kw)


def test_cordons_evicts_and_uncordons_one_node_at_a_time(
    rolling_plane: ControlPlane, rolling_api: client.ApiClient
) -> None:
    plane, api = rolling_plane, rolling_api
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    fresh_nodes(core)
    ns = namespace(core, "rolling-order")
    apps.create_namespaced_daemon_set(ns, client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="ds"),
        spec=client.V1DaemonSetSpec(selector=client.V1LabelSelector(match_labels={"app": "ds"}),
                                    template=pod_template("ds"))))  # fmt: skip
    apps.create_namespaced_deployment(ns, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=pod_template("web", node="agent-1"))))  # fmt: skip
    daemons = {p.metadata.name for p in running(core, ns, "ds", len(TARGETS))}
    (web,) = running(core, ns, "web", 1)
    assert web.spec.node_name == "agent-1"
    since = len(writes(plane.audit_log.read_text()))

    engine(api).run()

    ours = [w for w in admin_writes(plane, since) if w[0] == "Node" or w[1] == web.metadata.name]
    assert ours == [
        ("Node", "server-1", ""),
        ("Node", "server-1", ""),
        ("Node", "agent-1", ""),
        ("Pod", web.metadata.name, "eviction"),
        ("Node", "agent-1", ""),
        ("Node", "agent-2", ""),
        ("Node", "agent-2", ""),
    ]
    assert not [w for w in admin_writes(plane, since) if w[1] in daemons]  # never evicted
    assert {p.metadata.name for p in running(core, ns, "ds", len(TARGETS))} == daemons
    (replaced,) = running(core, ns, "web", 1)  # the ReplicaSet's new pod, back on agent-1
    assert replaced.metadata.name != web.metadata.name and replaced.spec.node_name == "agent-1"
    for node in core.list_node().items:
        assert not node.spec.unschedulable
        assert CORDON_ANNOTATION not in (node.metadata.annotations or {})
        assert kubelet_version(node) == V2


def test_a_disruption_budget_stops_the_run_at_that_node(rolling_api: client.ApiClient) -> None:
    api = rolling_api
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    fresh_nodes(core)
    ns = namespace(core, "rolling-budget")
    apps.create_namespaced_stateful_set(ns, client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="pg"),
        spec=client.V1StatefulSetSpec(
            replicas=1, service_name="pg",
            selector=client.V1LabelSelector(match_labels={"app": "pg"}),
            template=pod_template("pg", node="agent-1"))))  # fmt: skip
    policy = client.PolicyV1Api(api)
    policy.create_namespaced_pod_disruption_budget(ns, client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name="pg"),
        spec=client.V1PodDisruptionBudgetSpec(
            min_available=1, selector=client.V1LabelSelector(match_labels={"app": "pg"}))))
    running(core, ns, "pg", 1)
    # the disruption controller has counted the healthy pod: no eviction is allowed
    wait_for("the budget's status", lambda: (lambda s: s and s.current_healthy == 1 and
             s.disruptions_allowed == 0)(policy.read_namespaced_pod_disruption_budget(
                 "pg", ns).status), 60)  # fmt: skip

    with pytest.raises(RollingFailed) as failed:
        engine(api, drain_timeout=3).run()

    assert failed.value.node == "agent-1" and failed.value.step == "drain"
    # "(disruption budget)" is the engine's word for the 429 the eviction got
    assert f"{ns}/pg-0 (disruption budget)" in str(failed.value)
    agent2 = core.read_node("agent-2")
    assert not agent2.spec.unschedulable and kubelet_version(agent2) == V1  # never reached
    assert core.read_node("agent-1").spec.unschedulable  # left cordoned, and reported
    pod = core.read_namespaced_pod("pg-0", ns)
    assert pod.metadata.deletion_timestamp is None  # not deleted without permission
