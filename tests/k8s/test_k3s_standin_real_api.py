"""The stand-in ``k3s server`` and ``k3s agent`` on the real control plane (server.py, agent.py).

Both run on 127.0.0.1 as processes of this test (``K3SFLEET_LAB_PROGRAMS`` names the built
programs, bound at ``/opt/k3sfleet-standin/go`` in a lab host). Proved through the
kubeconfig the server writes (``--write-kubeconfig``, K3s's k3s.yaml):

* the server's 6443 is the front, kube-apiserver is on 6444 (https-listen-port + 1), the
  node-token is K3s's ``K10<sha256 of the server CA>::server:<password>``;
* the server's Node carries the control-plane role labels (set with the admin certificate:
  NodeRestriction keeps kubelets from setting ``node-role.kubernetes.io/*``) and is kept Ready
  by kwok; the agent's Node registers as ``system:node:<name>`` with the certificate from
  ``/v1-k3s/client-kubelet.crt`` and becomes Ready with a Lease;
* kubeletVersion is the running K3s version, and a restarted agent of another version patches it;
* a wrong agent token is refused (the agent exits 1 naming the 401);
* CRDs of the pinned projects are Established; the manifests directory is applied once per
  content and tracked by an Addon; the write log comes from kube-apiserver's audit log;
* a second server joins with the token (CAs and service-account key from
  /v1-k3s/server-bootstrap) and serves the same cluster from its own kube-apiserver on the
  first server's kine; a wrong token is refused;
* ``k3s etcd-snapshot save|ls`` copies kine's database; ``server --cluster-reset
  --cluster-reset-restore-path`` puts a snapshot back: the objects made after it are gone.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client, config

from k3sfleet.lab import hosts
from k3sfleet.lab.controlplane import K3S_VERSION, Binaries
from k3sfleet.lab.standins.k3s.audit import writes
from tests.k8s.k3s_procs import TOKEN, K3sProcs, free_port
from tests.polling import wait_for

pytestmark = pytest.mark.k8s

NEXT_VERSION = "v1.34.3+k3s1"


@pytest.fixture(scope="module")
def cluster(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[K3sProcs]:
    root = tmp_path_factory.mktemp("k3s")
    cluster = K3sProcs(root, binaries)
    server = cluster.start(
        "server", K3S_VERSION, f"--data-dir={root / 'server-data'}",
        f"--https-listen-port={cluster.port}", "--bind-address=127.0.0.1",
        "--node-name=lab-server-1", "--node-ip=127.0.0.1", f"--token={TOKEN}",
        f"--write-kubeconfig={root / 'k3s.yaml'}", "--cluster-init")
    yield cluster
    cluster.stop_all()
    assert server.poll() is not None


@pytest.fixture(scope="module")
def api(cluster: K3sProcs) -> client.ApiClient:
    kubeconfig = cluster.root / "k3s.yaml"
    wait_for("k3s.yaml", kubeconfig.exists, 120)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    wait_for("the API through 6443", lambda: client.VersionApi(api).get_code(), 120)
    return api


def _ready(api: client.ApiClient, name: str) -> Any:
    node = client.CoreV1Api(api).read_node(name)
    ok = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    return node if ok else None


def _agent(cluster: K3sProcs, version: str, token: str = TOKEN) -> subprocess.Popen[bytes]:
    return cluster.start(
        "agent", version, f"--data-dir={cluster.root / 'agent-data'}",
        f"--server=https://127.0.0.1:{cluster.port}", f"--token={token}",
        "--node-name=lab-agent-1", "--node-ip=127.0.0.1")


def test_server_runs_the_real_api_behind_its_front(cluster: K3sProcs, api: Any) -> None:
    assert client.VersionApi(api).get_code().git_version == K3S_VERSION
    server_dir = cluster.root / "server-data" / "server"
    ca = (server_dir / "tls" / "server-ca.crt").read_bytes()
    token = (server_dir / "node-token").read_text().strip()
    assert token == f"K10{hashlib.sha256(ca).hexdigest()}::server:{TOKEN}"
    # kube-apiserver itself listens on https-listen-port + 1, as K3s's 6444
    with socket.create_connection(("127.0.0.1", cluster.port + 1), timeout=5):
        pass
    node = wait_for("the server's Node Ready", lambda: _ready(api, "lab-server-1"), 120)
    assert node.metadata.labels["node-role.kubernetes.io/control-plane"] == "true"
    assert node.status.node_info.kubelet_version == K3S_VERSION


def test_agent_registers_with_its_node_certificate(cluster: K3sProcs, api: Any) -> None:
    agent = _agent(cluster, K3S_VERSION)
    node = wait_for("the agent's Node Ready", lambda: _ready(api, "lab-agent-1"), 120)
    assert "node-role.kubernetes.io/control-plane" not in node.metadata.labels
    assert node.status.node_info.kubelet_version == K3S_VERSION
    lease = wait_for("the agent's Lease", lambda: client.CoordinationV1Api(api)
                  .read_namespaced_lease("lab-agent-1", "kube-node-lease"), 120)
    assert [(o.kind, o.name) for o in lease.metadata.owner_references] == [("Node", "lab-agent-1")]
    cert = (cluster.root / "agent-data" / "agent" / "client-kubelet.crt").read_bytes()
    subject = x509.load_pem_x509_certificate(cert).subject.rfc4514_string()
    assert "CN=system:node:lab-agent-1" in subject and "O=system:nodes" in subject
    # an upgraded agent (another K3s version) reports its version on the same Node
    cluster.stop(agent)
    _agent(cluster, NEXT_VERSION)
    wait_for("kubeletVersion patched", lambda: client.CoreV1Api(api).read_node("lab-agent-1")
          .status.node_info.kubelet_version == NEXT_VERSION, 60)
    wait_for("the upgraded Node Ready", lambda: _ready(api, "lab-agent-1"), 120)


def test_pods_run_on_the_kwok_nodes(cluster: K3sProcs, api: Any) -> None:
    client.AppsV1Api(api).create_namespaced_deployment("default", client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="w", image="x")])))))

    def running() -> bool:
        pods = client.CoreV1Api(api).list_namespaced_pod("default", label_selector="app=web")
        states = [(p.spec.node_name, p.status.phase) for p in pods.items]
        if len(states) == 2 and all(phase == "Running" for _, phase in states):
            return True
        raise AssertionError(f"pods (node, phase): {states}")

    wait_for("2 pods Running", running, 90)


def test_an_agent_with_a_wrong_token_is_refused(cluster: K3sProcs, api: Any) -> None:
    proc = cluster.start(
        "agent", K3S_VERSION, f"--data-dir={cluster.root / 'bad-agent'}",
        f"--server=https://127.0.0.1:{cluster.port}", "--token=wrong-token",
        "--node-name=lab-agent-bad", "--node-ip=127.0.0.1")
    assert proc.wait(60) == 1
    log = next(cluster.root.glob(f"agent-{len(cluster.procs) - 1}.log")).read_text()
    assert "401" in log and "token is not valid" in log


def _writes(cluster: K3sProcs) -> list[dict[str, Any]]:
    log = cluster.root / "server-data" / "server" / "logs" / "audit.log"
    return writes(log.read_text()) if log.exists() else []


def test_crds_of_the_pinned_projects_are_established(cluster: K3sProcs, api: Any) -> None:
    crds = {c.metadata.name: c for c in client.ApiextensionsV1Api(api)
            .list_custom_resource_definition().items}
    for name in ("addons.k3s.cattle.io", "helmcharts.helm.cattle.io",
                 "helmchartconfigs.helm.cattle.io", "applications.argoproj.io",
                 "appprojects.argoproj.io", "backups.velero.io", "restores.velero.io",
                 "schedules.velero.io", "backupstoragelocations.velero.io",
                 "clusters.postgresql.cnpg.io", "databases.postgresql.cnpg.io"):
        assert any(c.type == "Established" and c.status == "True"
                   for c in crds[name].status.conditions), name
    # Velero's own schema: a Restore's phase is one of its enum values (v1.17.1)
    restore = crds["restores.velero.io"].spec.versions[0].schema.open_apiv3_schema
    assert "Completed" in restore.properties["status"].properties["phase"].enum


def test_the_api_answers_on_6443_only_once_the_crds_are_established(cluster: K3sProcs) -> None:
    """Whoever reaches the API finds the CRDs (no window where Application is a 404)."""
    port = free_port()
    data = cluster.root / "crds-first"
    proc = cluster.start(
        "server", K3S_VERSION, f"--data-dir={data}", f"--https-listen-port={port}",
        "--bind-address=127.0.0.1", "--node-name=lab-crds", "--node-ip=127.0.0.1",
        f"--token={TOKEN}", f"--write-kubeconfig={cluster.root / 'k3s-crds.yaml'}")
    wait_for("k3s.yaml", (cluster.root / "k3s-crds.yaml").exists, 60)
    api = config.new_client_from_config(config_file=str(cluster.root / "k3s-crds.yaml"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            client.VersionApi(api).get_code()
        except Exception:  # noqa: BLE001 - 6443 not open yet
            time.sleep(0.1)
            continue
        break
    found = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications")  # the first call: no 404
    assert found["items"] == []
    cluster.stop(proc)


def test_manifests_applied_once_per_content_recorded_by_addon(
    cluster: K3sProcs, api: Any
) -> None:
    manifests = cluster.root / "server-data" / "server" / "manifests"
    custom = client.CustomObjectsApi(api)
    doc = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: demo, namespace: default}
data: {colour: %s}
---
apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata: {name: demo, namespace: kube-system}
spec: {chart: demo, repo: https://charts.invalid/, version: 1.0.0}
"""
    (manifests / "demo.app.yaml").write_text(doc % "blue")
    (manifests / "skipped.yaml").write_text(doc.replace("demo", "skipped") % "red")
    (manifests / "skipped.yaml.skip").write_text("")

    def addon() -> Any:
        found = custom.get_namespaced_custom_object("k3s.cattle.io", "v1", "kube-system",
                                                    "addons", "demo")
        return found if found.get("spec", {}).get("checksum") else None

    first = wait_for("the Addon of demo.app.yaml", addon, 60)
    assert first["spec"]["source"] == str(manifests / "demo.app.yaml")
    assert first["spec"]["checksum"] == hashlib.sha256(
        (doc % "blue").encode()).hexdigest()
    core = client.CoreV1Api(api)
    assert core.read_namespaced_config_map("demo", "default").data == {"colour": "blue"}
    chart = custom.get_namespaced_custom_object("helm.cattle.io", "v1", "kube-system",
                                                "helmcharts", "demo")
    assert chart["spec"]["version"] == "1.0.0"
    assert not [c for c in core.list_namespaced_config_map("default").items
                if c.metadata.name == "skipped"]

    supervisor = [w for w in _writes(cluster) if w["user"] == "system:k3s-supervisor"
                  and w["kind"] in ("ConfigMap", "HelmChart")]
    assert {(w["kind"], w["name"]) for w in supervisor} == {("ConfigMap", "demo"),
                                                           ("HelmChart", "demo")}
    count = len(_writes(cluster))
    time.sleep(5)  # two more passes of the deploy controller: same checksum, nothing applied
    assert not [w for w in _writes(cluster)[count:] if w["user"] == "system:k3s-supervisor"]

    (manifests / "demo.app.yaml").write_text(doc % "green")
    wait_for("the changed manifest applied", lambda: core.read_namespaced_config_map(
        "demo", "default").data == {"colour": "green"}, 60)
    wait_for("the Addon's new checksum", lambda: addon()["spec"]["checksum"] == hashlib.sha256(
        (doc % "green").encode()).hexdigest(), 30)


def test_write_log_from_the_audit_log(cluster: K3sProcs, api: Any) -> None:
    core = client.CoreV1Api(api)
    wait_for("the server's Node Ready", lambda: _ready(api, "lab-server-1"), 120)
    start = len(_writes(cluster))
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="audited"), data={"a": "1"}))
    core.patch_namespaced_config_map("audited", "default", {"data": {"a": "1"}})  # no change
    core.patch_namespaced_config_map("audited", "default", {"data": {"a": "2"}})
    core.patch_node("lab-server-1", {"spec": {"unschedulable": True}})
    core.patch_node("lab-server-1", {"spec": {"unschedulable": True}})  # already cordoned
    core.patch_node("lab-server-1", {"spec": {"unschedulable": None}})
    core.delete_namespaced_config_map("audited", "default")
    ours = wait_for("the writes in the audit log", lambda: [
        (w["verb"], w["kind"], w["name"], w["changed"])
        for w in _writes(cluster)[start:] if w["user"] == "system:admin"] or None, 30)
    assert ours == [
        ("create", "ConfigMap", "audited", True),
        ("patch", "ConfigMap", "audited", False),
        ("patch", "ConfigMap", "audited", True),
        ("patch", "Node", "lab-server-1", True),
        ("patch", "Node", "lab-server-1", False),
        ("patch", "Node", "lab-server-1", True),
        ("delete", "ConfigMap", "audited", True),
    ]
    # a kubelet (the agent's registration, kwok) writes its Node's status as system:node:<name>
    assert ("system:node:lab-agent-1", "status") in {
        (w["user"], w["subresource"]) for w in _writes(cluster) if w["kind"] == "Node"}


def test_a_second_server_joins_on_the_real_api(cluster: K3sProcs, api: Any) -> None:
    port = free_port()
    data = cluster.root / "server2-data"
    joined = cluster.start(
        "server", K3S_VERSION, f"--data-dir={data}", f"--https-listen-port={port}",
        "--bind-address=127.0.0.1", "--node-name=lab-server-2", "--node-ip=127.0.0.1",
        f"--server=https://127.0.0.1:{cluster.port}", f"--token={TOKEN}",
        f"--write-kubeconfig={cluster.root / 'k3s-2.yaml'}")
    wait_for("the joined server's k3s.yaml", (cluster.root / "k3s-2.yaml").exists, 120)
    second = config.new_client_from_config(config_file=str(cluster.root / "k3s-2.yaml"))
    wait_for("the joined server's API", lambda: client.VersionApi(second).get_code(), 120)
    node = wait_for("the joined server's Node Ready", lambda: _ready(api, "lab-server-2"), 120)
    assert node.metadata.labels["node-role.kubernetes.io/control-plane"] == "true"
    # one cluster: what one server's API writes, the other's reads
    client.CoreV1Api(api).create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="shared"), data={"from": "server-1"}))
    assert client.CoreV1Api(second).read_namespaced_config_map(
        "shared", "default").data == {"from": "server-1"}
    first_dir = cluster.root / "server-data" / "server"
    assert (data / "server" / "node-token").read_text() == (
        first_dir / "node-token").read_text()
    assert (data / "server" / "tls" / "service.key").read_bytes() == (
        first_dir / "tls" / "service.key").read_bytes()
    assert joined.poll() is None
    # a token the cluster does not know
    bad = cluster.start(
        "server", K3S_VERSION, f"--data-dir={cluster.root / 'server3-data'}",
        f"--https-listen-port={free_port()}", "--bind-address=127.0.0.1",
        "--node-name=lab-server-3", f"--server=https://127.0.0.1:{cluster.port}",
        "--token=K10::server:wrong")
    assert bad.wait(60) == 1
    log = (cluster.root / f"server-{len(cluster.procs) - 1}.log").read_text()
    assert "token is not valid" in log
    cluster.stop(joined)


def test_snapshot_then_cluster_reset_restores_it(cluster: K3sProcs, api: Any) -> None:
    data = cluster.root / "server-data"
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="before-snapshot")))
    saved = cluster.run("etcd-snapshot", "save", f"--data-dir={data}", "--name=pre",
                 "--node-name=lab-server-1")
    assert saved.returncode == 0, saved.stderr
    listed = cluster.run("etcd-snapshot", "ls", f"--data-dir={data}")
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert len(names) == 1 and names[0].startswith("pre-lab-server-1-"), listed.stdout
    snapshot = data / "server" / "db" / "snapshots" / names[0]
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="after-snapshot")))

    cluster.stop(cluster.procs[0])  # the first server
    refused = cluster.run("server", f"--data-dir={data}", "--cluster-reset",
                   "--server=https://127.0.0.1:1")
    assert refused.returncode == 1
    assert ("cannot perform cluster-reset while server URL is set - remove server from "
            "configuration before resetting") in refused.stderr
    reset = cluster.run("server", f"--data-dir={data}", "--cluster-reset",
                 f"--cluster-reset-restore-path={snapshot}")
    assert reset.returncode == 0, reset.stderr
    assert "Managed etcd cluster membership has been reset" in reset.stderr

    cluster.start(
        "server", K3S_VERSION, f"--data-dir={data}", f"--https-listen-port={cluster.port}",
        "--bind-address=127.0.0.1", "--node-name=lab-server-1", "--node-ip=127.0.0.1",
        f"--token={TOKEN}", f"--write-kubeconfig={cluster.root / 'k3s.yaml'}", "--cluster-init")
    wait_for("the restored API", lambda: client.VersionApi(api).get_code(), 120)
    names_now = wait_for("the restored ConfigMaps", lambda: {
        c.metadata.name for c in core.list_namespaced_config_map("default").items}, 60)
    assert "before-snapshot" in names_now and "after-snapshot" not in names_now


def _processes_under(directory: Path) -> list[str]:
    """Command lines of running processes that name ``directory`` (the test's own programs)."""
    return [argv[:120] for argv in hosts.processes(str(directory)).values()]


def test_a_server_stopped_while_starting_leaves_no_component_running(cluster: K3sProcs) -> None:
    data = cluster.root / "short-lived"
    proc = cluster.start(
        "server", K3S_VERSION, f"--data-dir={data}", f"--https-listen-port={free_port()}",
        "--bind-address=127.0.0.1", "--node-name=lab-short", "--node-ip=127.0.0.1",
        f"--token={TOKEN}", f"--write-kubeconfig={cluster.root / 'k3s-short.yaml'}")
    apiserver_log = data / "server" / "logs" / "kube-apiserver.log"
    wait_for("kube-apiserver started", apiserver_log.exists, 60)
    os.kill(proc.pid, signal.SIGTERM)  # still starting: kine and kube-apiserver are up
    proc.wait(60)
    deadline = time.monotonic() + 30
    while _processes_under(data) and time.monotonic() < deadline:
        time.sleep(1)
    assert _processes_under(data) == []
