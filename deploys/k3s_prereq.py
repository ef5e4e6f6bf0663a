"""What a node needs before K3s: IP forwarding, the kernel modules K3s uses, its directories.

Example::

    from deploys.k3s_prereq import k3s_prereq

    k3s_prereq()
"""

from __future__ import annotations

import io

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

MODULES_FILE = "/etc/modules-load.d/k3s.conf"
MODULES = ("overlay", "br_netfilter")
SYSCTLS = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}


@deploy("K3s prerequisites", data_defaults={"k3s_prereq_sysctls": SYSCTLS})
def k3s_prereq() -> None:
    """Forwarding sysctls (persisted), modules loaded at boot, /etc/rancher/k3s."""
    sudo = host.data.get("ssh_user") != "root"
    for key, value in dict(host.data.k3s_prereq_sysctls).items():
        server.sysctl(name=f"sysctl {key}={value}", key=key, value=value, persist=True, _sudo=sudo)
    files.put(
        name="Kernel modules for K3s at boot",
        src=io.StringIO("".join(f"{m}\n" for m in MODULES)),
        dest=MODULES_FILE,
        mode="644",
        _sudo=sudo,
    )
    files.directory(name="/etc/rancher/k3s", path="/etc/rancher/k3s", mode="755", _sudo=sudo)
