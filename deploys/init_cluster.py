"""Entry file: one command from fresh VPSes to a running cluster (the Ansible repository's
``init-cluster.sh --with-argocd``).

    pyinfra inventory.py deploys/init_cluster.py

Runs deploys/bootstrap.py (common, firewall, Tailscale), then deploys/cluster.py, then
deploys/argocd.py when it exists, each step finishing on every host before the next.
"""

from pathlib import Path

from k3sfleet.entry import under_pyinfra

HERE = Path(__file__).resolve().parent
STEPS = ("bootstrap.py", "cluster.py", "argocd.py")


def steps() -> list[Path]:
    """The entry files this one runs, in order (argocd.py only once it exists)."""
    found = [HERE / name for name in STEPS if (HERE / name).is_file()]
    missing = [name for name in STEPS[:2] if not (HERE / name).is_file()]
    if missing:
        raise FileNotFoundError(f"deploys/init_cluster.py needs deploys/{', '.join(missing)}")
    return found


if under_pyinfra():
    from pyinfra import local

    # One include per line: pyinfra orders operations by the line that led to them.
    first, second, *rest = steps()
    local.include(str(first))  # bootstrap
    local.include(str(second))  # cluster
    if rest:
        local.include(str(rest[0]))  # argocd
