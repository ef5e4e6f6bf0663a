"""``k3sfleet verify``: run the testinfra checks of the verify suite (``k3sfleet.verify_suite``,
shipped with the package) against the inventory's nodes.

Example::

    k3sfleet verify                        # every check, every node of inventory.py
    k3sfleet verify -- -k firewall         # arguments after -- go to pytest
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from k3sfleet.errors import ConfigError
from k3sfleet.kube import check_syntax
from k3sfleet.project import PACKAGE_DIR

SUITE = PACKAGE_DIR / "verify_suite"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "verify", help="check a live cluster against what the deploys promise (testinfra)"
    )
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = Path(args.project_dir).resolve()
    inventory = (project / args.inventory).resolve()
    if not inventory.is_file():
        raise ConfigError(f"k3sfleet verify: no inventory {inventory}")
    check_syntax(inventory)
    command = [
        sys.executable, "-m", "pytest", str(SUITE), "--inventory", str(inventory),
        "--rootdir", str(project), "-p", "no:cacheprovider",  # nothing written into the package
    ]
    return subprocess.call([*command, *args.pytest_args], cwd=project)
