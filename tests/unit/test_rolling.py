"""The rolling engine against a small in-memory CoreV1Api (nodes, pods, evictions, PDBs); against
the real Kubernetes API: tests/k8s/test_rolling_api.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from k3sfleet import rolling
from k3sfleet.errors import K3sfleetError
from k3sfleet.rolling import (
    CORDON_ANNOTATION,
    NodeActionFailed,
    RollingEngine,
    RollingFailed,
    RollingTarget,
    kubelet_version,
    order,
)

V1, V2 = "v1.33.6+k3s1", "v1.34.2+k3s1"


class FakeCore:
    """Just the CoreV1Api calls the engine makes, with a write log like the stand-in API's."""

    def __init__(self, names: dict[str, str]) -> None:
        self.nodes: dict[str, client.V1Node] = {}
        for name, role in names.items():
            labels = {"kubernetes.io/hostname": name}
            if role == "server":
                labels["node-role.kubernetes.io/control-plane"] = "true"
                labels["node-role.kubernetes.io/etcd"] = "true"
            self.nodes[name] = client.V1Node(
                metadata=client.V1ObjectMeta(name=name, labels=labels, annotations={}),
                spec=client.V1NodeSpec(unschedulable=None),
                status=client.V1NodeStatus(
                    conditions=[client.V1NodeCondition(type="Ready", status="True")],
                    node_info=client.V1NodeSystemInfo(
                        kubelet_version=V1,
                        architecture="amd64",
                        boot_id="b",
                        container_runtime_version="c",
                        kernel_version="k",
                        kube_proxy_version="",
                        machine_id="m",
                        operating_system="linux",
                        os_image="debian",
                        system_uuid="u",
                    ),
                ),
            )
        self.pods: dict[tuple[str, str], client.V1Pod] = {}
        self.log: list[tuple[str, str, Any]] = []
        self.pdb_blocks: dict[str, int] = {}  # pod name -> how many evictions answer 429
        self.unschedulable_max = 0

    def add_pod(self, ns: str, name: str, node: str, owner: str | None = None, **kw: Any) -> None:
        refs = (
            [client.V1OwnerReference(kind=owner, name="x", api_version="apps/v1", uid="u")]
            if owner
            else None
        )
        self.pods[(ns, name)] = client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=ns,
                owner_references=refs,
                annotations=kw.get("annotations"),
            ),
            spec=client.V1PodSpec(node_name=node, containers=[]),
            status=client.V1PodStatus(phase="Running"),
        )

    # -- API surface -------------------------------------------------------------------------
    def list_node(self) -> client.V1NodeList:
        return client.V1NodeList(items=list(self.nodes.values()))

    def read_node(self, name: str) -> client.V1Node:
        if name not in self.nodes:
            raise ApiException(status=404, reason="Not Found")
        return self.nodes[name]

    def patch_node(self, name: str, body: dict[str, Any]) -> client.V1Node:
        node = self.nodes[name]
        for key, value in body.get("metadata", {}).get("annotations", {}).items():
            if value is None:
                node.metadata.annotations.pop(key, None)
            else:
                node.metadata.annotations[key] = value
        if "unschedulable" in body.get("spec", {}):
            node.spec.unschedulable = body["spec"]["unschedulable"]
        self.log.append(("patch", name, body))
        count = sum(1 for n in self.nodes.values() if n.spec.unschedulable)
        self.unschedulable_max = max(self.unschedulable_max, count)
        return node

    def list_pod_for_all_namespaces(self, field_selector: str) -> client.V1PodList:
        node = field_selector.split("=", 1)[1]
        return client.V1PodList(items=[p for p in self.pods.values() if p.spec.node_name == node])

    def create_namespaced_pod_eviction(self, name: str, namespace: str, body: Any) -> None:
        assert body.metadata.name == name and body.metadata.namespace == namespace
        if self.pdb_blocks.get(name, 0) > 0:
            self.pdb_blocks[name] -= 1
            self.log.append(("evict-429", name, namespace))
            raise ApiException(status=429, reason="Too Many Requests")
        self.log.append(("evict", name, namespace))
        del self.pods[(namespace, name)]

    def delete_namespaced_pod(self, name: str, namespace: str) -> None:
        self.log.append(("delete", name, namespace))
        del self.pods[(namespace, name)]

    # -- helpers -----------------------------------------------------------------------------
    def set_version(self, name: str, version: str) -> None:
        self.nodes[name].status.node_info.kubelet_version = version

    def set_ready(self, name: str, ready: bool) -> None:
        self.nodes[name].status.conditions[0].status = "True" if ready else "False"

    def node_events(self, name: str) -> list[str]:
        events = []
        for kind, who, body in self.log:
            if kind == "patch" and who == name:
                events.append("cordon" if body["spec"]["unschedulable"] else "uncordon")
            elif kind == "action" and who == name:
                events.append("action")
        return events


TARGETS = [
    RollingTarget("server-1", "server"),
    RollingTarget("agent-1", "agent"),
    RollingTarget("agent-2", "agent"),
]


class FakeTime:
    """The clock the engine reads, moved on only by the engine's own sleeps: timeouts pass at
    once."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def in_memory_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """``FakeCore`` reaches the engine the way a cluster does, through the kubernetes client's
    ``CoreV1Api(api_client)``; the engine's clock is a ``FakeTime``."""
    real = client.CoreV1Api
    monkeypatch.setattr(
        client, "CoreV1Api", lambda api=None: api if isinstance(api, FakeCore) else real(api)
    )
    monkeypatch.setattr(rolling, "time", FakeTime())


def make_engine(core: FakeCore, action: Any = None, **kw: Any) -> RollingEngine:
    def upgrade(names: Any) -> None:
        for name in names:
            core.log.append(("action", name, None))
            core.set_version(name, V2)
            core.set_ready(name, True)

    return RollingEngine(
        core,
        kw.pop("targets", TARGETS),
        action=action or upgrade,
        needs_action=lambda t, node: kubelet_version(node) != V2,
        action_name="upgrade",
        target_version=V2,
        **kw,
    )


def fake() -> FakeCore:
    return FakeCore({"server-1": "server", "agent-1": "agent", "agent-2": "agent"})


def test_order_servers_first_then_agent_batches() -> None:
    targets = [
        RollingTarget(n, r)
        for n, r in [
            ("a1", "agent"),
            ("s1", "server"),
            ("a2", "agent"),
            ("s2", "server"),
            ("a3", "agent"),
        ]
    ]
    assert [[t.name for t in b] for b in order(targets, 2)] == [
        ["s1"],
        ["s2"],
        ["a1", "a2"],
        ["a3"],
    ]
    assert [[t.name for t in b] for b in order(targets)] == [["s1"], ["s2"], ["a1"], ["a2"], ["a3"]]
    with pytest.raises(K3sfleetError):
        order(targets, 0)


def test_upgrade_rolls_one_node_at_a_time_and_rerun_does_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    core = fake()
    core.add_pod("apps", "web-1", "agent-1", owner="ReplicaSet")
    core.add_pod("kube-system", "svclb-1", "agent-1", owner="DaemonSet")
    core.add_pod(
        "kube-system", "kube-proxy", "agent-1", annotations={"kubernetes.io/config.mirror": "x"}
    )
    engine = make_engine(core)
    engine.run()
    lines = capsys.readouterr().out.splitlines()
    assert all(kubelet_version(n) == V2 for n in core.nodes.values())
    assert core.unschedulable_max == 1
    for name in ("server-1", "agent-1", "agent-2"):
        assert core.node_events(name) == ["cordon", "action", "uncordon"]
        assert not core.nodes[name].spec.unschedulable
        assert CORDON_ANNOTATION not in core.nodes[name].metadata.annotations
    # servers first, then agents in inventory order
    actions = [who for kind, who, _ in core.log if kind == "action"]
    assert actions == ["server-1", "agent-1", "agent-2"]
    # the DaemonSet and mirror pods stay, the ReplicaSet pod was evicted
    assert ("evict", "web-1", "apps") in core.log
    assert set(core.pods) == {("kube-system", "svclb-1"), ("kube-system", "kube-proxy")}
    assert any(line.startswith("  agent-1: drained 1 pod(s) (") for line in lines)

    writes = len(core.log)
    engine2 = make_engine(core)
    plan = engine2.plan()
    assert [n.status for n in plan.nodes] == ["done", "done", "done"]
    engine2.run()
    lines2 = capsys.readouterr().out.splitlines()
    assert len(core.log) == writes
    assert "Nothing to do" in "\n".join(lines2)


def test_agents_in_batches() -> None:
    core = fake()
    engine = make_engine(core, agent_batch=2)
    engine.run()
    # the two agents are cordoned together, after the server was uncordoned
    kinds = [(k, w) for k, w, b in core.log if k in ("patch", "action")]
    assert kinds.index(("action", "server-1")) < kinds.index(("patch", "agent-1"))
    assert core.unschedulable_max == 2


def test_pdb_is_honoured_until_it_allows_eviction() -> None:
    core = fake()
    core.add_pod("db", "pg-0", "agent-1", owner="StatefulSet")
    core.pdb_blocks["pg-0"] = 3
    engine = make_engine(core)
    engine.run()
    evictions = [k for k, w, _ in core.log if w == "pg-0"]
    assert evictions == ["evict-429"] * 3 + ["evict"]
    assert not any(k == "delete" for k, _, _ in core.log)


def test_drain_timeout_stops_without_force_and_later_nodes_untouched() -> None:
    core = fake()
    core.add_pod("db", "pg-0", "agent-1", owner="StatefulSet")
    core.pdb_blocks["pg-0"] = 10_000
    engine = make_engine(core, drain_timeout=30)
    with pytest.raises(RollingFailed) as e:
        engine.run()
    assert e.value.node == "agent-1" and e.value.step == "drain"
    assert "db/pg-0 (disruption budget)" in str(e.value)
    assert "agent-2" in e.value.next_step
    assert "cordoned by k3sfleet" in e.value.state
    assert core.node_events("agent-2") == []
    assert not core.nodes["agent-2"].spec.unschedulable
    assert kubelet_version(core.nodes["agent-2"]) == V1
    assert ("db", "pg-0") in core.pods  # never deleted without permission


def test_drain_timeout_with_force_deletes(capsys: pytest.CaptureFixture[str]) -> None:
    core = fake()
    core.add_pod("db", "pg-0", "agent-1", owner="StatefulSet")
    core.pdb_blocks["pg-0"] = 10_000
    engine = make_engine(core, drain_timeout=30, drain_force=True)
    engine.run()
    lines = capsys.readouterr().out.splitlines()
    assert ("delete", "pg-0", "db") in core.log
    assert any("forced" in line for line in lines)


def test_failed_action_stops_and_rerun_resumes() -> None:
    core = fake()

    def broken(names: Any) -> None:
        for name in names:
            if name == "agent-1":
                raise NodeActionFailed({name: "sha256 checksum mismatch for k3s"})
            core.log.append(("action", name, None))
            core.set_version(name, V2)

    engine = make_engine(core, action=broken)
    with pytest.raises(RollingFailed) as e:
        engine.run()
    message = str(e.value)
    assert "stopped at node agent-1, step upgrade" in message
    assert "checksum mismatch" in message
    assert "re-run" in message
    assert kubelet_version(core.nodes["server-1"]) == V2
    assert kubelet_version(core.nodes["agent-2"]) == V1
    assert core.node_events("agent-2") == []
    assert core.nodes["agent-1"].spec.unschedulable  # left cordoned by us, reported

    # fault removed: the re-run skips the server and resumes at agent-1
    engine2 = make_engine(core)
    plan = engine2.plan()
    assert [n.status for n in plan.nodes] == ["done", "to do", "to do"]
    engine2.run()
    assert all(kubelet_version(n) == V2 for n in core.nodes.values())
    assert not any(n.spec.unschedulable for n in core.nodes.values())
    assert [w for k, w, _ in core.log if k == "action"] == ["server-1", "agent-1", "agent-2"]


def test_left_cordoned_after_action_is_finished_on_rerun() -> None:
    core = fake()
    engine = make_engine(core, ready_timeout=10)

    def upgrade_but_not_ready(names: Any) -> None:
        for name in names:
            core.set_version(name, V2)
            core.set_ready(name, False)

    engine.action = upgrade_but_not_ready
    with pytest.raises(RollingFailed) as e:
        engine.run()
    assert e.value.step == "wait Ready" and e.value.node == "server-1"
    assert "NotReady" in e.value.state
    core.set_ready("server-1", True)
    engine2 = make_engine(core)
    plan = engine2.plan()
    assert plan.nodes[0].status == "finish"
    engine2.run()
    assert not core.nodes["server-1"].spec.unschedulable


def test_human_cordon_is_kept() -> None:
    core = fake()
    core.nodes["agent-2"].spec.unschedulable = True  # kubectl cordon, no annotation
    engine = make_engine(core)
    plan = engine.plan()
    assert "cordoned by a human" in plan.render()
    engine.run()
    assert core.nodes["agent-2"].spec.unschedulable
    assert kubelet_version(core.nodes["agent-2"]) == V2
    assert core.node_events("agent-2") == ["action"]
    assert not core.nodes["agent-1"].spec.unschedulable


def test_health_gate_refuses_when_a_node_is_not_ready() -> None:
    core = fake()
    core.set_ready("agent-2", False)
    engine = make_engine(core)
    with pytest.raises(RollingFailed) as e:
        engine.run()
    assert e.value.step == "health gate"
    assert "agent-2" in e.value.reason
    assert core.log == []


def test_health_gate_checks_etcd_membership_with_several_servers() -> None:
    core = FakeCore({"s1": "server", "s2": "server", "a1": "agent"})
    del core.nodes["s2"].metadata.labels["node-role.kubernetes.io/etcd"]
    targets = [
        RollingTarget("s1", "server"),
        RollingTarget("s2", "server"),
        RollingTarget("a1", "agent"),
    ]
    engine = make_engine(core, targets=targets)
    with pytest.raises(RollingFailed, match="etcd membership"):
        engine.run()


def test_dry_plan_names_order_and_done_nodes() -> None:
    core = fake()
    core.set_version("server-1", V2)
    engine = make_engine(core)
    text = engine.plan().render()
    assert text.index("server-1") < text.index("agent-1") < text.index("agent-2")
    assert "server-1 (server): already done" in text
    assert "agent-1 (agent): to do" in text
    assert core.log == []


def test_unknown_inventory_node_is_refused() -> None:
    core = fake()
    targets = [*TARGETS, RollingTarget("ghost", "agent")]
    engine = make_engine(core, targets=targets)
    with pytest.raises(K3sfleetError, match="ghost"):
        engine.plan()


# -- the node actions, through the pyinfra Python API on @fake hosts ---------------------------


def fake_inventory(role: str = "server", **responses: Any) -> Any:
    import re

    from pyinfra.api import Inventory

    data = {
        "k3s_version": V2,
        "k3s_release_url": "http://10.123.0.1:8080/k3s",
        "k3s_role": role,
        "common_journald_max_use": "500M",
        "maintenance_upgrade": responses.pop("maintenance_upgrade", "all"),
        "fake_delay": 0,
        "fake_delay_jitter": 0,
        "fake_responses": {
            **{re.compile(k): v for k, v in responses.items()},
            "k3s --version": f"k3s version {V1} (1234abcd)",
            "uname -m": "x86_64",
            "SubState k3s.service": ["Id=k3s.service", "SubState=running"],
            "SubState k3s-agent.service": ["Id=k3s-agent.service", "SubState=running"],
        },
    }
    group = "k3s_servers" if role == "server" else "k3s_agents"
    return Inventory(([("@fake/node-1", data)], {}), **{group: (["@fake/node-1"], {})})


def commands(state: Any) -> list[str]:
    return [c for h in state.inventory for c in h.connector.executed_commands]


@pytest.mark.parametrize("role,service", [("server", "k3s"), ("agent", "k3s-agent")])
def test_k3s_upgrade_installs_through_the_cluster_install_code(role: str, service: str) -> None:
    from k3sfleet.deploys.k3s_upgrade import k3s_upgrade
    from k3sfleet.rolling import StateRunner

    state = StateRunner(fake_inventory(role)).deploy(["@fake/node-1"], k3s_upgrade)
    ran = commands(state)
    install = next(c for c in ran if "curl" in c)
    assert "http://10.123.0.1:8080/k3s/v1.34.2%2Bk3s1/k3s" in install
    assert "sha256sum-amd64.txt" in install and "checksum mismatch" in install
    restart = [c for c in ran if c.startswith("systemctl") and "show" not in c]
    assert restart == [f"systemctl restart {service}.service"]
    assert ran.index(install) < ran.index(restart[0])


def test_k3s_upgrade_failure_names_the_operation_and_the_error() -> None:
    from k3sfleet.deploys.k3s_upgrade import k3s_upgrade
    from k3sfleet.rolling import StateRunner

    inventory = fake_inventory(
        **{
            "curl": {
                "success": False,
                "stderr": f"k3sfleet: checksum mismatch for k3s {V2}: expected aa, got bb",
            }
        }
    )
    with pytest.raises(NodeActionFailed) as e:
        StateRunner(inventory).deploy(["@fake/node-1"], k3s_upgrade)
    reason = e.value.failures["@fake/node-1"]
    assert "Install k3s v1.34.2+k3s1" in reason
    assert "checksum mismatch" in reason


@pytest.mark.parametrize("mode,expected", [("all", "dist-upgrade"), ("security", "unattended")])
def test_os_maintenance_commands(mode: str, expected: str) -> None:
    from k3sfleet.deploys.os_maintenance import os_maintenance
    from k3sfleet.rolling import StateRunner

    state = StateRunner(fake_inventory(maintenance_upgrade=mode)).deploy(
        ["@fake/node-1"], os_maintenance
    )
    ran = commands(state)
    upgrade = [c for c in ran if "upgrade" in c and "apt-get update" not in c]
    assert upgrade and expected in upgrade[0]
    assert ("dist-upgrade" in " ".join(ran)) == (mode == "all")
    assert "journalctl --vacuum-size=500M" in ran
    assert any("test -e /var/run/reboot-required" in c for c in ran)  # checked at execute time
    assert not any(c.startswith(("reboot", "systemctl reboot", "shutdown")) for c in ran)


def test_pending_maintenance_fact() -> None:
    from k3sfleet.facts.maintenance import PendingMaintenance

    fact = PendingMaintenance()
    assert "grep -i security" in str(fact.command(security_only=True))
    assert "grep -i security" not in str(fact.command())
    assert fact.process(["upgrades=3", "reboot=yes"]) == {"upgrades": 3, "reboot_required": True}
    assert fact.process(["upgrades=0", "reboot=no"]) == {"upgrades": 0, "reboot_required": False}


def test_gate_lets_a_node_broken_by_a_failed_run_be_repaired() -> None:
    core = fake()
    core.set_version("server-1", V2)
    core.set_ready("agent-1", False)  # an earlier run's failed restart
    engine = make_engine(core)
    engine.run()
    assert all(kubelet_version(n) == V2 for n in core.nodes.values())
    core2 = fake()
    core2.set_ready("agent-2", False)  # but another node down stops the run at once
    engine2 = make_engine(core2)
    with pytest.raises(RollingFailed, match="nodes not Ready: agent-2"):
        engine2.run()


NESTED_DEPLOY = """
from pyinfra import host

from k3sfleet.api_ops import api_call
from k3sfleet.deploys.k3s_upgrade import k3s_upgrade
from k3sfleet.rolling import NestedRunner, NodeActionFailed


def drive(state, host):
    runner = NestedRunner(state)
    try:
        runner.deploy(["@fake/s1", "@fake/a1"], k3s_upgrade)
    except NodeActionFailed as e:
        print("FAILED", e.failures)
    for h in state.inventory:
        for c in h.connector.executed_commands:
            if "curl" in c or c.startswith("systemctl restart"):
                print("RAN", h.name, c.splitlines()[0] if c.startswith("systemctl") else "install")


if host.name == "@fake/s1":
    api_call(name="drive", function=drive)
"""


def test_nested_runner_inside_a_pyinfra_cli_run(tmp_path: Any) -> None:
    """Inside the CLI, node actions run as nested operations on each node's own connection."""
    import subprocess
    import sys

    common = {
        "k3s_version": V2,
        "k3s_release_url": "http://10.123.0.1:8080/k3s",
        "fake_delay": 0,
        "fake_delay_jitter": 0,
    }
    responses = {
        "k3s --version": f"k3s version {V1} (1234abcd)",
        "uname -m": "x86_64",
        "SubState k3s.service": ["Id=k3s.service", "SubState=running"],
    }
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        f"common = {common!r}\nresponses = {responses!r}\n"
        "k3s_servers = [('@fake/s1', {**common, 'k3s_role': 'server', "
        "'fake_responses': responses})]\n"
        "k3s_agents = [('@fake/a1', {**common, 'k3s_role': 'agent', 'fake_responses': "
        "{'curl': {'success': False, 'stderr': 'k3sfleet: checksum mismatch'}, **responses}})]\n"
    )
    entry = tmp_path / "nested_entry.py"
    entry.write_text(NESTED_DEPLOY)
    run = subprocess.run(  # noqa: S603 - pyinfra itself, fake hosts
        [sys.executable, "-m", "pyinfra", "-y", str(inventory), str(entry)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert "RAN @fake/s1 install" in out
    assert "RAN @fake/s1 systemctl restart k3s.service" in out
    assert "FAILED {'@fake/a1'" in out and "checksum mismatch" in out
    assert "RAN @fake/a1 systemctl" not in out  # a failed install stops that node's deploy


def test_inventory_file_reads_groups_like_the_cli(tmp_path: Any) -> None:
    from k3sfleet.kube import inventory_from_file
    from k3sfleet.rolling import inventory_targets

    path = tmp_path / "inventory.py"
    path.write_text(
        "NODES = [object()]\n"
        "k3s_servers = [('s1', {'k3s_role': 'server', 'ssh_hostname': '10.0.0.1'})]\n"
        "k3s_agents = [('a1', {'k3s_role': 'agent'}), ('a2', {'k3s_role': 'agent'})]\n"
    )
    inventory = inventory_from_file(str(path))
    assert [h.name for h in inventory] == ["s1", "a1", "a2"]
    assert inventory.get_host("s1").data.ssh_hostname == "10.0.0.1"
    assert [h.name for h in inventory.get_group("k3s_agents")] == ["a1", "a2"]
    assert [(t.name, t.role) for t in inventory_targets(inventory)] == [
        ("s1", "server"),
        ("a1", "agent"),
        ("a2", "agent"),
    ]
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(K3sfleetError, match="no hosts"):
        inventory_from_file(str(empty))


@pytest.mark.parametrize("entry", ["maintenance", "upgrade"])
def test_rolling_entry_files_check_the_rolling_settings_before_contact(entry: str) -> None:
    """deploys/maintenance.py had no PREFLIGHT: a batch of 0 agents, a drain timeout of 0 or a
    node's reboot timeout of "5m" reached the engine. Now each is named before any contact."""
    from k3sfleet.inventory import Node
    from k3sfleet.preflight import entry_problems
    from k3sfleet.settings import Settings

    settings = Settings(rolling_agent_batch=0, rolling_drain_timeout=0, k3s_allow_versions="")
    nodes = [Node("s1", role="server", data={"maintenance_reboot_timeout": "5m",
                                             "rolling_ready_timeout": 600})]
    problems = entry_problems([entry], settings, nodes)
    needed = f"(needed by deploys/{entry}.py)"
    assert [p for p in problems if "ROLLING" in p or "timeout" in p] == [
        f"ROLLING_AGENT_BATCH must be at least 1, not 0 {needed}",
        f"ROLLING_DRAIN_TIMEOUT must be a positive number of seconds, not 0 {needed}",
        f"s1: maintenance_reboot_timeout must be a positive whole number of seconds, not '5m' "
        f"{needed}",
    ]
    assert entry_problems([entry], Settings(), nodes[:0]) == []
