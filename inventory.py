"""The nodes of your cluster: the one place you declare them.

Addresses and SSH users come from the vault maps ``vault_ansible_hosts`` / ``vault_ansible_users``
(``vault_tailscale_hosts`` with ``K3SFLEET_CONNECT=tailnet``), so no address is committed.

    k3sfleet check bootstrap && k3sfleet hostkeys    # before the first run on fresh VPSes
    k3sfleet deploy bootstrap                       # fresh VPSes, public addresses
    K3SFLEET_CONNECT=tailnet k3sfleet deploy cluster
    (in a clone also: pyinfra inventory.py deploys/bootstrap.py)
"""

from k3sfleet.inventory import Node, groups

_NODES = [
    Node("vps-aws-1", role="server", provider="aws"),
    Node("vps-hetzner-1", role="agent", provider="hetzner", labels={"k3sfleet/ingress": "true"}),
    Node("vps-vultr-1", role="agent", provider="vultr"),
]

k3s_servers, k3s_agents = groups(_NODES)
