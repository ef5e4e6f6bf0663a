"""testinfra hosts from a pyinfra inventory file, with the same SSH settings and strict host keys.

``k3sfleet/verify_suite/`` (run with ``pytest k3sfleet/verify_suite --inventory inventory.py`` or
``k3sfleet verify``) checks a live cluster against what the deploys promise. Its hosts come from
the same ``inventory.py`` the deploys use (``k3sfleet.kube.hosts_from_inventory``): no second
host list.

testinfra's own paramiko backend accepts unknown host keys with a warning; ``StrictParamikoBackend``
connects through ``k3sfleet.kube.ssh_client`` instead: the inventory's user, key, port and
known_hosts, unknown or changed host keys refused, TCP_NODELAY on.

Example::

    for node in hosts_from_inventory("inventory.py"):
        assert testinfra_host(node).service("k3s").is_running
"""

from __future__ import annotations

import functools
from typing import Any

import paramiko
import testinfra
from testinfra.backend.paramiko import ParamikoBackend

from k3sfleet.kube import HostInfo, ssh_client


class StrictParamikoBackend(ParamikoBackend):
    """testinfra's paramiko backend over ``k3sfleet.kube.ssh_client`` (strict host keys)."""

    NAME = "paramiko-strict"

    def __init__(self, info: HostInfo, **kwargs: Any) -> None:
        self.info = info
        super().__init__(info.hostname, **kwargs)

    @functools.cached_property
    def client(self) -> paramiko.SSHClient:
        return ssh_client(self.info, timeout=self.timeout)


def testinfra_host(node: HostInfo) -> testinfra.host.Host:
    """A testinfra host for ``node``; commands run through sudo when its host data says
    ``_sudo`` (``node.sudo``, ``node.sudo_user``), as pyinfra's do."""
    backend = StrictParamikoBackend(node, sudo=node.sudo, sudo_user=node.sudo_user, timeout=15)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host
