"""The K3s upgrade of one node and the rolling engine that runs it node by node.

``k3s_upgrade`` and ``upgrade_engine``; the entry file ``deploys/upgrade.py`` and ``k3sfleet
upgrade`` drive them.

``k3s_upgrade`` installs the binary with ``deploys.k3s_install.k3s_binary`` (the same download,
checksum and atomic install as the cluster deploys) and restarts k3s / k3s-agent. The restart is
unconditional inside this deploy because the engine only calls it for a node whose running
kubelet is not at the target: the process it runs must change even when an earlier, failed run
already replaced the binary.

Example (your own driver, from Python)::

    with ApiSession(inventory) as session:
        upgrade_engine(session.api, inventory, StateRunner(inventory)).run()
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd

from k3sfleet.deploys.k3s_install import k3s_binary
from k3sfleet.rolling import (
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
    k3s_binary(
        name=f"Install k3s {version}",
        version=version,
        release_url=host.data.k3s_release_url,
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

