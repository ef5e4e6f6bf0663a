"""testinfra hosts from a pyinfra inventory file, with the same SSH settings and strict host keys.

``tests/verify/`` (run with ``pytest tests/verify --inventory inventory.py`` or
``k3sfleet verify``) checks a live cluster against what the deploys promise. Its hosts come from
the same ``inventory.py`` the deploys use: no second host list.

testinfra's own paramiko backend accepts unknown host keys with a warning; ``StrictParamikoBackend``
rejects them, reading the inventory's ``ssh_known_hosts_file`` instead.

Example::

    for node in inventory_nodes("inventory.py"):
        host = testinfra_host(node)
        assert host.service("k3s").is_running
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import testinfra
from testinfra.backend.paramiko import ParamikoBackend

from k3sfleet.connect import set_tcp_nodelay


@dataclass(frozen=True)
class InventoryNode:
    """One host of a pyinfra inventory file, with the data the checks need."""

    name: str
    groups: tuple[str, ...]
    data: dict[str, Any] = field(hash=False, compare=False)

    @property
    def role(self) -> str:
        default = "server" if "k3s_servers" in self.groups else "agent"
        return str(self.data.get("k3s_role") or default)

    @property
    def address(self) -> str:
        return str(self.data.get("ssh_hostname") or self.name)


def inventory_nodes(path: str | Path) -> list[InventoryNode]:
    """The hosts of the pyinfra inventory file ``path``, loaded the way the pyinfra CLI loads it
    (so its validation runs, and its errors name every problem)."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    path = Path(path).resolve()
    with ctx_state.use(State()):
        inventory = make_inventory(str(path), cwd=str(path.parent))
    nodes = []
    for host in inventory:
        data = {key: host.data.get(key) for key in host.data.dict()}
        nodes.append(InventoryNode(host.name, tuple(host.groups), data))
    return nodes


class StrictParamikoBackend(ParamikoBackend):
    """testinfra's paramiko backend with known_hosts checking (RejectPolicy) and TCP_NODELAY."""

    NAME = "paramiko-strict"

    def __init__(self, hostspec: str, *, known_hosts: str, port: int = 22, **kwargs: Any):
        self.known_hosts = known_hosts
        self.ssh_port = port
        super().__init__(hostspec, **kwargs)

    @functools.cached_property
    def client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(Path(self.known_hosts).expanduser()))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock = socket.create_connection((self.host.name, self.ssh_port), timeout=self.timeout)
        set_tcp_nodelay(sock)
        client.connect(
            hostname=self.host.name,
            port=self.ssh_port,
            username=self.host.user,
            key_filename=self.ssh_identity_file,
            timeout=self.timeout,
            sock=sock,
            look_for_keys=self.ssh_identity_file is None,
        )
        return client


def testinfra_host(node: InventoryNode, *, sudo: bool = True) -> testinfra.host.Host:
    """A testinfra host for ``node`` over SSH with the inventory's user, key and known_hosts."""
    data = node.data
    user = data.get("ssh_user")
    spec = f"{user}@{node.address}" if user else node.address
    backend = StrictParamikoBackend(
        spec,
        known_hosts=str(data.get("ssh_known_hosts_file") or "~/.ssh/known_hosts"),
        port=int(data.get("ssh_port") or 22),
        ssh_identity_file=data.get("ssh_key"),
        sudo=sudo,
        timeout=15,
    )
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host
