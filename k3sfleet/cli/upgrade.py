"""``k3sfleet upgrade``: the rolling K3s upgrade of deploys/upgrade.py, without the pyinfra CLI.

Example::

    k3sfleet upgrade --dry          # the plan: order, and which nodes are already at K3S_VERSION
    k3sfleet upgrade                # roll; exit code 1 and the failing node's state on failure
"""

from __future__ import annotations

import argparse
from pathlib import Path

from k3sfleet.deploys.k3s_upgrade import upgrade_engine
from k3sfleet.inventory import running
from k3sfleet.kube import ApiSession, inventory_from_file
from k3sfleet.project import entry_file
from k3sfleet.rolling import StateRunner


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("upgrade", help="rolling K3s upgrade to K3S_VERSION, node by node")
    add_rolling_arguments(parser)
    parser.set_defaults(func=run)


def add_rolling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    parser.add_argument("--dry", action="store_true", help="print the plan, change nothing")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=None,
        help="seconds to wait for Ready (default: host data rolling_ready_timeout)",
    )


def _inventory(args: argparse.Namespace) -> object:
    """The inventory, checked for the entry file of ``args.command`` (its ``PREFLIGHT``)."""
    project = Path(args.project_dir)
    with running([entry_file(args.command, project)]):
        return inventory_from_file((project / args.inventory).resolve())


def run(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    options = {"ready_timeout": args.ready_timeout} if args.ready_timeout else {}
    with ApiSession(inventory) as session:
        engine = upgrade_engine(
            session.api, inventory, StateRunner(inventory), reconnect=session.reopen, **options
        )
        if args.dry:
            print(engine.plan().render())
            return 0
        engine.run()
    return 0
