"""``k3sfleet maintenance``: rolling OS maintenance (deploys/maintenance.py) without pyinfra's CLI.

Example::

    k3sfleet maintenance --dry      # pending upgrades / reboots per node, and the order
    k3sfleet maintenance            # apt upgrade, reboot if required, vacuum; node by node
"""

from __future__ import annotations

import argparse

from k3sfleet.cli.upgrade import _inventory, add_rolling_arguments
from k3sfleet.deploys.os_maintenance import maintenance_engine, pending_work
from k3sfleet.kube import ApiSession
from k3sfleet.rolling import StateRunner


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "maintenance", help="rolling OS maintenance: apt upgrade, reboot when required"
    )
    add_rolling_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    runner = StateRunner(inventory)
    pending = pending_work(inventory, runner)
    for name, work in pending.items():
        reboot = ", reboot required" if work["reboot_required"] else ""
        print(f"{name}: {work['upgrades']} package upgrade(s){reboot}")
    options = {"ready_timeout": args.ready_timeout} if args.ready_timeout else {}
    with ApiSession(inventory) as session:
        engine = maintenance_engine(
            session.api, inventory, runner, pending, reconnect=session.reopen, **options
        )
        if args.dry:
            print(engine.plan().render())
            return 0
        engine.run()
    return 0
