"""The stand-in ``k3s server``/``k3s agent`` on the real control plane inside lab hosts.

On a fresh lab (1 server + 1 agent) the built binaries are bound read-only into every host
(``/opt/k3sfleet-standin/go``). The server host runs the stand-in ``k3s server`` (the zipapp
the lab's k3s mirror serves): kine + kube-apiserver + kube-controller-manager +
kube-scheduler behind K3s's 6443 on its lab address. The agent host runs
``k3s agent --server https://<server>:6443`` over the lab network: it takes its node
certificate from the server and plays its kubelet with kwok. The test reads it all through the
k3s.yaml the server wrote. Each host process runs in a transient systemd unit, stopped at the
end.

Skipped with the reason when the lab cannot run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client, config

from k3sfleet.lab import Lab, LabHost
from k3sfleet.lab.artifacts import build_k3s_executable
from k3sfleet.lab.controlplane import K3S_VERSION, host_binaries
from k3sfleet.lab.standins.k3s.controlplane import PROGRAMS
from tests.polling import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.k8s]

TOKEN = "lab-real-api-token"


def _put(lab: Lab, host: LabHost, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write a root-owned file into ``host``'s running root (its overlay, from the machine)."""
    target = lab.host_dir(host) / "root" / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)


def _run(lab: Lab, host: LabHost, command: str) -> str:
    rc, out, err = lab.ssh(host, command)
    assert rc == 0, f"{host.name}: {command!r} -> {rc}\n{out}\n{err}"
    return out



@pytest.fixture(scope="module")
def real_lab(lab_factory: Callable[..., Lab]) -> Iterator[Lab]:
    lab = lab_factory(servers=1, agents=1)
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def api(real_lab: Lab) -> Iterator[client.ApiClient]:
    lab = real_lab
    server, agent = lab.servers[0], lab.agents[0]
    for host in (server, agent):
        _put(lab, host, "/usr/local/bin/k3s", build_k3s_executable(K3S_VERSION), 0o755)
    _run(lab, server, f"sudo systemd-run --unit=lab-k3s --collect /usr/local/bin/k3s server "
                      f"--node-ip={server.public_ip} --token={TOKEN}")
    k3s_yaml = lab.host_dir(server) / "root/etc/rancher/k3s/k3s.yaml"
    wait_for("the server's k3s.yaml", k3s_yaml.exists, 180)
    kubeconfig = yaml.safe_load(k3s_yaml.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://{server.public_ip}:6443"
    api = config.new_client_from_config_dict(kubeconfig)
    wait_for("the API through the server's 6443", lambda: client.VersionApi(api).get_code(), 180)
    _run(lab, agent, f"sudo systemd-run --unit=lab-k3s --collect /usr/local/bin/k3s agent "
                     f"--server=https://{server.public_ip}:6443 --token={TOKEN} "
                     f"--node-ip={agent.public_ip}")
    yield api
    for host in (agent, server):
        lab.ssh(host, "sudo systemctl stop lab-k3s")


def test_api_in_the_server_host_reports_the_k3s_version(real_lab: Lab, api: Any) -> None:
    assert client.VersionApi(api).get_code().git_version == K3S_VERSION
    server = real_lab.servers[0]
    processes = _run(real_lab, server, "ps -o comm= --ppid $(systemctl show -p MainPID "
                                       "--value lab-k3s)")
    for program in (*PROGRAMS, "kwok"):
        assert program[:15] in processes  # comm is cut at 15 characters
    node = wait_for("the server's Node Ready", lambda: _ready(api, server.name), 90)
    assert node.metadata.labels["node-role.kubernetes.io/control-plane"] == "true"
    # kubernetes Service endpoints point at the server's lab address, not loopback
    endpoints = client.CoreV1Api(api).read_namespaced_endpoints("kubernetes", "default")
    assert [a.ip for s in endpoints.subsets for a in s.addresses] == [server.public_ip]


def _ready(api: Any, name: str) -> Any:
    node = client.CoreV1Api(api).read_node(name)
    ok = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    return node if ok else None


def test_agent_node_ready_and_runs_scheduled_pods(real_lab: Lab, api: Any) -> None:
    agent = real_lab.agents[0]
    nodes = {agent.name, real_lab.servers[0].name}  # K3s servers are schedulable too
    core = client.CoreV1Api(api)
    node = wait_for("the agent's Node Ready", lambda: _ready(api, agent.name), 120)
    assert node.status.node_info.kubelet_version == K3S_VERSION
    # the agent's kwok speaks as the node, with the certificate the server issued it
    cert = (real_lab.host_dir(agent) / "root/var/lib/rancher/k3s/agent/client-kubelet.crt")
    subject = x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()
    assert f"CN=system:node:{agent.name}" in subject
    client.AppsV1Api(api).create_namespaced_deployment("default", client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="w", image="x")]),
            ),
        ),
    ))

    def running() -> list[Any]:
        pods = core.list_namespaced_pod("default", label_selector="app=web").items
        ok = len(pods) == 2 and all(
            p.spec.node_name in nodes and p.status.phase == "Running" for p in pods
        )
        return pods if ok else []

    wait_for("2 pods Running on the lab's Nodes", running, 120)


def test_binaries_are_read_only_in_hosts(real_lab: Lab) -> None:
    host = real_lab.agents[0]
    rc, _, err = real_lab.ssh(host, f"sudo touch {host_binaries().path('kine').parent}/x")
    assert rc != 0 and "Read-only file system" in err
