"""One command from fresh VPSes to a running cluster (``init-cluster.sh --with-argocd``).

Entry file. Run: ``pyinfra inventory.py deploys/init_cluster.py`` (or ``k3sfleet deploy
init_cluster``).

Runs deploys/bootstrap.py (common, firewall, Tailscale), then deploys/cluster.py, then
deploys/argocd.py when it exists, each step finishing on every host before the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from k3sfleet.entry import under_pyinfra
from k3sfleet.preflight import steps_problems

if TYPE_CHECKING:
    from k3sfleet.inventory import Node
    from k3sfleet.settings import Settings

HERE = Path(__file__).resolve().parent
STEPS = ("bootstrap.py", "cluster.py", "argocd.py")


def steps() -> list[Path]:
    """The entry files this one runs, in order (argocd.py only once it exists)."""
    found = [HERE / name for name in STEPS if (HERE / name).is_file()]
    missing = [name for name in STEPS[:2] if not (HERE / name).is_file()]
    if missing:
        raise FileNotFoundError(f"deploys/init_cluster.py needs deploys/{', '.join(missing)}")
    return found



def steps_preflight(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """What each step needs: the PREFLIGHT of bootstrap.py, cluster.py and argocd.py."""
    return steps_problems(steps(), settings, nodes)


# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [steps_preflight]

if under_pyinfra():
    from pyinfra import local

    # One include per line: pyinfra orders operations by the line that led to them.
    first, second, *rest = steps()
    local.include(str(first))  # bootstrap
    local.include(str(second))  # cluster
    if rest:
        local.include(str(rest[0]))  # argocd
