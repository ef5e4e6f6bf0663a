"""Uninstall K3s from the nodes (all of them, or those given with ``--limit``).

Entry file. Run: ``K3S_RESET_CONFIRM=yes-destroy-k3s pyinfra inventory.py deploys/reset.py``
(or ``k3sfleet deploy reset``).

Destroys the cluster's data on the nodes: runs ``k3s_absent`` (``deploys/k3s_uninstall.py``,
which says what it removes). ``PREFLIGHT``, and this file again when it runs: refused unless
``K3S_RESET_CONFIRM`` is ``yes-destroy-k3s``.
"""

from typing import Any

from pyinfra import host

from k3sfleet.deploys.k3s_uninstall import k3s_absent
from k3sfleet.entry import under_pyinfra
from k3sfleet.errors import ConfigError
from k3sfleet.facts.k3s import K3sState
from k3sfleet.preflight import k3s_reset_confirm_check

CONFIRM = "yes-destroy-k3s"


def confirm(data: Any) -> None:
    """Refuse unless the reset is confirmed."""
    if data.get("k3s_reset_confirm") != CONFIRM:
        raise ConfigError(
            f"deploys/reset.py destroys K3s and its data: set K3S_RESET_CONFIRM={CONFIRM} "
            "to confirm"
        )


# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [k3s_reset_confirm_check]

if under_pyinfra():
    confirm(host.data)
    k3s_absent(name="Uninstall K3s", state=host.get_fact(K3sState))
