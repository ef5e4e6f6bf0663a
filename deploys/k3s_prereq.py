"""What a node needs before K3s that bootstrap does not already do: K3s's directories.

Kernel modules, forwarding sysctls and swap belong to ``deploys/common.py`` (bootstrap), which
every node runs first; this deploy only creates /etc/rancher/k3s and /var/lib/rancher/k3s with
modes that keep the secrets in them private (their files are 0600 anyway).

Example::

    from deploys.k3s_prereq import k3s_prereq

    k3s_prereq()                          # reads the directories' state itself
    k3s_prereq(state=plan.state_of(host.name))   # deploys/cluster.py: the K3sState it read
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from facts.k3s import K3sDirectories

DIRECTORIES = {"/etc/rancher/k3s": "755", "/var/lib/rancher/k3s": "755"}


def _converged(current: Mapping[str, str] | None, mode: str) -> bool:
    return bool(
        current
        and current.get("user") == "root"
        and current.get("group") == "root"
        and int(current.get("mode") or "0", 8) == int(mode, 8)
    )


@operation()
def k3s_directories(
    directories: Mapping[str, str] | None = None,
    current: Mapping[str, Mapping[str, str] | None] | None = None,
) -> Generator[StringCommand, None, None]:
    """K3s's directories exist, owned by root:root with their mode.

    + directories: path -> octal mode (default ``DIRECTORIES``)
    + current: the ``directories`` of ``K3sState`` if the caller read it, to save a round
      trip; read with the ``K3sDirectories`` fact otherwise
    """
    wanted = DIRECTORIES if directories is None else directories
    now = current
    if now is None:
        read: dict[str, dict[str, str] | None] = host.get_fact(K3sDirectories)
        now = read
    for path, mode in wanted.items():
        if not _converged(now.get(path), mode):
            # install -d creates missing parents and sets owner and mode on an existing one
            yield StringCommand(
                "install", "-d", "-o", "root", "-g", "root", "-m", QuoteString(mode),
                QuoteString(path),
            )  # fmt: skip
    if all(_converged(now.get(path), mode) for path, mode in wanted.items()):
        host.noop("K3s's directories exist with their owner and mode")


@deploy("K3s prerequisites")
def k3s_prereq(state: Mapping[str, Any] | None = None) -> None:
    """K3s's configuration and data directories, root-owned.

    ``state`` is the node's ``K3sState`` when the caller already read it.
    """
    sudo = host.data.get("ssh_user") != "root"
    k3s_directories(
        name="K3s directories",
        current=state["directories"] if state is not None else None,
        _sudo=sudo,
    )
