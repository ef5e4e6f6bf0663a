"""The real control plane inside lab hosts: the first step of moving the lab onto it.

On a fresh lab (1 server + 1 agent) the built binaries are bound read-only into every host
(``/opt/k3sfleet-standin/go``). The server host runs kine + kube-apiserver +
kube-controller-manager + kube-scheduler with the stand-in's launcher
(``standins/k3s/controlplane.py``, from the same zipapp the lab's k3s mirror serves) on its
lab address, port 6443; the agent host runs kwok for its own Node over the lab network, as its
kubelet would. The test reads it all through the API from the machine. Each host process runs
in a transient systemd unit, stopped at the end.

Skipped with the reason when the lab cannot run or the binaries are not built.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config

from k3sfleet.lab import Lab, LabHost
from k3sfleet.lab.artifacts import build_k3s_executable
from k3sfleet.lab.controlplane import K3S_VERSION, host_binaries
from k3sfleet.lab.standins import RUNTIME_PYTHON
from k3sfleet.lab.standins.k3s.controlplane import PROGRAMS

pytestmark = [pytest.mark.lab, pytest.mark.k8s]

LIB = "/usr/local/lib/k3sfleet-lab-test"
SERVER_DIR = "/var/lib/lab-real-api/server"

# Runs in the server host: the launcher until SIGTERM, then every component stopped by PID.
DRIVER = """\
import json, signal, sys, threading
from pathlib import Path
sys.path.insert(0, "{lib}/k3s.pyz")
from k3s_standin.controlplane import ControlPlane
spec = json.loads(sys.argv[1])
plane = ControlPlane({{k: Path(v) for k, v in spec["binaries"].items()}}, Path(spec["dir"]),
                     bind_address=spec["address"], port=6443)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
plane.start()
print("ready", plane.pids(), flush=True)
stop.wait()
plane.stop()
"""


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


def _wait(what: str, probe: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as err:  # noqa: BLE001 - the API may not answer yet
            last = err
        else:
            if last:
                return last
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def real_lab(lab_factory: Callable[..., Lab]) -> Iterator[Lab]:
    lab = lab_factory(servers=1, agents=1)
    if not lab._binds:
        lab.down()
        pytest.skip("real control plane not built: run scripts/setup.sh")
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def api(real_lab: Lab) -> Iterator[client.ApiClient]:
    lab = real_lab
    server, agent = lab.servers[0], lab.agents[0]
    binaries = host_binaries()
    _put(lab, server, f"{LIB}/k3s.pyz", build_k3s_executable(K3S_VERSION))
    _put(lab, server, f"{LIB}/driver.py", DRIVER.format(lib=LIB).encode())
    spec = {
        "binaries": {p: str(binaries.path(p)) for p in PROGRAMS},
        "dir": SERVER_DIR,
        "address": server.public_ip,
    }
    _run(lab, server, f"sudo systemd-run --unit=lab-real-api --collect {RUNTIME_PYTHON} "
                      f"{LIB}/driver.py '{json.dumps(spec)}'")
    # the launcher prints "ready" once /readyz answers ok and every component runs
    _wait("the control plane ready on the server host",
          lambda: "ready {" in _run(lab, server, "sudo journalctl -u lab-real-api -o cat"), 180)
    kubeconfig = lab.host_dir(server) / "root" / SERVER_DIR.lstrip("/") / "cred/admin.kubeconfig"
    api = config.new_client_from_config(config_file=str(kubeconfig))
    # The agent plays its kubelet with kwok, reaching the API over the lab network.
    _put(lab, agent, "/etc/k3sfleet-lab-test/kubeconfig", kubeconfig.read_bytes(), 0o600)
    client.CoreV1Api(api).create_node(client.V1Node(
        metadata=client.V1ObjectMeta(name=agent.name,
                                     labels={"kubernetes.io/hostname": agent.name}),
    ))
    stages = " ".join(f"--config={p}" for p in binaries.kwok_stages)
    _run(lab, agent, f"sudo systemd-run --unit=lab-kwok --collect {binaries.path('kwok')} "
                     f"--kubeconfig=/etc/k3sfleet-lab-test/kubeconfig "
                     f"--manage-single-node={agent.name} --node-lease-duration-seconds=40 "
                     f"{stages}")
    yield api
    for host, unit in ((agent, "lab-kwok"), (server, "lab-real-api")):
        lab.ssh(host, f"sudo systemctl stop {unit}")


def test_api_in_the_server_host_reports_the_k3s_version(real_lab: Lab, api: Any) -> None:
    assert client.VersionApi(api).get_code().git_version == K3S_VERSION
    server = real_lab.servers[0]
    processes = _run(real_lab, server, "systemctl show -p MainPID --value lab-real-api; "
                                       "ps -o comm= --ppid $(systemctl show -p MainPID "
                                       "--value lab-real-api)")
    for program in PROGRAMS:
        assert program[:15] in processes  # comm is cut at 15 characters
    # kubernetes Service endpoints point at the server's lab address, not loopback
    endpoints = client.CoreV1Api(api).read_namespaced_endpoints("kubernetes", "default")
    assert [a.ip for s in endpoints.subsets for a in s.addresses] == [server.public_ip]


def test_agent_node_ready_and_runs_scheduled_pods(real_lab: Lab, api: Any) -> None:
    agent = real_lab.agents[0]
    core = client.CoreV1Api(api)
    _wait("the agent's Node Ready", lambda: any(
        c.type == "Ready" and c.status == "True"
        for c in (core.read_node(agent.name).status.conditions or [])
    ))
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
            p.spec.node_name == agent.name and p.status.phase == "Running" for p in pods
        )
        return pods if ok else []

    _wait("2 pods Running on the agent", running, 120)


def test_binaries_are_read_only_in_hosts(real_lab: Lab) -> None:
    host = real_lab.agents[0]
    rc, _, err = real_lab.ssh(host, f"sudo touch {host_binaries().path('kine').parent}/x")
    assert rc != 0 and "Read-only file system" in err
