"""OS maintenance on the rolling engine: apt upgrade, reboot when required, journal vacuum.

Entry file. Run: ``pyinfra inventory.py deploys/maintenance.py`` (plan at prepare, roll at
execute; ``--dry``: the plan only), or ``k3sfleet maintenance [--dry]`` (the same run without
the pyinfra CLI).

Each node's pending work is read first (``PendingMaintenance``: upgradable packages, all or
security only per ``maintenance_upgrade``, and /var/run/reboot-required). Nodes with nothing
pending are skipped (no drain, nothing changed), so a re-run on a maintained cluster does
nothing. The others go through the same engine as upgrades, one at a time (agents in batches of
``rolling_agent_batch``): health gate, cordon, drain, ``os_maintenance``
(``deploys/os_maintenance.py``), wait Ready, uncordon. ``PREFLIGHT``: the rolling settings and
the nodes' maintenance and rolling timeouts.
"""

from typing import Any

from pyinfra import host

from k3sfleet.api_ops import api_call
from k3sfleet.deploys.os_maintenance import maintenance_engine, pending_work
from k3sfleet.entry import under_pyinfra
from k3sfleet.facts.maintenance import PendingMaintenance
from k3sfleet.kube import ApiSession, cluster_api
from k3sfleet.preflight import rolling_check
from k3sfleet.rolling import NestedRunner


def _drive(state: Any, host: Any) -> None:
    runner = NestedRunner(state)
    pending = pending_work(state.inventory, runner)
    with ApiSession(state.inventory) as session:
        engine = maintenance_engine(
            session.api, state.inventory, runner, pending, reconnect=session.reopen
        )
        engine.run()


def _print_plan(state: Any) -> None:
    """The plan from the apt lists as they are now (the run refreshes them first)."""
    inventory = state.inventory
    security = next(iter(inventory)).data.get("maintenance_upgrade") == "security"
    names = [h.name for h in inventory]
    pending = NestedRunner(state).fact(names, PendingMaintenance, security_only=security)
    with cluster_api(inventory) as api:
        plan = maintenance_engine(api, inventory, None, pending).plan()
    print(plan.render() + "\n(from the current apt lists; the run refreshes them first)")


# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [rolling_check]

if under_pyinfra():
    from pyinfra import inventory, state

    first_server = (inventory.get_group("k3s_servers") or list(inventory))[0]
    if host.name == first_server.name:
        _print_plan(state)
        api_call(name="Rolling OS maintenance (k3sfleet.rolling)", function=_drive)
