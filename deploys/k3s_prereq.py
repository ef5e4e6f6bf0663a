"""What a node needs before K3s that bootstrap does not already do: K3s's directories.

Kernel modules, forwarding sysctls and swap belong to ``deploys/common.py`` (bootstrap), which
every node runs first; this deploy only creates /etc/rancher/k3s and /var/lib/rancher/k3s with
modes that keep the secrets in them private (their files are 0600 anyway).

Example::

    from k3sfleet.deploys.k3s_prereq import k3s_prereq

    k3s_prereq()
"""

from __future__ import annotations

from collections.abc import Generator, Mapping

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from k3sfleet.deploys.readmodel import file_state, record, set_file, watch
from k3sfleet.facts.k3s import DIRECTORIES as K3S_DIRECTORIES

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
def k3s_directories() -> Generator[StringCommand, None, None]:
    """K3s's directories (``DIRECTORIES``) exist, owned by root:root with their mode."""
    stale = {p: mode for p, mode in DIRECTORIES.items()
             if not _converged(file_state(p, link=True), mode)}  # type: ignore[arg-type]
    if not stale:
        host.noop("K3s's directories exist with their owner and mode")
    record(*(set_file(p, {"type": "directory", "sha256": None, "user": "root", "group": "root",
                          "mode": mode, "link_target": None}) for p, mode in stale.items()))
    for path, mode in stale.items():
        # install -d creates missing parents and sets owner and mode on an existing one
        yield StringCommand(
            "install", "-d", "-o", "root", "-g", "root", "-m", QuoteString(mode),
            QuoteString(path),
        )  # fmt: skip


@deploy("K3s prerequisites")
def k3s_prereq() -> None:
    """K3s's configuration and data directories, root-owned."""
    watch(links=DIRECTORIES)
    k3s_directories(name="K3s directories")
