"""``k3sfleet dr``: restore a pinned stateful service onto another node, or fail a node over.

Example::

    k3sfleet dr restore-workload --app postgresql --backup latest --target-node vps-vultr-1 --dry
    k3sfleet dr failover --source-node vps-aws-1 --target-node vps-vultr-1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from k3sfleet.dr import RESTORE_TIMEOUT, failover_plan, load_services, restore_plan
from k3sfleet.kube import ApiSession, inventory_from_file


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("dr", help="disaster recovery of pinned stateful services (Velero)")
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    commands = parser.add_subparsers(dest="dr_command", metavar="ACTION")
    commands.required = True

    restore = commands.add_parser(
        "restore-workload", help="restore one stateful service from a backup onto a node"
    )
    restore.add_argument("--app", required=True, help="statefulServices name (helm/apps)")
    restore.add_argument("--backup", default="latest", help="`latest` or a backup name")
    restore.add_argument("--target-node", required=True)
    restore.add_argument("--dry", action="store_true", help="print the plan, change nothing")
    restore.add_argument(
        "--timeout", type=float, default=RESTORE_TIMEOUT, help="seconds per Restore")
    restore.set_defaults(func=run_restore)

    failover = commands.add_parser(
        "failover", help="cordon a node and restore every service pinned to it on another"
    )
    failover.add_argument("--source-node", required=True)
    failover.add_argument("--target-node", required=True)
    failover.add_argument("--dry", action="store_true", help="print the plan, change nothing")
    failover.add_argument(
        "--timeout", type=float, default=RESTORE_TIMEOUT, help="seconds per Restore")
    failover.set_defaults(func=run_failover)


def _run(args: argparse.Namespace, make_plan: object) -> int:
    services = load_services(args.project_dir)
    inventory = inventory_from_file(str((Path(args.project_dir) / args.inventory).resolve()))
    with ApiSession(inventory) as session:
        plan = make_plan(session.api, services)  # type: ignore[operator]
        print(plan.render())
        if args.dry:
            return 0
        plan.apply(session.api)
    print("done")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda api, services: restore_plan(
            api, services, args.app, args.backup, args.target_node, args.timeout
        ),
    )


def run_failover(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda api, services: failover_plan(
            api, services, args.source_node, args.target_node, args.timeout
        ),
    )
