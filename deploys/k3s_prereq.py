"""What a node needs before K3s that bootstrap does not already do: K3s's directories.

Kernel modules, forwarding sysctls and swap belong to ``deploys/common.py`` (bootstrap), which
every node runs first; this deploy only creates /etc/rancher/k3s and /var/lib/rancher/k3s with
modes that keep the secrets in them private (their files are 0600 anyway).

Example::

    from deploys.k3s_prereq import k3s_prereq

    k3s_prereq()
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

DIRECTORIES = {"/etc/rancher/k3s": "755", "/var/lib/rancher/k3s": "755"}


@deploy("K3s prerequisites")
def k3s_prereq() -> None:
    """K3s's configuration and data directories, root-owned."""
    sudo = host.data.get("ssh_user") != "root"
    for path, mode in DIRECTORIES.items():
        files.directory(name=path, path=path, user="root", group="root", mode=mode, _sudo=sudo)
