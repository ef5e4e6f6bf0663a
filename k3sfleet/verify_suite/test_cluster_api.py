"""Through the Kubernetes API (k3sfleet.kube: SSH tunnel to a server): every inventory node is
registered and Ready at the expected version; only ingress nodes have an external address (their
public one) and run the service load balancer; load balancers and DNS targets are the ingress
nodes' public addresses; Argo CD's objects exist once deploys/argocd.py ran."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from k3sfleet.inventory import is_ingress
from k3sfleet.kube import HostInfo
from k3sfleet.settings import APPS_APPLICATION, ARGOCD_NAMESPACE, INFRASTRUCTURE_APPLICATION

SERVICELB_LABEL = "svccontroller.k3s.cattle.io/enablelb"
DNS_TARGET = "external-dns.alpha.kubernetes.io/target"
TAILNET = ipaddress.ip_network("100.64.0.0/10")


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
    apps = custom.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", ARGOCD_NAMESPACE, "applications")
    names = {a["metadata"]["name"] for a in apps.get("items", [])}
    missing = {INFRASTRUCTURE_APPLICATION, APPS_APPLICATION} - names
    assert not missing, (
        f"root App-of-Apps Applications missing in {ARGOCD_NAMESPACE}: {sorted(missing)}; "
        "K3s applies its manifests directory every 15 s (k3s pkg/deploy/controller.go): if "
        "deploys/argocd.py just ran, run verify again in a minute"
    )


def ingress_public(nodes: list[HostInfo]) -> dict[str, str | None]:
    """Ingress node name -> its public address (host data from the inventory's vault maps)."""
    return {
        n.name: n.data.get("k3sfleet_public_address")
        for n in nodes
        if is_ingress(n.data.get("k3s_node_labels") or {}, n.data)
    }


def test_only_ingress_nodes_have_an_external_address(api: Any, nodes: list[HostInfo]) -> None:
    """servicelb reports the ExternalIPs of the nodes running its pods as the load balancer's
    addresses (k3s pkg/cloudprovider/servicelb.go): only ingress nodes may have one, their public
    address, never a tailnet one; svclb runs only where enablelb=true."""
    registered = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    public = ingress_public(nodes)
    wrong = {}
    for n in nodes:
        node = registered.get(n.name)
        if node is None:
            continue  # named by test_every_inventory_node_registered_and_ready
        external = sorted(a.address for a in node.status.addresses or [] if a.type == "ExternalIP")
        want = [public[n.name]] if public.get(n.name) else []
        lb = (node.metadata.labels or {}).get(SERVICELB_LABEL)
        want_lb = "true" if n.name in public else "false"
        if external != want or lb != want_lb:
            wrong[n.name] = f"ExternalIP {external} (want {want}), {SERVICELB_LABEL}={lb} " \
                f"(want {want_lb})"
    assert not wrong, (
        f"external addresses / load-balancer placement differ from the inventory: {wrong}; "
        "re-run deploys/cluster.py"
    )


def _addresses_outside(found: list[str], allowed: set[str]) -> list[str]:
    return sorted(a for a in found if a not in allowed)


def test_load_balancers_and_dns_targets_are_the_ingress_public_addresses(
    api: Any, nodes: list[HostInfo]
) -> None:
    """Every LoadBalancer Service's addresses, every Gateway's status addresses and external-dns
    target annotation are public addresses of ingress nodes (what the firewall opens 80/443 on);
    a tailnet address there would be published in DNS. Nothing to check when there are none."""
    allowed = {a for a in ingress_public(nodes).values() if a}
    bad: dict[str, list[str]] = {}
    for svc in client.CoreV1Api(api).list_service_for_all_namespaces().items:
        if svc.spec.type != "LoadBalancer":
            continue
        ingress = (svc.status.load_balancer.ingress or []) if svc.status.load_balancer else []
        found = [i.ip for i in ingress if i.ip]
        outside = _addresses_outside(found, allowed)
        if outside:
            bad[f"Service {svc.metadata.namespace}/{svc.metadata.name}"] = outside
    try:
        gateways = client.CustomObjectsApi(api).list_cluster_custom_object(
            "gateway.networking.k8s.io", "v1", "gateways"
        )["items"]
    except ApiException as e:
        if e.status != 404:
            raise
        gateways = []  # no Gateway API here
    for gw in gateways:
        meta = gw["metadata"]
        target = (meta.get("annotations") or {}).get(DNS_TARGET)
        found = [a["value"] for a in (gw.get("status") or {}).get("addresses") or []]
        found += target.split(",") if target else []
        outside = _addresses_outside(found, allowed)
        if outside:
            bad[f"Gateway {meta['namespace']}/{meta['name']}"] = outside
    tailnet = {k: v for k, v in bad.items() if any(_in_tailnet(a) for a in v)}
    assert not bad, (
        f"addresses that are not an ingress node's public address ({sorted(allowed)}): {bad}"
        + (f"; tailnet addresses would be published in DNS: {sorted(tailnet)}" if tailnet else "")
    )


def _in_tailnet(address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in TAILNET
    except ValueError:
        return False
