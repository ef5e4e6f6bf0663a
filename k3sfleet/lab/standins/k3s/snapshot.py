"""``k3s etcd-snapshot save|ls`` and ``k3s server --cluster-reset --cluster-reset-restore-path``.

Snapshots are copies of the datastore in server/db/snapshots/, named like k3s's
(``<name>-<node>-<unix time>``); they exist only when the server runs with embedded etcd
(``db/etcd/``, made by cluster-init). The datastore is kine's SQLite database
(server/db/state.db): a snapshot is an online, consistent copy made with SQLite's backup API
while kine runs (as an etcd snapshot is taken from the running member), and a restore puts it
back in place of the database (its -wal/-shm files removed) while the server is stopped.

Example::

    k3s etcd-snapshot save --name pre-upgrade
    k3s etcd-snapshot ls
"""

from __future__ import annotations

import datetime
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from . import log, node
from .server import data_dir


def _dirs(config: dict[str, Any]) -> tuple[Any, Any]:
    db = data_dir(config) / "server" / "db"
    if not (db / "etcd").is_dir():
        log.fatal("etcd datastore disabled")
    snapshots = config.get("etcd-snapshot-dir") or db / "snapshots"
    return db, snapshots


def _datastore(db: Path) -> Path:
    """kine's SQLite database."""
    return db / "state.db"


def _copy(source: Path, target: Path) -> None:
    """An online, consistent copy of a SQLite database (SQLite's backup API), mode 0600."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    target.chmod(0o600)


def run(args: list[str], config: dict[str, Any]) -> int:
    command = args[0] if args else "save"
    db, snapshots = _dirs(config)
    if command == "save":
        state = _datastore(db)
        if not state.exists():
            log.fatal(
                "etcd datastore has no data (a joining server snapshots on its cluster's "
                "first server)"
            )
        snapshots.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{config.get('name') or 'on-demand'}-{node.node_name(config)}-{int(time.time())}"
        _copy(state, snapshots / name)
        log.info(f"Saving etcd snapshot to {snapshots / name}")
        return 0
    if command in ("ls", "list"):
        print(f"{'Name':<50} {'Location':<90} {'Size':>8} Created")
        for path in sorted(snapshots.glob("*")) if snapshots.exists() else []:
            stat = path.stat()
            created = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.UTC)
            print(
                f"{path.name:<50} file://{str(path):<83} {stat.st_size:>8} "
                f"{created:%Y-%m-%dT%H:%M:%SZ}"
            )
        return 0
    if command == "delete":
        for name in args[1:]:
            (snapshots / name).unlink(missing_ok=True)
        return 0
    log.fatal(f"unknown etcd-snapshot command {command!r}")


def cluster_reset(config: dict[str, Any]) -> int:
    """--cluster-reset [--cluster-reset-restore-path P]: restore the datastore, then exit.

    As k3s-io/k3s pkg/cli/server/server.go (the ``cfg.ClusterReset`` block) does: refused while
    a server URL is set (config or flag), and a restore without a token needs server/token.
    Afterwards this server is the only member of its cluster (pkg/etcd/etcd.go ``Reset``:
    "Managed etcd cluster membership has been reset"), so it no longer follows the server it
    had joined.
    """
    if config.get("server"):
        log.fatal(
            "cannot perform cluster-reset while server URL is set - remove server from "
            "configuration before resetting"
        )
    source = config.get("cluster-reset-restore-path")
    token_file = data_dir(config) / "server" / "token"
    if source and not config.get("token") and not config.get("token-file"):
        if not token_file.exists():
            log.fatal(
                f"{token_file} does not exist, please pass --token to complete the restoration"
            )
    db, _ = _dirs(config)
    if source and not Path(str(source)).is_file():
        where = (
            "S3 (the lab stand-in restores only local snapshots)"
            if config.get("etcd-s3")
            else "this node"
        )
        log.fatal(f"etcd cluster-reset: snapshot {source} not found on {where}")
    if source:
        state = _datastore(db)
        for stale in (state.with_name(state.name + "-wal"), state.with_name(state.name + "-shm")):
            stale.unlink(missing_ok=True)
        shutil.copy2(str(source), state)
        state.chmod(0o600)
    (db / "joined.json").unlink(missing_ok=True)
    log.info(
        "Managed etcd cluster membership has been reset, restart without --cluster-reset "
        "flag now. Backup and delete ${datadir}/server/db on each peer etcd server and "
        "rejoin the nodes"
    )
    return 0
