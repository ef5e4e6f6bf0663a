"""Helpers for lab tests (mark them ``pytestmark = pytest.mark.lab``; see tests/conftest.py).

``run_pyinfra(lab, "deploys/bootstrap.py", data={...})`` runs the real ``pyinfra`` CLI from the
project directory against a fresh inventory file of ``lab`` and returns the finished process;
``pyinfra_counts(output)`` (fixture) reads pyinfra's results table.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from k3sfleet.lab import Lab, LabHost

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_pyinfra(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_pyinfra(lab, entry, *args, data=None, hosts=None)``: the pyinfra CLI, -y, against
    ``lab`` (host keys checked); ``data`` is extra host data for every host. pyinfra's stderr
    is merged into ``.stdout``."""

    def run(
        lab: Lab,
        entry: str,
        *args: str,
        data: Mapping[str, Any] | None = None,
        hosts: Iterable[str | LabHost] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        inventory = lab.write_inventory(tmp_path / f"inventory_{lab.name}.py", data, hosts)
        return subprocess.run(  # noqa: S603
            [sys.executable, "-m", "pyinfra", "-y", str(inventory), *args, entry],
            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=timeout,
        )

    return run


def changed_counts(output: str) -> dict[str, int]:
    """``{"success": n, "error": n, "no_change": n}`` from pyinfra's "Grand total" line."""
    for line in output.splitlines():
        if line.strip().startswith("Grand total"):
            nums = [int(x) if x.isdigit() else 0 for x in re.split(r"\s{2,}", line.strip())[2:]]
            nums += [0] * (3 - len(nums))
            return {"success": nums[0], "error": nums[1], "no_change": nums[2]}
    raise AssertionError(f"no pyinfra results table in:\n{output[-2000:]}")


@pytest.fixture
def pyinfra_counts() -> Callable[[str], dict[str, int]]:
    """``pyinfra_counts(proc.stdout)`` -> ``{"success", "error", "no_change"}`` totals."""
    return changed_counts
