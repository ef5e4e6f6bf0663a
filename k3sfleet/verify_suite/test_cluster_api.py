"""Through the Kubernetes API (k3sfleet.kube: SSH tunnel to a server): every inventory node is
registered and Ready at the expected version; Argo CD's objects exist once deploys/argocd.py ran."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from k3sfleet.kube import HostInfo


def ready(node: Any) -> str:
    for cond in node.status.conditions or []:
        if cond.type == "Ready":
            return str(cond.status)
    return "missing"


def test_every_inventory_node_registered_and_ready(api: Any, nodes: list[HostInfo]) -> None:
    registered = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    missing = [n.name for n in nodes if n.name not in registered]
    assert not missing, (
        f"nodes in the inventory but not in the cluster: {missing}; check their k3s service "
        "(`journalctl -u k3s-agent`) and re-run deploys/cluster.py"
    )
    not_ready = {
        n.name: ready(registered[n.name]) for n in nodes if ready(registered[n.name]) != "True"
    }
    assert not not_ready, f"nodes not Ready (Ready condition): {not_ready}"
    wrong = {
        n.name: registered[n.name].status.node_info.kubelet_version
        for n in nodes
        if registered[n.name].status.node_info.kubelet_version != n.data.get("k3s_version")
    }
    assert not wrong, f"nodes at another version than k3s_version: {wrong}; run deploys/upgrade.py"


def test_argocd_applications_present(api: Any) -> None:
    custom = client.CustomObjectsApi(api)
    try:
        chart = custom.get_namespaced_custom_object(
            "helm.cattle.io", "v1", "kube-system", "helmcharts", "argocd"
        )
    except ApiException as e:
        if e.status == 404:
            pytest.skip("Argo CD is not deployed here (deploys/argocd.py has not run)")
        raise
    assert chart["spec"].get("version"), "the argocd HelmChart pins no chart version"
    apps = custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications")
    names = {a["metadata"]["name"] for a in apps.get("items", [])}
    missing = {"infrastructure", "apps"} - names
    assert not missing, f"root App-of-Apps Applications missing in argocd: {sorted(missing)}"
