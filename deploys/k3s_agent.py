"""A K3s agent: pinned binary, private config and vpn-auth file, unit, restart on change only.

The agent joins the first server at its tailnet URL with the cluster token: from the vault
(``K3S_TOKEN``) or, when that is unset, read from the server's node-token when the agent's
config is written, so a fresh cluster comes up in one run.

Example::

    from k3sfleet.deploys.k3s_agent import k3s_agent

    k3s_agent()
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

DEFAULTS: dict[str, Default] = {**k3s_node.DEFAULTS}


def agent_settings(data: Any, address: str | None = None) -> dict[str, Any]:
    """Every config.yaml key of an agent except ``server``/``token`` (none depends on the
    agent's own tailnet ``address``: with vpn-auth k3s takes the node IP from the VPN)."""
    settings, extra = node_settings(data, host.name, agent=True)
    settings.update(extra)
    return settings


@deploy("K3s agent", data_defaults=default_values(DEFAULTS))
def k3s_agent(plan: ClusterPlan | None = None) -> None:
    """Install and converge the K3s agent on this host (see the module docstring)."""
    data = host.data
    plan = plan or cluster_plan()
    version_guard(data, server=False)
    converge_node(
        "agent",
        plan,
        config_name=f"K3s agent config (joins {plan.anchor})",
        settings=lambda own: agent_settings(data, own),
        address=data.get("k3sfleet_tailnet_address") or plan.state_of(host.name)["tailnet_ip"],
        join=plan.anchor,
    )
