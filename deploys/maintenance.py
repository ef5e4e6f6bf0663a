"""OS maintenance on the rolling engine: apt upgrade, reboot when required, journal vacuum.

    pyinfra inventory.py deploys/maintenance.py       # plan at prepare, roll at execute
    pyinfra inventory.py deploys/maintenance.py --dry # the plan only
    k3sfleet maintenance [--dry]                      # the same run without the pyinfra CLI

Each node's pending work is read first (``PendingMaintenance``: upgradable packages, all or
security only per ``maintenance_upgrade``, and /var/run/reboot-required). Nodes with nothing
pending are skipped (no drain, nothing changed), so a re-run on a maintained cluster does
nothing. The others go through the same engine as upgrades, one at a time (agents in batches of
``rolling_agent_batch``): health gate, cordon, drain, ``os_maintenance``, wait Ready, uncordon.

``os_maintenance`` upgrades packages (``apt-get dist-upgrade``, or Debian's
``unattended-upgrade`` for security only), reboots only when /var/run/reboot-required exists
afterwards (``server.reboot`` waits for the host to come back), and vacuums the journal to
``common_journald_max_use``.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, server

from k3sfleet.api_ops import api_call
from k3sfleet.entry import executed_by_pyinfra
from k3sfleet.kube import ApiSession, cluster_api
from k3sfleet.rolling import NestedRunner, RollingEngine, engine_options, inventory_targets

REBOOT_REQUIRED = "/var/run/reboot-required"
_SIMULATE = "apt-get -s -o Debug::NoLocking=1 dist-upgrade 2>/dev/null | grep '^Inst '"


class PendingMaintenance(FactBase[dict[str, Any]]):
    """Packages waiting for an upgrade (from the current apt lists) and a pending reboot.

    .. code:: python

        host.get_fact(PendingMaintenance, security_only=False)
        # {"upgrades": 3, "reboot_required": True}
    """

    def command(self, security_only: bool = False) -> StringCommand:
        simulate = _SIMULATE + (" | grep -i security" if security_only else "")
        script = (
            f"echo upgrades=$({simulate} | wc -l); "
            f"if [ -e {REBOOT_REQUIRED} ]; then echo reboot=yes; else echo reboot=no; fi"
        )
        return StringCommand("sh", "-c", QuoteString(script))

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.strip().partition("=")[::2] for line in output if "=" in line)
        return {
            "upgrades": int(values.get("upgrades") or 0),
            "reboot_required": values.get("reboot") == "yes",
        }


@deploy(
    "OS maintenance on a node",
    data_defaults={"maintenance_upgrade": "all", "maintenance_reboot_timeout": 300},
)
def os_maintenance() -> None:
    """Upgrade packages, reboot if the upgrade (or an earlier one) asked for it, vacuum.

    Example (a node action of the rolling engine)::

        StateRunner(inventory).deploy(["vps-vultr-1"], os_maintenance)
    """
    if host.data.maintenance_upgrade == "security":
        server.shell(
            name="Install security upgrades (unattended-upgrade)",
            commands=["unattended-upgrade -v"],
            _env={"DEBIAN_FRONTEND": "noninteractive"},
        )
    else:
        apt.dist_upgrade(name="Upgrade all packages (dist-upgrade)")
    server.reboot(
        name="Reboot (reboot-required)",
        reboot_timeout=int(host.data.maintenance_reboot_timeout),
        _if=lambda: host.get_fact(File, path=REBOOT_REQUIRED) is not None,
    )
    server.shell(
        name="Vacuum the journal",
        commands=[
            "journalctl --vacuum-size=" + shlex.quote(str(host.data.common_journald_max_use))
        ],
    )


def pending_work(inventory: Any, runner: Any) -> dict[str, dict[str, Any]]:
    """``PendingMaintenance`` of every host (refreshing the apt lists first)."""
    names = [h.name for h in inventory]
    runner.deploy(names, _refresh_lists)
    security = next(iter(inventory)).data.get("maintenance_upgrade") == "security"
    return dict(runner.fact(names, PendingMaintenance, security_only=security))


@deploy("Refresh apt lists")
def _refresh_lists() -> None:
    apt.update(name="apt-get update")


def maintenance_engine(
    api: Any, inventory: Any, runner: Any, pending: dict[str, dict[str, Any]], **options: Any
) -> Any:
    """A ``RollingEngine`` running ``os_maintenance`` on every node with pending work.

    ``runner``: ``StateRunner(inventory)`` from Python, ``NestedRunner(state)`` in a CLI run.
    """
    data = next(iter(inventory)).data
    options = {**engine_options(data), **options}

    def needs(target: Any, node: Any) -> bool:
        work = pending.get(target.name) or {}
        return bool(work.get("upgrades") or work.get("reboot_required"))

    return RollingEngine(
        api,
        inventory_targets(inventory),
        action=lambda names: runner.deploy(names, os_maintenance),
        needs_action=needs,
        action_name="maintenance",
        **options,
    )


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


if executed_by_pyinfra(globals()):  # not when a deploy of yours imports this file
    from pyinfra import inventory, state

    first_server = (inventory.get_group("k3s_servers") or list(inventory))[0]
    if host.name == first_server.name:
        _print_plan(state)
        api_call(name="Rolling OS maintenance (k3sfleet.rolling)", function=_drive)
