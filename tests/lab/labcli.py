"""The real ``pyinfra`` CLI for lab tests' module fixtures (which cannot use the function-scoped
``run_pyinfra`` fixture of tests/lab/conftest.py).

Example::

    run = pyinfra(inventory, "cluster", drop=("K3S_",))
    assert run.returncode == 0, run.stdout + run.stderr
    deploy_cluster(inventory)      # bootstrap, then cluster
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def pyinfra(
    inventory: Path, entry: str, *args: str, drop: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``pyinfra -y [args] inventory deploys/<entry>.py`` from the project directory, without
    the environment variables whose names start with one of ``drop`` (the tests set those
    through host data instead, so a developer's own settings cannot change the result)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop))}
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "pyinfra", "-y", *args, str(inventory), f"deploys/{entry}.py"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def output(run: subprocess.CompletedProcess[str]) -> str:
    """The end of a run's stdout and stderr, for assertion messages."""
    return f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"


def deploy_cluster(inventory: Path, drop: Sequence[str] = ()) -> None:
    """Run deploys/bootstrap.py then deploys/cluster.py on the lab of ``inventory``; fail the
    test with the output of the first one that fails."""
    for entry in ("bootstrap", "cluster"):
        run = pyinfra(inventory, entry, drop=drop)
        assert run.returncode == 0, f"deploys/{entry}.py:\n{output(run)}"
