"""OS maintenance of one node and the rolling engine that runs it node by node.

``os_maintenance``, each node's ``pending_work`` and ``maintenance_engine``; the entry file
``deploys/maintenance.py`` and ``k3sfleet maintenance`` drive them.

``os_maintenance`` upgrades packages (``apt-get dist-upgrade``, or Debian's
``unattended-upgrade`` for security only), reboots only when /var/run/reboot-required exists
afterwards (``server.reboot`` waits for the host to come back), and vacuums the journal to
``common_journald_max_use``.

Example (your own driver, from Python)::

    runner = StateRunner(inventory)
    with ApiSession(inventory) as session:
        maintenance_engine(session.api, inventory, runner, pending_work(inventory, runner)).run()
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, server

from k3sfleet.facts.maintenance import REBOOT_REQUIRED, PendingMaintenance
from k3sfleet.rolling import RollingEngine, engine_options, inventory_targets
from k3sfleet.settings import Default, default_values

DEFAULTS: dict[str, Default] = {
    "maintenance_reboot_timeout": Default(
        300, "seconds to wait for a node to come back from the reboot maintenance asked for"),
}


@deploy("OS maintenance on a node", data_defaults=default_values(DEFAULTS))
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

