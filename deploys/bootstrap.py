"""Bootstrap fresh VPSes over their public addresses: common -> firewall -> tailscale.

    pyinfra inventory.py deploys/bootstrap.py            # add --dry --diff to preview

Run as the VPS's initial sudo user (``vault_ansible_users``); everything runs with sudo unless
that user is root. Importing this module does nothing (see ``k3sfleet.entry``).
"""

from pyinfra import host

from deploys.common import common
from deploys.firewall import firewall
from deploys.tailscale import tailscale
from facts.os import SystemInfo
from k3sfleet.entry import under_pyinfra


def run() -> None:
    """The bootstrap deploys for the host in context."""
    sudo = (host.data.get("ssh_user") or "root") != "root"
    info = host.get_fact(SystemInfo)  # read once, used by common and tailscale
    common(info=info, _sudo=sudo)
    firewall(_sudo=sudo)
    tailscale(info=info, _sudo=sudo)


if under_pyinfra():
    run()
