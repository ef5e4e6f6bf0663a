"""A K3s server: pinned binary, private config and vpn-auth file, unit, restart on change only.

The server that starts the cluster gets ``cluster-init`` (only when no server holds a
datastore); the others join the server ``deploys.k3s_node.cluster_plan`` names, with its token
and tailnet URL read when the join runs. The config also carries ``flannel-iface``, the public
address as ``node-external-ip`` on ingress nodes only (``deploys.k3s_node.node_settings``), the
tailnet address as ``advertise-address`` without vpn-auth, ``tls-san`` (tailnet address,
MagicDNS name, ``k3s_tls_san``), components to disable, labels, taints, etcd snapshots to R2 when
``k3s_etcd_s3`` is on, and ``k3s_extra_config`` passed through.

Example::

    from k3sfleet.deploys.k3s_server import k3s_server

    k3s_server()              # plans the cluster itself
    k3s_server(plan=plan)     # deploys/cluster.py passes the run's plan
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import deploy

from k3sfleet.deploys import k3s_node
from k3sfleet.deploys.k3s_node import (
    ClusterPlan,
    cluster_plan,
    converge_node,
    node_settings,
    version_guard,
)
from k3sfleet.settings import Default, default_values

DEFAULTS: dict[str, Default] = {
    **k3s_node.DEFAULTS,
    "k3s_disable": Default(["traefik"], "K3s components a server does not run"),
    "k3s_tls_san": Default(
        [], "more names and addresses in the API certificate (the tailnet address and MagicDNS "
            "name always are)"),
}


def etcd_s3_settings(data: Any) -> dict[str, Any]:
    """The ``etcd-s3*`` keys for snapshots to R2 (empty unless ``k3s_etcd_s3`` is on)."""
    if not data.get("k3s_etcd_s3"):
        return {}
    endpoint = str(data.get("r2_endpoint") or "")
    for scheme in ("https://", "http://"):
        endpoint = endpoint.removeprefix(scheme)
    return {
        "etcd-s3": True,
        "etcd-s3-endpoint": endpoint.rstrip("/"),
        "etcd-s3-bucket": data.get("k3s_etcd_s3_bucket"),
        "etcd-s3-access-key": data.get("r2_access_key_id"),
        "etcd-s3-secret-key": data.get("r2_secret_access_key"),
    }


def server_settings(data: Any, address: str | None) -> dict[str, Any]:
    """Every config.yaml key of a server except ``server``/``token``/``cluster-init``."""
    sans = [address] if address else []
    domain = data.get("k3sfleet_tailnet_domain")
    if domain:
        sans.append(f"{data.get('k3s_node_name') or host.name}.{domain}")
    sans += [s for s in data.get("k3s_tls_san") or [] if s not in sans]
    settings, extra = node_settings(data, host.name)
    if address and not data.get("k3s_vpn_auth"):
        # Without vpn-auth k3s takes a server's advertise address (the in-cluster `kubernetes`
        # endpoint) from node-external-ip before node-ip (k3s v1.34.2+k3s1
        # pkg/cli/server/server.go `run`): on an ingress node that is its public address,
        # which the firewall closes to 6443. With vpn-auth k3s sets it to the VPN address.
        settings["advertise-address"] = address
    settings["tls-san"] = sans
    if data.get("k3s_disable"):
        settings["disable"] = list(data.get("k3s_disable"))
    settings["write-kubeconfig-mode"] = "0600"
    settings.update(etcd_s3_settings(data))
    settings.update(extra)
    return settings


@deploy("K3s server", data_defaults=default_values(DEFAULTS))
def k3s_server(plan: ClusterPlan | None = None) -> None:
    """Install and converge the K3s server on this host (see the module docstring)."""
    data = host.data
    plan = plan or cluster_plan()
    version_guard(data, server=True)
    state = plan.state_of(host.name)
    join = plan.joins[host.name]
    converge_node(
        "server",
        plan,
        config_name="K3s server config" + (f" (joins {join})" if join else " (cluster-init)"),
        settings=lambda own: server_settings(data, own),
        address=plan.addresses.get(host.name),
        join=join,
        # a server that holds the cluster already uses its own node-token (the same token)
        token_source=host.name if state["datastore"] and state["node_token"] else None,
    )
