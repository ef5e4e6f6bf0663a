"""Who starts the cluster and whom each server joins, decided from what the servers hold.

Pure logic, no pyinfra: ``plan_servers`` takes the servers in inventory order with their
datastore and their current join setting, and returns for each server the server it joins
(``None``: it runs ``cluster-init``). The rules, which make the result independent of which
server is listed first and safe to re-run:

* ``cluster-init`` only when no server holds a datastore, and then only on the first server;
  the others join it.
* A server that holds a datastore keeps the join setting it has (k3s ignores it once it has
  data, and changing it would restart k3s for nothing).
* A server without a datastore joins the first server that has one (the first server when it
  has data). A rebuilt first server therefore joins the others: never a second cluster.
* A SQLite datastore cannot take more servers: refuse with a message.

Example::

    plan_servers(["s1", "s2"], {"s1": None, "s2": None}, {}, {})
    # {"s1": None, "s2": "s1"}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from k3sfleet.errors import K3sfleetError

CLUSTER_INIT = "cluster-init"


class ClusterPlanError(K3sfleetError):
    """The servers are in a state the deploy will not touch (it would split the cluster)."""


def plan_servers(
    servers: Sequence[str],
    datastores: Mapping[str, str | None],
    current_joins: Mapping[str, str | None],
    urls: Mapping[str, str | None],
) -> dict[str, str | None]:
    """For each server, the server it joins, or ``None`` for the one running ``cluster-init``.

    + servers: server names in inventory order (the first is the default cluster starter)
    + datastores: server -> ``K3sState`` datastore (``"etcd"``, ``"sqlite"``, ``"other"``, ``None``)
    + current_joins: server -> ``K3sState`` ``join`` (``"cluster-init"``, a URL, or ``None``)
    + urls: server -> its ``https://<tailnet address>:6443`` URL when known
    """
    if not servers:
        raise ClusterPlanError("the inventory has no server")
    first = servers[0]
    holding = [s for s in servers if datastores.get(s)]
    if not holding:
        return {s: (None if s == first else first) for s in servers}

    fresh = [s for s in servers if not datastores.get(s)]
    sqlite = [s for s in holding if datastores.get(s) == "sqlite"]
    if fresh and sqlite:
        raise ClusterPlanError(
            f"{', '.join(fresh)} cannot join {', '.join(sqlite)}: that server keeps its data in "
            "SQLite, and only an embedded-etcd cluster (started with cluster-init) takes more "
            "servers. Migrate it to etcd (k3s server --cluster-init on that server) first."
        )

    by_url = {url: name for name, url in urls.items() if url}
    target = first if datastores.get(first) else holding[0]
    plan: dict[str, str | None] = {}
    for s in servers:
        current = current_joins.get(s)
        if datastores.get(s):
            if current == CLUSTER_INIT:
                plan[s] = None
            elif current in by_url and by_url[current] != s:
                plan[s] = by_url[current]
            elif s == first:
                plan[s] = None
            else:
                plan[s] = target if target != s else None
        else:
            plan[s] = target
    return plan


def joining_servers(
    plan: Mapping[str, str | None], datastores: Mapping[str, str | None]
) -> set[str]:
    """The servers that will join an existing cluster in this run (no datastore yet, a target)."""
    return {s for s, target in plan.items() if target is not None and not datastores.get(s)}
