"""Entry files (``deploys/cluster.py`` and friends) run their deploys only under pyinfra.

pyinfra executes an entry file with a state in context; a plain ``import k3sfleet.deploys.cluster``
(a user's own code, or the wheel check) does nothing, so importing never runs an operation. An
entry file declares the checks it needs before any host is contacted in ``PREFLIGHT`` (see
``k3sfleet.preflight``, which reads it with ``under_pyinfra()`` false).

Example (an entry file)::

    from k3sfleet.entry import under_pyinfra
    from k3sfleet.deploys.common import common
    from k3sfleet.preflight import tailscale_key_check

    PREFLIGHT = [tailscale_key_check]

    if under_pyinfra():
        common()
"""

from __future__ import annotations

from pyinfra.context import ctx_host, ctx_state

from k3sfleet.connect import set_host_tcp_nodelay
from k3sfleet.preflight import reading_declarations


def under_pyinfra() -> bool:
    """Whether a pyinfra state and host are in context (the CLI, or ``add_deploy``).

    Under pyinfra it also turns TCP_NODELAY on for the host's SSH connection before the entry
    file reads any fact (see ``k3sfleet.connect``).
    """
    if reading_declarations.get() or not (ctx_state.isset() and ctx_host.isset()):
        return False
    set_host_tcp_nodelay(ctx_host.get())
    return True
