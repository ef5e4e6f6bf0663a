"""deploys/upgrade.py on lab clusters (1 server + 2 agents, stand-in k3s v1 -> v2), run with the
real pyinfra CLI: a clean rolling upgrade (order and one-node-at-a-time shown by the stand-in
API's write log), a second run that does nothing, and a failure injected on one node (the run
stops there, later nodes untouched, a re-run after the fix completes; a node a human cordoned
stays cordoned)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from labcli import deploy_cluster, output, pyinfra

from k3sfleet.kube import cluster_api
from k3sfleet.lab.standins import LAB_K3S_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
V1, V2 = LAB_K3S_VERSIONS[0], LAB_K3S_VERSIONS[-1]
ADMIN = "system:admin"  # the kubeconfig user k3sfleet talks to the API as
FAULT = "/etc/k3sfleet-lab/fail-start"
pytestmark = pytest.mark.lab
DROP = ("K3S_", "ROLLING_")  # set through host data here


def make_cluster(lab_factory: Callable[..., Any], tmp: Path) -> tuple[Any, Path, Path]:
    """A lab cluster at V1; returns (lab, inventory at V1, inventory at V2)."""
    lab = lab_factory(servers=1, agents=2)
    at_v1 = lab.write_inventory(tmp / "inventory_v1.py", {"k3s_version": V1})
    at_v2 = lab.write_inventory(
        tmp / "inventory_v2.py",
        {"k3s_version": V2, "rolling_ready_timeout": 120, "rolling_drain_timeout": 60},
    )
    deploy_cluster(at_v1, drop=DROP)
    return lab, at_v1, at_v2


def nodes(inventory: Path) -> dict[str, Any]:
    with cluster_api(str(inventory)) as api:
        return {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}


def version(node: Any) -> str:
    return str(node.status.node_info.kubelet_version)


def cordoned(node: Any) -> bool:
    return bool(node.spec and node.spec.unschedulable)


def our_cordon_patches(lab: Any, since: int = 0) -> list[str]:
    """Node names of k3sfleet's spec patches (cordon / uncordon), in API order."""
    return [
        w["name"]
        for w in lab.api_writes(lab.servers[0])[since:]
        if w["user"] == ADMIN
        and w["kind"] == "Node"
        and w["verb"] == "patch"
        and w["subresource"] == ""
        and w["changed"]
    ]


def assert_one_at_a_time(patches: list[str]) -> None:
    """Patches come in pairs (cordon, uncordon) per node: never two nodes cordoned at once."""
    assert len(patches) % 2 == 0, patches
    pairs = [patches[i : i + 2] for i in range(0, len(patches), 2)]
    assert all(a == b for a, b in pairs), patches


@pytest.fixture(scope="module")
def clean(lab_factory: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_cluster(lab_factory, tmp_path_factory.mktemp("upgrade_clean"))


def test_rolling_upgrade_to_v2_one_node_at_a_time_then_nothing(clean: Any) -> None:
    lab, at_v1, at_v2 = clean
    before = nodes(at_v1)
    assert {version(n) for n in before.values()} == {V1}
    writes_before = len(lab.api_writes(lab.servers[0]))

    dry = pyinfra(at_v2, "upgrade", "--dry", drop=DROP)
    assert dry.returncode == 0, output(dry)
    order = [h.name for h in lab.servers] + [h.name for h in lab.agents]
    for i, name in enumerate(order, 1):
        assert f"  {i}. {name} " in dry.stdout and f"{name} (" in dry.stdout
    assert dry.stdout.count(": to do (kubelet " + V1) == 3
    assert not [
        w
        for w in lab.api_writes(lab.servers[0])[writes_before:]
        if w["changed"] and w["user"] == ADMIN
    ]

    run = pyinfra(at_v2, "upgrade", drop=DROP)
    assert run.returncode == 0, output(run)
    after = nodes(at_v2)
    assert {name: version(n) for name, n in after.items()} == {name: V2 for name in before}
    assert not any(cordoned(n) for n in after.values())

    log = lab.api_writes(lab.servers[0])[writes_before:]
    patches = [
        w["name"]
        for w in log
        if w["user"] == ADMIN
        and w["kind"] == "Node"
        and w["verb"] == "patch"
        and w["subresource"] == ""
        and w["changed"]
    ]
    assert patches == [name for name in order for _ in range(2)]  # cordon, uncordon; in order
    # between a node's cordon and uncordon its kubelet came back (status written by the node)
    for name in order:
        idx = [
            i
            for i, w in enumerate(log)
            if w["kind"] == "Node"
            and w["name"] == name
            and w["user"] == ADMIN
            and w["subresource"] == ""
            and w["verb"] == "patch"
        ]
        between = log[idx[0] + 1 : idx[-1]]
        assert any(w["name"] == name and w["user"] != ADMIN for w in between), name
    for name in order:
        assert f"{name}: uncordoned" in run.stdout

    writes = len(lab.api_writes(lab.servers[0]))
    again = pyinfra(at_v2, "upgrade", drop=DROP)
    assert again.returncode == 0, output(again)
    assert "Nothing to do" in again.stdout
    ours = [w for w in lab.api_writes(lab.servers[0])[writes:] if w["user"] == ADMIN]
    assert not [w for w in ours if w["changed"]], ours

    # the same plan through `k3sfleet upgrade --dry` (the Python API path)
    cli = subprocess.run(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-c",
            "import sys; from k3sfleet.cli import main; sys.exit(main())",
            "--project-dir",
            str(ROOT),
            "upgrade",
            "--inventory",
            str(at_v2),
            "--dry",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.count("already done: skipped") == 3 and "Nothing to do" in cli.stdout


@pytest.fixture(scope="module")
def faulty(lab_factory: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_cluster(lab_factory, tmp_path_factory.mktemp("upgrade_fault"))


def test_failure_stops_at_the_node_and_a_rerun_resumes(faulty: Any) -> None:
    lab, at_v1, at_v2 = faulty
    server, agent1, agent2 = lab.servers[0], lab.agents[0], lab.agents[1]
    # a human cordoned the server before the run
    with cluster_api(str(at_v1)) as api:
        client.CoreV1Api(api).patch_node(server.name, {"spec": {"unschedulable": True}})
    rc, _, err = lab.ssh(agent1, f"echo {V2} | sudo tee {FAULT} >/dev/null")
    assert rc == 0, err
    writes_before = len(lab.api_writes(server))

    run = pyinfra(at_v2, "upgrade", drop=DROP)
    assert run.returncode != 0, output(run)
    text = output(run)
    assert f"stopped at node {agent1.name}" in text
    assert "next step" in text and f"Later nodes not touched: {agent2.name}" in text
    state = nodes(at_v1)
    assert version(state[server.name]) == V2
    assert cordoned(state[server.name])  # the human's cordon is kept
    assert version(state[agent2.name]) == V1 and not cordoned(state[agent2.name])
    touched = {w["name"] for w in lab.api_writes(server)[writes_before:] if w["user"] == ADMIN}
    assert agent2.name not in touched

    rc, _, err = lab.ssh(agent1, f"sudo rm -f {FAULT}")
    assert rc == 0, err
    resumed = pyinfra(at_v2, "upgrade", drop=DROP)
    assert resumed.returncode == 0, output(resumed)
    assert f"{server.name} (server): already done" in resumed.stdout
    final = nodes(at_v2)
    assert {version(n) for n in final.values()} == {V2}
    assert cordoned(final[server.name])
    assert not cordoned(final[agent1.name]) and not cordoned(final[agent2.name])
    assert_one_at_a_time(our_cordon_patches(lab, writes_before))
