"""The verification suite itself: green on a deployed lab cluster; on deliberately broken hosts,
exactly the matching checks fail, with messages a person can act on."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from labcli import pyinfra

from k3sfleet.kube import cluster_api
from k3sfleet.lab import LAB_AUTO_APPROVED_ROUTES
from k3sfleet.settings import APPS_APPLICATION, ARGOCD_NAMESPACE, INFRASTRUCTURE_APPLICATION
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.lab
LB_CHECK = "test_cluster_api::test_load_balancers_and_dns_targets_are_the_ingress_public_addresses"


def verify(inventory: Path, report: Path) -> dict[str, str]:
    """Run the verify suite against ``inventory``; return {test id: "passed"|"failed: ..."}."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "k3sfleet/verify_suite",
            "--inventory",
            str(inventory),
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            "-q",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        failure = case.find("failure")
        error = case.find("error")
        if failure is not None or error is not None:
            results[name] = "failed: " + (
                (failure if failure is not None else error).get("message") or ""
            )
        elif case.find("skipped") is not None:
            results[name] = "skipped"
        else:
            results[name] = "passed"
    return results


def primary_routes(lab: Any, host: Any) -> list[str]:
    """``Self.PrimaryRoutes`` of ``host``'s tailscaled (``tailscale status --json``)."""
    rc, out, err = lab.ssh(host, "tailscale status --json")
    assert rc == 0, f"tailscale status on {host.name}: {err}"
    return list(json.loads(out)["Self"].get("PrimaryRoutes") or [])


@pytest.fixture(scope="module")
def deployed(lab_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    lab = lab_factory(servers=1, agents=2)
    inventory = tmp_path_factory.mktemp("verify") / "inventory.py"
    # deploys/argocd.py needs these; they only end up as strings in the manifests
    lab.write_inventory(
        inventory,
        data={
            "gitops_repo_url": "https://git.example.org/fleet.git",
            "domain": "example.org",
            "velero_bucket": "k3s-velero",
            "r2_endpoint": "https://account.r2.cloudflarestorage.com",
        },
    )
    for entry in ("bootstrap", "cluster", "argocd"):
        run = pyinfra(inventory, entry)
        assert run.returncode == 0, (
            f"deploys/{entry}.py failed:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
        )
    # K3s applies the manifests directory asynchronously (its deploy controller polls it, one
    # file after another), so a cluster is "deployed" once both files deploys/argocd.py wrote
    # are applied: the argocd HelmChart and the root Applications, as on a real server
    with cluster_api(inventory) as api:
        custom = client.CustomObjectsApi(api)
        wait_for(
            "the argocd HelmChart applied from the manifests directory",
            lambda: custom.get_namespaced_custom_object(
                "helm.cattle.io", "v1", "kube-system", "helmcharts", "argocd"
            ),
            60,
        )
        wait_for(
            "the root Applications applied from the manifests directory",
            lambda: {INFRASTRUCTURE_APPLICATION, APPS_APPLICATION} <= {
                a["metadata"]["name"] for a in custom.list_namespaced_custom_object(
                    "argoproj.io", "v1alpha1", ARGOCD_NAMESPACE, "applications")["items"]},
            60,
        )
    return lab, inventory


def test_suite_green_on_deployed_cluster(deployed: tuple[Any, Path], tmp_path: Path) -> None:
    _, inventory = deployed
    results = verify(inventory, tmp_path / "green.xml")
    failed = {k: v for k, v in results.items() if v != "passed"}
    assert len(results) >= 15, f"too few checks ran: {results}"
    assert not failed, f"checks failed on a freshly deployed cluster: {failed}"


def test_broken_hosts_fail_exactly_the_matching_checks(
    deployed: tuple[Any, Path], tmp_path: Path
) -> None:
    lab, inventory = deployed
    server = next(h for h in lab.hosts if h.role == "server")
    agents = [h for h in lab.hosts if h.role == "agent"]
    breakages = [
        (agents[0], "sudo ufw allow 6443/tcp", "sudo ufw delete allow 6443/tcp"),
        (agents[1], "sudo systemctl stop k3s-agent", "sudo systemctl start k3s-agent"),
        (
            server,
            "sudo chmod 0644 /var/lib/rancher/k3s/server/node-token",
            "sudo chmod 0600 /var/lib/rancher/k3s/server/node-token",
        ),
    ]
    # a load balancer reporting a tailnet address, as servicelb does when node-external-ip is
    # the tailnet address (k3s pkg/cloudprovider/servicelb.go podIPs)
    lb = client.V1Service(
        metadata=client.V1ObjectMeta(name="leaky-lb", namespace="default"),
        spec=client.V1ServiceSpec(type="LoadBalancer", ports=[client.V1ServicePort(port=443)]),
    )
    status = {"status": {"loadBalancer": {"ingress": [{"ip": agents[0].tailnet_ip}]}}}
    try:
        for host, breaking, _ in breakages:
            rc, out, err = lab.ssh(host, breaking)
            assert rc == 0, f"could not break {host.name}: {out}{err}"
        # the tailnet's policy stops approving the pod network (no autoApprovers) and the
        # server's approval is withdrawn, on the lab's real control server
        assert lab.set_auto_approved_routes([]) == []
        routes = lab.set_tailnet_routes(server, [])
        assert routes["advertisedRoutes"] and not routes["enabledRoutes"], routes
        wait_for(
            f"{server.name}'s tailscaled to see its pod route withdrawn",
            lambda: not primary_routes(lab, server),
            30,
        )
        with cluster_api(str(inventory)) as api:
            core = client.CoreV1Api(api)
            core.create_namespaced_service("default", lb)
            core.patch_namespaced_service_status("leaky-lb", "default", status)
        results = verify(inventory, tmp_path / "broken.xml")
    finally:
        for host, _, repair in breakages:
            lab.ssh(host, repair)
        lab.set_auto_approved_routes(LAB_AUTO_APPROVED_ROUTES)
        with cluster_api(str(inventory)) as api:
            client.CoreV1Api(api).delete_namespaced_service("leaky-lb", "default")

    failed = {k: v for k, v in results.items() if v.startswith("failed")}
    expected = {
        f"test_firewall::test_k3s_ports_only_on_tailnet[{agents[0].name}]",
        f"test_k3s::test_service_active[{agents[1].name}]",
        f"test_k3s::test_secret_files_private[{server.name}]",
        f"test_tailscale::test_pod_cidr_is_a_primary_route[{server.name}]",
        LB_CHECK,
    }
    # A stopped agent also goes NotReady in the API once its heartbeat is 40 s old; on a slow
    # machine the API check may see that too, and then it must name that agent.
    api_check = "test_cluster_api::test_every_inventory_node_registered_and_ready"
    if api_check in failed:
        assert agents[1].name in failed.pop(api_check)
    assert set(failed) == expected, f"unexpected set of failing checks: {sorted(failed)}"
    assert "6443" in failed[f"test_firewall::test_k3s_ports_only_on_tailnet[{agents[0].name}]"]
    assert "k3s-agent is not running" in failed[f"test_k3s::test_service_active[{agents[1].name}]"]
    assert "node-token is 0o644" in failed[f"test_k3s::test_secret_files_private[{server.name}]"]
    route = failed[f"test_tailscale::test_pod_cidr_is_a_primary_route[{server.name}]"]
    assert "10.42.0.0/24 is not a primary Tailscale route" in route and "autoApprovers" in route
    assert "default/leaky-lb" in failed[LB_CHECK] and agents[0].tailnet_ip in failed[LB_CHECK]
    assert "tailnet addresses would be published in DNS" in failed[LB_CHECK]
    # the policy approves the pod network again: the server's advertised route is primary again
    wait_for(f"{server.name}'s pod route approved again", lambda: primary_routes(lab, server), 30)
