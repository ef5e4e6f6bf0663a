"""Rolling K3s upgrade to ``k3s_version``: one node at a time, drained, on the rolling engine.

    pyinfra inventory.py deploys/upgrade.py           # plan at prepare, roll at execute
    pyinfra inventory.py deploys/upgrade.py --dry     # the plan only: order and nodes done
    k3sfleet upgrade [--dry]                          # the same run without the pyinfra CLI

pyinfra's operation order cannot express "drain A, change A, wait, uncordon A, then B", so the
entry file adds ONE operation, on the first server: an ``api_call`` that drives
``k3sfleet.rolling.RollingEngine``. The engine talks to the Kubernetes API between the steps and
runs ``k3s_upgrade`` (below) on each node as pyinfra nested operations on that node's own
connection (``NestedRunner``); ``k3sfleet upgrade`` runs it through the Python API instead
(``StateRunner``: a ``State`` per batch). Either way the node action is an ordinary deploy.
Nodes whose Node already reports ``k3s_version`` are skipped: a re-run after success does
nothing, a re-run after a failure resumes at that node.

``k3s_upgrade`` installs the binary with ``deploys.k3s_install.k3s_binary`` (the same download,
checksum and atomic install as the cluster deploys) and restarts k3s / k3s-agent. The restart is
unconditional inside this deploy because the engine only calls it for a node whose running
kubelet is not at the target: the process it runs must change even when an earlier, failed run
already replaced the binary.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd

from k3sfleet.api_ops import api_call
from k3sfleet.deploys.k3s_install import k3s_binary
from k3sfleet.entry import executed_by_pyinfra
from k3sfleet.facts.k3s import K3sVersion
from k3sfleet.kube import ApiSession, cluster_api
from k3sfleet.preflight import k3s_version_check
from k3sfleet.rolling import (
    NestedRunner,
    RollingEngine,
    engine_options,
    inventory_targets,
    kubelet_version,
)


@deploy("Upgrade K3s on a node")
def k3s_upgrade() -> None:
    """Install ``k3s_version`` through the cluster's install code and restart the service.

    Example (a node action of the rolling engine)::

        StateRunner(inventory).deploy(["vps-vultr-1"], k3s_upgrade)
    """
    version = host.data.k3s_version
    service = "k3s" if host.data.get("k3s_role") == "server" else "k3s-agent"
    installed = host.get_fact(K3sVersion)
    k3s_binary(
        name=f"Install k3s {version}",
        version=version,
        release_url=host.data.k3s_release_url,
        installed=installed,
    )
    systemd.service(
        name=f"Restart {service} on {version}",
        service=service,
        running=True,
        restarted=True,
    )


def upgrade_engine(api: Any, inventory: Any, runner: Any, **options: Any) -> Any:
    """A ``RollingEngine`` that upgrades every node of ``inventory`` to its ``k3s_version``.

    ``runner``: ``k3sfleet.rolling.StateRunner(inventory)`` from Python, ``NestedRunner(state)``
    inside a pyinfra CLI run.
    """
    first = next(iter(inventory))
    target = str(first.data.k3s_version)
    data = first.data
    options = {**engine_options(data), **options}
    return RollingEngine(
        api,
        inventory_targets(inventory),
        action=lambda names: runner.deploy(names, k3s_upgrade),
        needs_action=lambda t, node: kubelet_version(node) != target,
        action_name=f"upgrade to {target}",
        target_version=target,
        **options,
    )


def _drive(state: Any, host: Any) -> None:
    """The ``api_call`` body: the whole rolling upgrade, from the first server."""
    runner = NestedRunner(state)
    with ApiSession(state.inventory) as session:
        upgrade_engine(session.api, state.inventory, runner, reconnect=session.reopen).run()


def _print_plan(inventory: Any) -> None:
    with cluster_api(inventory) as api:
        print(upgrade_engine(api, inventory, None).plan().render(), flush=True)


# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [k3s_version_check]

if executed_by_pyinfra(globals()):  # not when a deploy of yours imports this file
    from pyinfra import inventory, state

    first_server = (inventory.get_group("k3s_servers") or list(inventory))[0]
    if host.name == first_server.name:
        _print_plan(state.inventory)
        api_call(name="Rolling K3s upgrade (k3sfleet.rolling)", function=_drive)
