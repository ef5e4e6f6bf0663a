"""deploys/maintenance.py on a lab cluster (1 server + 2 agents) with the real pyinfra CLI: the
agents with /var/run/reboot-required are drained, really rebooted and waited for, one node at a
time; the server, with nothing pending, is not touched; a second run does nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from labcli import deploy_cluster, output, pyinfra

from k3sfleet.kube import cluster_api

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "system:admin"
MARK = "/run/k3sfleet-test-booted-before"  # /run is a tmpfs: gone after a reboot
pytestmark = pytest.mark.lab
DROP = ("K3S_", "ROLLING_")  # set through host data here


@pytest.fixture(scope="module")
def cluster(lab_factory: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    lab = lab_factory(servers=1, agents=2)
    inventory = lab.write_inventory(
        tmp_path_factory.mktemp("maintenance") / "inventory.py",
        {"rolling_ready_timeout": 180, "maintenance_reboot_timeout": 180},
    )
    deploy_cluster(inventory, drop=DROP)
    return lab, inventory


def booted_since_mark(lab: Any, host: Any) -> bool:
    rc, _, _ = lab.ssh(host, f"test -e {MARK}")
    return rc != 0


def test_reboot_required_hosts_reboot_one_at_a_time_then_nothing(cluster: Any) -> None:
    lab, inventory = cluster
    server = lab.servers[0]
    for host in lab.hosts:
        rc, _, err = lab.ssh(host, f"sudo touch {MARK}")
        assert rc == 0, err
    for host in lab.agents:
        rc, _, err = lab.ssh(host, "sudo touch /var/run/reboot-required")
        assert rc == 0, err
    writes_before = len(lab.api_writes(server))

    dry = pyinfra(inventory, "maintenance", "--dry", drop=DROP)
    assert dry.returncode == 0, output(dry)
    assert f"{server.name} (server): already done" in dry.stdout
    for host in lab.agents:
        assert f"{host.name} (agent): to do" in dry.stdout
        assert not booted_since_mark(lab, host)  # --dry rebooted nothing

    run = pyinfra(inventory, "maintenance", drop=DROP)
    assert run.returncode == 0, output(run)

    assert all(booted_since_mark(lab, h) for h in lab.agents)
    assert not booted_since_mark(lab, server)  # nothing pending there: not touched
    for host in lab.agents:
        rc, _, _ = lab.ssh(host, "test -e /var/run/reboot-required")
        assert rc != 0
    patches = [
        w["name"]
        for w in lab.api_writes(server)[writes_before:]
        if w["user"] == ADMIN
        and w["kind"] == "Node"
        and w["verb"] == "patch"
        and w["subresource"] == ""
        and w["changed"]
    ]
    agents = [h.name for h in lab.agents]
    assert patches == [name for name in agents for _ in range(2)]  # cordon, uncordon; in turn
    with cluster_api(str(inventory)) as api:
        for node in client.CoreV1Api(api).list_node().items:
            assert not (node.spec and node.spec.unschedulable)
            ready = [c for c in node.status.conditions if c.type == "Ready"]
            assert ready and ready[0].status == "True"

    writes = len(lab.api_writes(server))
    again = pyinfra(inventory, "maintenance", drop=DROP)
    assert again.returncode == 0, output(again)
    assert "Nothing to do" in again.stdout
    changed = [w for w in lab.api_writes(server)[writes:] if w["user"] == ADMIN and w["changed"]]
    assert changed == []
