"""``k3sfleet etcd``: etcd snapshots in R2 and the commands that restore one.

Example::

    k3sfleet etcd snapshots
    k3sfleet etcd restore-commands latest      # prints the procedure; runs nothing
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from k3sfleet.backup import r2_client
from k3sfleet.errors import K3sfleetError
from k3sfleet.etcd import choose, list_snapshots, render, render_restore, restore_steps
from k3sfleet.kube import inventory_from_file
from k3sfleet.rolling import inventory_targets
from k3sfleet.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("etcd", help="etcd snapshots in R2 and their restore")
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    commands = parser.add_subparsers(dest="etcd_command", metavar="ACTION")
    commands.required = True
    snaps = commands.add_parser("snapshots", help="list the snapshots in the bucket")
    snaps.set_defaults(func=run_snapshots)
    restore = commands.add_parser(
        "restore-commands", help="print the commands that restore a snapshot"
    )
    restore.add_argument("snapshot", nargs="?", default="latest")
    restore.set_defaults(func=run_restore_commands)


def _snapshots(args: argparse.Namespace) -> Any:
    settings = Settings.load(args.project_dir, vault_password_file=args.vault_password_file)
    if not settings.k3s_etcd_s3_bucket:
        raise K3sfleetError("k3sfleet: K3S_ETCD_S3_BUCKET is not set")
    return list_snapshots(r2_client(settings), settings.k3s_etcd_s3_bucket)


def run_snapshots(args: argparse.Namespace) -> int:
    print(render(_snapshots(args)))
    return 0


def run_restore_commands(args: argparse.Namespace) -> int:
    snapshot = choose(_snapshots(args), args.snapshot)
    inventory = inventory_from_file(str((Path(args.project_dir) / args.inventory).resolve()))
    servers = [t.name for t in inventory_targets(inventory) if t.role == "server"]
    print(f"# restore etcd snapshot {snapshot.name} ({snapshot.created:%Y-%m-%d %H:%M} UTC)")
    print(render_restore(restore_steps(snapshot.name, servers)))
    return 0
