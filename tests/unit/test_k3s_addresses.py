"""Which addresses the generated K3s config gives each node, and what k3s's own ``tailscale up``
gets (vpn-auth ``extraArgs``): deploys/cluster.py against simulated nodes (k3s_harness).

What each key does in real K3s (v1.34.2+k3s1):

* ``node-external-ip`` becomes the Node's ExternalIP; servicelb reports the ExternalIPs of the
  nodes running its pods as the load balancer's addresses (``pkg/cloudprovider/servicelb.go``
  ``podIPs``), and those end up in DNS (Traefik ``statusAddress.service`` -> Gateway status ->
  external-dns). vpn-auth does not replace it (``pkg/executor/embed/embed.go`` only warns).
* ``svccontroller.k3s.cattle.io/enablelb``: once any node has it, svclb pods run only where it is
  ``true`` (``servicelb.go`` ``nodeHasDaemonSetLabel`` / ``newDaemonSet``).
* Without vpn-auth a server's advertise address falls back to node-external-ip before node-ip
  (``pkg/cli/server/server.go`` ``run``).
* An agent resolves ``flannel-iface`` before it starts the VPN (``pkg/cli/agent/agent.go``).
"""

from __future__ import annotations

from typing import Any

import yaml
from k3s_harness import AUTH_KEY, CONFIG, VPN_AUTH, SimCluster

from k3sfleet.deploys.k3s_node import SERVICELB_LABEL

INGRESS = {"k3s_node_labels": {"k3sfleet/ingress": "true"}}
PUBLIC = {"server-1": "198.51.100.11", "agent-1": "203.0.113.21", "agent-2": "203.0.113.22"}


def config_of(sim: SimCluster, name: str) -> dict[str, Any]:
    return yaml.safe_load(sim.nodes[name].files[CONFIG])  # type: ignore[no-any-return]


def per_host(ingress: set[str], **extra: Any) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "k3sfleet_public_address": address,
            **(INGRESS if name in ingress else {}),
            **extra,
        }
        for name, address in PUBLIC.items()
    }


def run(ingress: set[str], data: dict[str, Any] | None = None) -> SimCluster:
    sim = SimCluster.fresh(servers=1, agents=2)
    result = sim.run("deploys/cluster.py", data=data, per_host=per_host(ingress))
    assert result.ok, (result.error, sim.stderr)
    return sim


def test_only_ingress_nodes_get_their_public_address_as_node_external_ip() -> None:
    sim = run({"agent-1"})
    assert config_of(sim, "agent-1")["node-external-ip"] == PUBLIC["agent-1"]
    for name in ("server-1", "agent-2"):
        assert "node-external-ip" not in config_of(sim, name), name
    # the tailnet address is never an external (published) address
    for name, node in sim.nodes.items():
        assert node.tailnet_ip not in yaml.safe_dump(config_of(sim, name).get("node-external-ip"))


def test_the_service_load_balancer_runs_only_on_ingress_nodes() -> None:
    sim = run({"agent-1", "server-1"})
    labels = {name: config_of(sim, name)["node-label"] for name in sim.nodes}
    assert f"{SERVICELB_LABEL}=true" in labels["agent-1"]
    assert f"{SERVICELB_LABEL}=true" in labels["server-1"]
    assert f"{SERVICELB_LABEL}=false" in labels["agent-2"]
    assert "k3sfleet/ingress=true" in labels["agent-1"]


def test_without_ingress_nodes_no_node_runs_the_load_balancer() -> None:
    sim = run(set())
    for name in sim.nodes:
        cfg = config_of(sim, name)
        assert f"{SERVICELB_LABEL}=false" in cfg["node-label"]
        assert "node-external-ip" not in cfg


def test_with_vpn_auth_the_server_leaves_its_advertise_address_to_the_vpn() -> None:
    sim = run({"server-1"})
    server = config_of(sim, "server-1")
    assert server["node-external-ip"] == PUBLIC["server-1"]
    assert "advertise-address" not in server  # k3s sets it to the VPN address itself


def test_without_vpn_auth_an_ingress_server_advertises_its_tailnet_address() -> None:
    sim = run({"server-1"}, data={"k3s_vpn_auth": False})
    server = config_of(sim, "server-1")
    assert server["node-external-ip"] == PUBLIC["server-1"]
    assert server["advertise-address"] == sim.nodes["server-1"].tailnet_ip
    assert "vpn-auth-file" not in server
    # without vpn-auth nothing else gives flannel (and the node IP) the tailnet: keep the iface
    assert config_of(sim, "agent-1")["flannel-iface"] == "tailscale0"


def test_agents_whose_k3s_brings_tailscale_up_get_no_flannel_iface() -> None:
    deploy = run(set())
    assert config_of(deploy, "agent-1")["flannel-iface"] == "tailscale0"
    sim = run(set(), data={"tailscale_up_by": "k3s"})
    assert config_of(sim, "server-1")["flannel-iface"] == "tailscale0"
    for name in ("agent-1", "agent-2"):
        cfg = config_of(sim, name)
        assert "flannel-iface" not in cfg, name
        assert cfg["vpn-auth-file"] == VPN_AUTH


def test_k3s_tailscale_up_gets_hostname_tags_and_accept_routes_as_extra_args() -> None:
    sim = run(
        set(),
        data={
            "tailscale_up_by": "k3s",
            "tailscale_tags": "tag:k3s,tag:fleet",
            "tailscale_accept_routes": True,
            "tailscale_extra_args": ["--ssh"],
        },
    )
    text = sim.nodes["agent-1"].files[VPN_AUTH]
    # extraArgs last, space-separated (k3s splits it with strings.Fields): the tags keep
    # their comma
    assert text == (
        f"name=tailscale,joinKey={AUTH_KEY},extraArgs=--hostname=@fake/agent-1 "
        "--advertise-tags=tag:k3s,tag:fleet --accept-routes --ssh\n"
    )
    assert "--reset" not in text  # k3s passes --reset itself


def test_k3s_mode_second_run_changes_nothing() -> None:
    data = {"tailscale_up_by": "k3s", "tailscale_tags": "tag:k3s"}
    sim = SimCluster.fresh(servers=1, agents=2)
    hosts = per_host({"agent-1"})
    assert sim.run("deploys/cluster.py", data=data, per_host=hosts).ok
    started = {n.name: dict(n.started_at) for n in sim.nodes.values()}
    again = sim.run("deploys/cluster.py", data=data, per_host=hosts)
    assert again.ok, again.error
    assert {n.name: dict(n.started_at) for n in sim.nodes.values()} == started
    assert all(
        not [op for op in again.changed_ops(n) if op.startswith(("K3s", "k3s"))]
        for n in sim.nodes
    )
