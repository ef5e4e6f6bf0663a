"""Entry files (``deploys/cluster.py`` and friends) run their deploys only under pyinfra.

pyinfra executes an entry file with a state in context; a plain ``import deploys.cluster``
(a user's own code, or the wheel check) does nothing, so importing never runs an operation.

Example (an entry file)::

    from k3sfleet.entry import under_pyinfra
    from deploys.common import common

    if under_pyinfra():
        common()
"""

from __future__ import annotations

from pyinfra.context import ctx_host, ctx_state


def under_pyinfra() -> bool:
    """Whether a pyinfra state and host are in context (the CLI, or ``add_deploy``)."""
    return ctx_state.isset() and ctx_host.isset()
