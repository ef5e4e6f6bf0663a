"""Tailscale is up on every node, logged in as the node, with its tailnet address; with
vpn-auth, the node's pod CIDR is a primary subnet route of the node (approved in the policy)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from k3sfleet.verify_suite.conftest import tailscale_status


def test_tailscale_running_as_node(node: Any, host: Any) -> None:
    status = tailscale_status(host)
    assert status, f"{node.name}: `tailscale status --json` failed; is tailscaled running?"
    state = status.get("BackendState")
    assert state == "Running", f"{node.name}: Tailscale is {state}, not Running"
    name = status.get("Self", {}).get("HostName")
    assert name == node.name, f"{node.name}: Tailscale hostname is {name!r}, expected {node.name!r}"


def test_tailnet_address(node: Any, host: Any) -> None:
    ips = tailscale_status(host).get("Self", {}).get("TailscaleIPs") or []
    assert any(":" not in ip for ip in ips), f"{node.name}: no IPv4 tailnet address ({ips})"
    want = node.data.get("k3sfleet_tailnet_address")
    if want:
        assert want in ips, f"{node.name}: tailnet address {ips}, the inventory expects {want}"


def test_pod_cidr_is_a_primary_route(node: Any, host: Any, api: Any) -> None:
    """With vpn-auth, K3s's flannel advertises the Node's pod CIDR (``tailscale set
    --advertise-routes=$SUBNET``, k3s-io/k3s v1.34.2+k3s1 pkg/agent/flannel/setup.go); pods on
    other nodes reach it only once the control plane makes it a primary route of the node
    (tailscale.com v1.102.5 ipn/ipnstate PeerStatus.PrimaryRoutes), that is once approved."""
    if node.data.get("k3s_vpn_auth") is False:
        pytest.skip("K3S_VPN_AUTH=false: flannel does not route pods over Tailscale")
    spec = client.CoreV1Api(api).read_node(node.name).spec
    cidrs = list(spec.pod_cidrs or ([spec.pod_cidr] if spec.pod_cidr else []))
    assert cidrs, f"{node.name}: the Node has no spec.podCIDR yet; is K3s running?"
    primary = tailscale_status(host).get("Self", {}).get("PrimaryRoutes") or []
    missing = [c for c in cidrs if c not in primary]
    assert not missing, (
        f"{node.name}: pod CIDR {', '.join(missing)} is not a primary Tailscale route of the "
        f"node (primary: {primary or 'none'}): pods on other nodes cannot reach its pods. "
        "Approve it: autoApprovers.routes for 10.42.0.0/16 in the tailnet policy (README, "
        "'Tailnet policy'), or approve the route in the admin console"
    )
