"""``k3sfleet backup``: Velero backups through the cluster, or straight from R2 when it is down.

Example::

    k3sfleet backup create --namespaces database --wait
    k3sfleet backup list                  # from the cluster; from the R2 bucket if it is down
    k3sfleet backup list --from-bucket    # the disaster case, without trying the cluster
    k3sfleet backup describe k3sfleet-20260101-020000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from k3sfleet.backup import (
    TTL,
    WAIT_TIMEOUT,
    BackupError,
    create_backup,
    describe,
    get_backup,
    list_bucket_backups,
    list_cluster_backups,
    r2_client,
    render,
    wait_backup,
)
from k3sfleet.errors import K3sfleetError
from k3sfleet.kube import ApiSession, inventory_from_file
from k3sfleet.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("backup", help="Velero backups: create, list, describe")
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    commands = parser.add_subparsers(dest="backup_command", metavar="ACTION")
    commands.required = True

    create = commands.add_parser("create", help="create a Velero Backup")
    create.add_argument(
        "--namespaces", default="", help="comma-separated namespaces (default: all)"
    )
    create.add_argument("--name", default=None, help="backup name (default: k3sfleet-<time>)")
    create.add_argument("--ttl", default=TTL, help="how long Velero keeps it")
    create.add_argument("--wait", action="store_true", help="wait for the final phase")
    create.add_argument("--timeout", type=float, default=WAIT_TIMEOUT, help="seconds to wait")
    create.set_defaults(func=run_create)

    listing = commands.add_parser("list", help="list backups, newest first")
    listing.add_argument(
        "--from-bucket", action="store_true", help="read the R2 bucket, not the cluster"
    )
    listing.set_defaults(func=run_list)

    describe = commands.add_parser("describe", help="show one backup")
    describe.add_argument("name")
    describe.add_argument("--from-bucket", action="store_true", help="read the R2 bucket")
    describe.set_defaults(func=run_describe)


def _settings(args: argparse.Namespace) -> Any:
    return Settings.load(args.project_dir, vault_password_file=args.vault_password_file)


def _inventory(args: argparse.Namespace) -> Any:
    return inventory_from_file(str((Path(args.project_dir) / args.inventory).resolve()))


def _bucket(settings: Any) -> str:
    if not settings.velero_bucket:
        raise K3sfleetError("k3sfleet: VELERO_BUCKET is not set")
    return str(settings.velero_bucket)


def run_create(args: argparse.Namespace) -> int:
    namespaces = [n.strip() for n in args.namespaces.split(",") if n.strip()]
    with ApiSession(_inventory(args)) as session:
        name = create_backup(session.api, args.name, namespaces, ttl=args.ttl)
        print(f"backup {name} created ({', '.join(namespaces) or 'all namespaces'})")
        if args.wait:
            info = wait_backup(session.api, name, timeout=args.timeout)
            return 0 if info.phase == "Completed" else 1
    return 0


def _cluster_or_bucket(args: argparse.Namespace, use_cluster: Any, use_bucket: Any) -> Any:
    if not args.from_bucket:
        try:
            with ApiSession(_inventory(args)) as session:
                return use_cluster(session.api)
        except K3sfleetError as e:
            if "no backup named" in str(e):
                raise
            print(
                f"k3sfleet: the cluster is not reachable, reading the bucket ({e})", file=sys.stderr
            )
    return use_bucket()


def run_list(args: argparse.Namespace) -> int:
    def from_bucket() -> Any:
        settings = _settings(args)
        return list_bucket_backups(r2_client(settings), _bucket(settings))

    backups = _cluster_or_bucket(args, list_cluster_backups, from_bucket)
    print(render(backups))
    return 0


def run_describe(args: argparse.Namespace) -> int:
    def from_bucket() -> Any:
        settings = _settings(args)
        for b in list_bucket_backups(r2_client(settings), _bucket(settings)):
            if b.name == args.name:
                return b
        raise BackupError(f"k3sfleet: no backup named {args.name} in the bucket")

    info = _cluster_or_bucket(args, lambda api: get_backup(api, args.name), from_bucket)
    print(describe(info))
    return 0
