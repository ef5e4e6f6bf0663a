"""Bring up or converge the whole K3s cluster in one run.

Entry file. Run: ``pyinfra inventory.py deploys/cluster.py [--dry]`` (or ``k3sfleet deploy
cluster``).

Order: prerequisites everywhere; then the servers that start or already hold the cluster;
then servers joining it (their token and URL are read from the server they join when they
run); then the agents, which join the first server the same way. With ``K3S_TOKEN`` set (vault)
every node uses that token and ``--dry`` shows every change; without it, ``--dry`` on a fresh
cluster says the token will come from the first server at run time.
"""

from k3sfleet.entry import under_pyinfra
from k3sfleet.preflight import (
    k3s_etcd_s3_check,
    k3s_version_check,
    tailscale_key_check,
    vpn_args_check,
)

# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [tailscale_key_check, vpn_args_check, k3s_version_check, k3s_etcd_s3_check]

if under_pyinfra():
    from pyinfra import host

    from k3sfleet.deploys.k3s_agent import k3s_agent
    from k3sfleet.deploys.k3s_node import cluster_plan, phase
    from k3sfleet.deploys.k3s_prereq import k3s_prereq
    from k3sfleet.deploys.k3s_server import k3s_server

    plan = cluster_plan()
    role = host.data.get("k3s_role")
    k3s_prereq()
    # Steps: every host passes each phase() together, so a step starts only once the one
    # before it finished on every host.
    if role == "server" and host.name not in plan.joining:
        k3s_server(plan=plan)  # the server that starts the cluster, and servers holding it
    phase(name="K3s: the cluster is up", description="servers holding the cluster are up")
    if role == "server" and host.name in plan.joining:
        k3s_server(plan=plan)  # servers joining the cluster
    phase(name="K3s: all servers are up", description="every server is up")
    if role == "agent":
        k3s_agent(plan=plan)
