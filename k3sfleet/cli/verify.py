"""``k3sfleet verify``: run the testinfra checks of tests/verify against the inventory's nodes."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from k3sfleet.errors import K3sfleetError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "verify", help="check a live cluster against what the deploys promise (testinfra)"
    )
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = Path(args.project_dir).resolve()
    suite = project / "tests" / "verify"
    if not suite.is_dir():
        raise K3sfleetError(f"k3sfleet verify: no tests/verify in {project} (run it from a clone)")
    inventory = (project / args.inventory).resolve()
    command = [sys.executable, "-m", "pytest", str(suite), "--inventory", str(inventory)]
    return subprocess.call([*command, *args.pytest_args], cwd=project)
