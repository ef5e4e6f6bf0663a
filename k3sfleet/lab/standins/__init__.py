"""Stand-ins for k3s, used only by the lab (never by product code).

The lab's hosts are real Debian systems running the real Tailscale (k3sfleet.lab.tailnet); only
k3s and the Kubernetes API server are replaced, because they cannot be had here. Each stand-in
keeps the real program's interface (paths, flags, exit codes, output formats) for exactly what
k3sfleet uses.

Example::

    from k3sfleet.lab.standins import LAB_K3S_VERSIONS, install_runtime, runtime_hash
    install_runtime(Path("/var/lib/k3sfleet-lab/rootfs"), Path("~/.cache/k3sfleet").expanduser())
"""

from __future__ import annotations

from k3sfleet.lab.standins.runtime import (
    RUNTIME_PREFIX,
    RUNTIME_PYTHON,
    install_runtime,
    runtime_hash,
)

LAB_K3S_VERSIONS: tuple[str, ...] = ("v1.33.6+k3s1", "v1.34.2+k3s1")

__all__ = [
    "LAB_K3S_VERSIONS",
    "RUNTIME_PREFIX",
    "RUNTIME_PYTHON",
    "install_runtime",
    "runtime_hash",
]
