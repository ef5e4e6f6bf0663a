"""What a node needs before K3s that bootstrap does not already do: K3s's directories.

Kernel modules, forwarding sysctls and swap belong to ``deploys/common.py`` (bootstrap), which
every node runs first; this deploy only creates /etc/rancher/k3s and /var/lib/rancher/k3s with
modes that keep the secrets in them private (their files are 0600 anyway).

Example::

    from k3sfleet.deploys.k3s_prereq import k3s_prereq

    k3s_prereq()                          # reads the directories' state itself
    k3s_prereq(state=plan.state_of(host.name))   # deploys/cluster.py: the K3sState it read
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from k3sfleet.facts.k3s import DIRECTORIES as K3S_DIRECTORIES
from k3sfleet.facts.k3s import K3sDirectories

#: K3s's directories (the paths K3sState reads) and their modes
DIRECTORIES = dict.fromkeys(K3S_DIRECTORIES, "755")


def _converged(current: Mapping[str, str] | None, mode: str) -> bool:
    return bool(
        current
        and current.get("user") == "root"
        and current.get("group") == "root"
        and int(current.get("mode") or "0", 8) == int(mode, 8)
    )


@operation()
def k3s_directories(
    current: Mapping[str, Mapping[str, str] | None] | None = None,
) -> Generator[StringCommand, None, None]:
    """K3s's directories (``DIRECTORIES``) exist, owned by root:root with their mode.

    + current: the ``directories`` of ``K3sState`` if the caller read it, to save a round
      trip; read with the ``K3sDirectories`` fact otherwise
    """
    now = current
    if now is None:
        read: dict[str, dict[str, str] | None] = host.get_fact(K3sDirectories)
        now = read
    stale = {p: mode for p, mode in DIRECTORIES.items() if not _converged(now.get(p), mode)}
    if not stale:
        host.noop("K3s's directories exist with their owner and mode")
    for path, mode in stale.items():
        # install -d creates missing parents and sets owner and mode on an existing one
        yield StringCommand(
            "install", "-d", "-o", "root", "-g", "root", "-m", QuoteString(mode),
            QuoteString(path),
        )  # fmt: skip


@deploy("K3s prerequisites")
def k3s_prereq(state: Mapping[str, Any] | None = None) -> None:
    """K3s's configuration and data directories, root-owned.

    ``state`` is the node's ``K3sState`` when the caller already read it.
    """
    k3s_directories(
        name="K3s directories",
        current=state["directories"] if state is not None else None,
    )
