"""Bootstrap fresh VPSes over their public addresses: common -> firewall -> tailscale.

Entry file. Run: ``pyinfra inventory.py deploys/bootstrap.py`` (add ``--dry --diff`` to preview;
or ``k3sfleet deploy bootstrap``).

Run as the VPS's initial sudo user (``vault_ansible_users``); everything runs with sudo unless
that user is root (``_sudo`` in the host data, ``k3sfleet.inventory.sudo_data``). Importing
this module does nothing (see ``k3sfleet.entry``); ``PREFLIGHT`` (the auth key and
``data_problems``) is checked before pyinfra connects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pyinfra import host

from k3sfleet.deploys import common as common_module
from k3sfleet.deploys import firewall as firewall_module
from k3sfleet.deploys import tailscale as tailscale_module
from k3sfleet.deploys.readmodel import watch
from k3sfleet.entry import under_pyinfra
from k3sfleet.preflight import tailscale_key_check
from k3sfleet.settings import default_values

if TYPE_CHECKING:
    from k3sfleet.inventory import Node
    from k3sfleet.settings import Settings


def node_data(settings: Settings, node: Node) -> dict[str, Any]:
    """The host data the bootstrap deploys will see for ``node`` (defaults, settings, node)."""
    data: dict[str, Any] = {
        **default_values(common_module.DEFAULTS),
        **default_values(firewall_module.DEFAULTS),
        **default_values(tailscale_module.DEFAULTS),
        **settings.as_host_data(),
        "k3s_node_labels": dict(node.labels),
    }
    data.update(node.data)
    return data


def data_problems(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """Every problem with the bootstrap data of ``nodes``, each naming its node.

    Example::

        data_problems(settings, [Node("vps-1", role="server", data={"common_sshd_options": {
            "Bad Key": "x"}})])
        # ["vps-1: common_sshd_options: 'Bad Key' is not an sshd keyword with one-line value"]
    """
    found: list[str] = []
    for node in nodes:
        data = node_data(settings, node)
        # The root-login lockout is checked by the deploy itself, before it changes anything.
        problems = common_module.problems(data, session=False)
        problems += firewall_module.rule_problems(data.get("firewall_extra_rules") or [])
        problems += [p for p in tailscale_module.problems(data)
                     if not p.startswith("TAILSCALE_AUTH_KEY")]  # preflight names it once
        found += [f"{node.name}: {p}" for p in problems]
    return found


def run() -> None:
    """The bootstrap deploys for the host in context.

    What the three deploys consult is watched first, so the host's snapshot is read in one
    command (a converged node costs no other).
    """
    watch(
        files=[*common_module.FILES, *tailscale_module.FILES], links=common_module.LINKS,
        units=[*common_module.UNITS, *tailscale_module.UNITS],
        extras=[*firewall_module.EXTRAS,
                *(["tailscale"] if host.data.get("tailscale_up_by") != "k3s" else [])],
    )
    common_module.common()
    firewall_module.firewall()
    tailscale_module.tailscale()


# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [tailscale_key_check, data_problems]

if under_pyinfra():
    run()
