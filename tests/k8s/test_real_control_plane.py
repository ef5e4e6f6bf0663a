"""The real Kubernetes control plane runs here: kine (SQLite) + kube-apiserver +
kube-controller-manager + kube-scheduler built from k8s.io/kubernetes v1.34.2, as separate
processes on 127.0.0.1, with kwok playing one node's kubelet.

What is proved through the official ``kubernetes`` client: ``/version`` reports the K3s
version; kwok keeps a Node Ready with a Lease; a Deployment's pods are scheduled by the real
scheduler onto that Node and marked Running by kwok; the disruption controller computes a
PodDisruptionBudget's status; the real eviction API refuses (429) an eviction that would
violate it, and once the budget allows one, evicts, kwok finalises the pod and the ReplicaSet
controller replaces it; an exec into a simulated pod travels API server -> the Node's kubelet
endpoint (kwok, TLS from the cluster's server CA) and runs a local command (kwok's
ClusterExec), the path the databases deploy's ``psql`` will take. kwok is ended by its PID
here; the control plane is the k8s suite's one (tests/k8s/conftest.py ``plane``), whose
processes are ended by their PIDs, and proved gone, after the last k8s test.

Skipped (with the reason) when the binaries are not built: ``scripts/setup.sh`` builds them
(``python -m k3sfleet.lab.gobuild``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from k3sfleet.lab.controlplane import K3S_VERSION, Binaries
from k3sfleet.lab.standins.k3s import pki
from k3sfleet.lab.standins.k3s.controlplane import PROGRAMS, ControlPlane
from tests.k8s.local import free_port, gone
from tests.polling import wait_for

pytestmark = pytest.mark.k8s

NODE = "kwok-node-1"
NAMESPACE = "default"
LABELS = {"app": "web"}
T = TypeVar("T")



# Every pod's exec runs as a local command where kwok runs (kwok's ClusterExec, v1alpha1).
CLUSTER_EXEC = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: local
spec:
  execs:
  - local:
      workDir: {workdir}
"""


@pytest.fixture(scope="module")
def kwok(plane: ControlPlane, binaries: Binaries, api: client.ApiClient) -> Iterator[int]:
    """kwok managing ``NODE`` (created here as an agent registers itself, with K3s's
    kubeletVersion) and serving the kubelet API on 127.0.0.1 with a
    certificate of the cluster's server CA, as a kubelet's is; yields kwok's PID and ends it
    by that PID."""
    client.CoreV1Api(api).create_node(
        client.V1Node(
            metadata=client.V1ObjectMeta(name=NODE, labels={"kubernetes.io/hostname": NODE}),
            status=client.V1NodeStatus(
                node_info=client.V1NodeSystemInfo(
                    kubelet_version=K3S_VERSION, kube_proxy_version=K3S_VERSION,
                    architecture="amd64", operating_system="linux", boot_id="", machine_id="",
                    system_uuid="", container_runtime_version="", kernel_version="",
                    os_image="",
                ),
            ),
        )
    )
    kwok_dir = plane.server_dir / "kwok"
    kwok_dir.mkdir()
    plane.tls.store_pair(
        "serving-kwok", *pki.issue(*plane.tls.pair("server-ca"), NODE, server_names=["127.0.0.1"])
    )
    (kwok_dir / "cluster-exec.yaml").write_text(CLUSTER_EXEC.format(workdir=kwok_dir))
    port = free_port()
    log = plane.log("kwok").open("ab")
    argv = [
        str(binaries.path("kwok")),
        f"--kubeconfig={plane.admin_kubeconfig}",
        f"--manage-single-node={NODE}",
        # kubelet's default; kwok keeps no Lease without it (its option defaults to 0 when
        # no KwokConfiguration is given: sigs.k8s.io/kwok pkg/kwok/controllers/controller.go)
        "--node-lease-duration-seconds=40",
        # the address kwok reports for the Node (as kubelet's --node-ip) and its kubelet port
        "--node-ip=127.0.0.1",
        f"--node-port={port}",
        f"--server-address=127.0.0.1:{port}",
        f"--tls-cert-file={plane.tls.directory / 'serving-kwok.crt'}",
        f"--tls-private-key-file={plane.tls.directory / 'serving-kwok.key'}",
        *(f"--config={stage}" for stage in binaries.kwok_stages),
        f"--config={kwok_dir / 'cluster-exec.yaml'}",
    ]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    yield proc.pid
    # The plane is shared by every k8s test: leave no workload and no Node (the rolling
    # engine's health gate looks at every Node). The web pods go while kwok finalises them.
    core = client.CoreV1Api(api)
    for delete in (client.AppsV1Api(api).delete_namespaced_deployment,
                   client.PolicyV1Api(api).delete_namespaced_pod_disruption_budget):
        try:
            delete("web", NAMESPACE)
        except ApiException as err:
            if err.status != 404:
                raise
    wait_for("the web pods gone", lambda: not core.list_namespaced_pod(
        NAMESPACE, label_selector="app=web").items, 120)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    assert gone(proc.pid)
    core.delete_node(NODE)


def _if(value: T, test: Callable[[T], bool]) -> T | None:
    return value if test(value) else None


def _ready(node: client.V1Node) -> bool:
    return any(
        c.type == "Ready" and c.status == "True" for c in (node.status.conditions or [])
    )


def test_version_reports_the_k3s_version(api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == K3S_VERSION
    assert (info.major, info.minor) == ("1", "34")


def test_kwok_keeps_the_node_ready_with_a_lease(api: client.ApiClient, kwok: int) -> None:
    core = client.CoreV1Api(api)
    node = wait_for("the node Ready", lambda: _if(core.read_node(NODE), _ready))
    assert node.status.node_info.kubelet_version == K3S_VERSION  # kwok keeps it
    assert node.status.allocatable["pods"]
    leases = client.CoordinationV1Api(api)

    def lease() -> client.V1Lease | None:
        try:
            return leases.read_namespaced_lease(NODE, "kube-node-lease")
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    first = wait_for("the node's Lease", lease)
    assert first.spec.lease_duration_seconds == 40
    assert [(o.kind, o.name) for o in first.metadata.owner_references] == [("Node", NODE)]
    # renewed every duration/4 (10 s), as the kubelet does
    wait_for("the Lease renewed", lambda: lease().spec.renew_time > first.spec.renew_time, 30)
    # The node lifecycle controller (kube-controller-manager) lifts the not-ready taint.
    def tainted() -> bool:
        taints = core.read_node(NODE).spec.taints or []
        return any(t.key == "node.kubernetes.io/not-ready" for t in taints)

    wait_for("the not-ready taint lifted", lambda: not tainted())


def _web_pods(api: client.ApiClient) -> list[client.V1Pod]:
    return [
        p
        for p in client.CoreV1Api(api)
        .list_namespaced_pod(NAMESPACE, label_selector="app=web").items
        if p.metadata.deletion_timestamp is None
    ]


def _running(api: client.ApiClient, count: int) -> list[client.V1Pod] | None:
    pods = _web_pods(api)
    ok = len(pods) == count and all(
        p.spec.node_name == NODE and p.status.phase == "Running" for p in pods
    )
    return pods if ok else None


def test_deployment_pods_are_scheduled_and_run(api: client.ApiClient, kwok: int) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(
        NAMESPACE,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=3,
                selector=client.V1LabelSelector(match_labels=LABELS),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=LABELS),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="web", image="nginx:1.27")]
                    ),
                ),
            ),
        ),
    )
    pods = wait_for("3 web pods Running on the kwok node", lambda: _running(api, 3), 120)
    assert {p.metadata.owner_references[0].kind for p in pods} == {"ReplicaSet"}
    wait_for(
        "the Deployment's readyReplicas",
        lambda: apps.read_namespaced_deployment("web", NAMESPACE).status.ready_replicas == 3,
    )


def test_pdb_status_is_computed_and_eviction_refused(api: client.ApiClient, kwok: int) -> None:
    policy = client.PolicyV1Api(api)
    core = client.CoreV1Api(api)
    wait_for("3 web pods Running", lambda: _running(api, 3), 120)
    policy.create_namespaced_pod_disruption_budget(
        NAMESPACE,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1PodDisruptionBudgetSpec(
                min_available=3, selector=client.V1LabelSelector(match_labels=LABELS)
            ),
        ),
    )

    def status(allowed: int) -> client.V1PodDisruptionBudgetStatus | None:
        pdb = policy.read_namespaced_pod_disruption_budget("web", NAMESPACE)
        s = pdb.status
        current = s is not None and s.observed_generation == pdb.metadata.generation
        return s if current and s.disruptions_allowed == allowed else None

    computed = wait_for("the disruption controller's PDB status", lambda: status(0))
    assert (computed.current_healthy, computed.desired_healthy, computed.expected_pods) == (
        3, 3, 3
    )

    victim = _web_pods(api)[0].metadata.name
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=victim, namespace=NAMESPACE)
    )
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction(victim, NAMESPACE, eviction)
    assert refused.value.status == 429
    assert "disruption budget" in (refused.value.body or "")
    assert core.read_namespaced_pod(victim, NAMESPACE).metadata.deletion_timestamp is None

    # Allow one disruption: the same eviction now goes through, kwok finalises the pod and
    # the ReplicaSet controller replaces it.
    policy.patch_namespaced_pod_disruption_budget(
        "web", NAMESPACE, {"spec": {"minAvailable": 2}}
    )
    wait_for("the PDB to allow one disruption", lambda: status(1))
    core.create_namespaced_pod_eviction(victim, NAMESPACE, eviction)

    def victim_gone() -> bool:
        try:
            core.read_namespaced_pod(victim, NAMESPACE)
        except ApiException as err:
            return err.status == 404
        return False

    wait_for("the evicted pod finalised", victim_gone)
    replaced = wait_for("a replacement pod Running", lambda: _running(api, 3), 120)
    assert victim not in {p.metadata.name for p in replaced}


def test_exec_into_a_simulated_pod_runs_a_local_command(api: client.ApiClient, kwok: int) -> None:
    """kubectl exec's path: the real API server upgrades the request and forwards it to the
    node's kubelet endpoint (kwok), which runs the command where kwok runs (ClusterExec)."""
    pod = wait_for("3 web pods Running", lambda: _running(api, 3), 120)[0].metadata.name
    out = stream(
        client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, NAMESPACE,
        command=["sh", "-c", "echo $((6 * 7)) in $(pwd)"],
        stderr=True, stdin=False, stdout=True, tty=False,
    )
    assert out.strip().startswith("42 in "), out
    assert out.strip().endswith("/kwok"), out


def test_processes_are_separate_and_alive(plane: ControlPlane, kwok: int) -> None:
    pids = {**plane.pids(), "kwok": kwok}
    assert len(set(pids.values())) == len(PROGRAMS) + 1
    for program, pid in pids.items():
        assert not gone(pid), program
        if program in PROGRAMS:
            # one multi-call binary, started under each component's name
            assert Path(os.readlink(f"/proc/{pid}/exe")).name == program

