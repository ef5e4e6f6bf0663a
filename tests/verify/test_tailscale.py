"""Tailscale is up on every node, logged in as the node, with its tailnet address."""

from __future__ import annotations

from typing import Any

from conftest import tailscale_status


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
