"""Kubernetes work from the control machine inside a pyinfra run: one pattern for all of it.

The API is not a host, so pyinfra has no operation for it. k3sfleet's way is one operation,
``api_call``, added on the run's API host (``api_host_name``: the first server among the hosts
of the run). It is planned at prepare time, through the run's one ``k3sfleet.kube.ApiSession``
(``--dry`` shows what would change, named in the operation), does nothing when there is
nothing to change, and otherwise runs a function against the API when pyinfra executes it
(a ``FunctionCommand``, as pyinfra's own ``python.call`` does; but ``python.call`` declares
itself non-idempotent and always reports a change, while a converged cluster must show none).

Users: deploys/secrets.py and deploys/databases.py (one operation per Secret that differs),
deploys/upgrade.py and deploys/maintenance.py (one operation driving the rolling engine). The
``k3sfleet`` commands (backup, dr, upgrade, maintenance) call the same functions directly with
an ``ApiSession``, without pyinfra.

Example (an entry file)::

    if host.name == api_host_name(state):
        api_call(name="Label the nodes", function=label_nodes, args=(session,))
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation


def api_host_name(state: Any) -> str | None:
    """The host the API operations hang on: the first server (inventory order) among the hosts
    of this run (``--limit`` respected), else the first host of the run."""
    active = {h.name for h in state.activated_hosts} if state.activated_hosts else None
    hosts = [h for h in state.inventory if active is None or h.name in active]
    servers = [h for h in hosts if (h.data.get("k3s_role") or "server") == "server"]
    chosen = servers or hosts
    return chosen[0].name if chosen else None


# As pyinfra's python.call is declared: the function may run operations of its own (the rolling
# driver runs each node's deploy as nested operations), which pyinfra refuses inside an
# operation unless it is declared so (pyinfra/operations/python.py, pyinfra 3.x).
@operation(_set_in_op=False)
def api_call(
    function: Callable[..., Any],
    args: Sequence[Any] = (),
    changes: bool = True,
    unchanged: str = "",
) -> Generator[Any, None, None]:
    """Call ``function(state, host, *args)`` against the Kubernetes API when the run executes.

    + function: what talks to the API (gets pyinfra's ``state`` and ``host`` first)
    + args: its other arguments (shown at ``-v``: no secret values in their ``repr``)
    + changes: what the prepare-time plan found; ``False`` (converged) does nothing
    + unchanged: the noop message when nothing changes
    """
    if not changes:
        host.noop(unchanged or "nothing to change")
        return
    yield FunctionCommand(function, tuple(args), {})
