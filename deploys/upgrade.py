"""Rolling K3s upgrade to ``k3s_version``: one node at a time, drained, on the rolling engine.

Entry file. Run: ``pyinfra inventory.py deploys/upgrade.py`` (plan at prepare, roll at execute;
``--dry``: the plan only, order and nodes done), or ``k3sfleet upgrade [--dry]`` (the same run
without the pyinfra CLI).

pyinfra's operation order cannot express "drain A, change A, wait, uncordon A, then B", so this
file adds ONE operation, on the first server: an ``api_call`` that drives
``k3sfleet.rolling.RollingEngine`` (``upgrade_engine``, ``deploys/k3s_upgrade.py``). The engine
talks to the Kubernetes API between the steps and runs the ``k3s_upgrade`` deploy on each node
as pyinfra nested operations on that node's own connection (``NestedRunner``); ``k3sfleet
upgrade`` runs it through the Python API instead (``StateRunner``: a ``State`` per batch).
Nodes whose Node already reports ``k3s_version`` are skipped: a re-run after success does
nothing, a re-run after a failure resumes at that node. ``PREFLIGHT``: ``K3S_VERSION`` is a
K3s release not known bad for this cluster, and the rolling settings.
"""

from typing import Any

from pyinfra import host

from k3sfleet.api_ops import api_call
from k3sfleet.deploys.k3s_upgrade import upgrade_engine
from k3sfleet.entry import under_pyinfra
from k3sfleet.kube import ApiSession, cluster_api
from k3sfleet.preflight import k3s_version_check, rolling_check
from k3sfleet.rolling import NestedRunner


def _drive(state: Any, host: Any) -> None:
    """The ``api_call`` body: the whole rolling upgrade, from the first server."""
    runner = NestedRunner(state)
    with ApiSession(state.inventory) as session:
        upgrade_engine(session.api, state.inventory, runner, reconnect=session.reopen).run()


def _print_plan(inventory: Any) -> None:
    with cluster_api(inventory) as api:
        print(upgrade_engine(api, inventory, None).plan().render(), flush=True)


# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [k3s_version_check, rolling_check]

if under_pyinfra():
    from pyinfra import inventory, state

    first_server = (inventory.get_group("k3s_servers") or list(inventory))[0]
    if host.name == first_server.name:
        _print_plan(state.inventory)
        api_call(name="Rolling K3s upgrade (k3sfleet.rolling)", function=_drive)
