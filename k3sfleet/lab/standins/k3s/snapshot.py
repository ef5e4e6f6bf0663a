"""``k3s etcd-snapshot save|ls`` and ``k3s server --cluster-reset --cluster-reset-restore-path``.

Snapshots are copies of the datastore in server/db/snapshots/, named like k3s's
(``<name>-<node>-<unix time>``, name ``on-demand`` by default: k3s-io/k3s v1.34.2+k3s1
pkg/etcd/snapshot.go ``Snapshot``, ``fmt.Sprintf("%s-%s-%d", EtcdSnapshotName, nodeName,
now.Unix())``, node name from ``--node-name`` else the host name); they exist only when the
server runs with embedded etcd (``db/etcd/``, made by cluster-init).

The CLI side is pkg/cli/etcdsnapshot/etcd_snapshot.go: ``save`` logs "Snapshot <name> saved.",
``delete`` "Snapshot <name> deleted." (a warning "Snapshot <name> not found." for the others,
"no snapshots given for removal" without any), ``ls`` prints a tabwriter table (minwidth 0,
padding 1, left-aligned) ``Name Location Size Created``, Location ``file://<path>``, Created
in RFC 3339, sorted by creation time then name; a server's error reaches the CLI as "see
server log for details: <error>" (``wrapServerError``), e.g. "etcd datastore disabled".
Real k3s asks the running server to do all this (``POST /db/snapshot``); the stand-in works
on the files directly. The datastore is kine's SQLite database
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


def _dirs(config: dict[str, Any]) -> tuple[Path, Path]:
    db = data_dir(config) / "server" / "db"
    if not (db / "etcd").is_dir():
        log.fatal("see server log for details: etcd datastore disabled")
    return db, Path(str(config.get("etcd-snapshot-dir") or db / "snapshots"))


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


def snapshot_table(snapshots: Path) -> str:
    """``k3s etcd-snapshot ls``'s table (Go text/tabwriter, minwidth 0, padding 1, no flags)."""
    files = [p for p in snapshots.iterdir() if p.is_file()] if snapshots.is_dir() else []
    rows = [("Name", "Location", "Size", "Created")]
    for path in sorted(files, key=lambda p: (int(p.stat().st_mtime), p.name)):
        created = datetime.datetime.fromtimestamp(int(path.stat().st_mtime), datetime.UTC)
        rows.append((path.name, f"file://{path}", str(path.stat().st_size),
                     created.strftime("%Y-%m-%dT%H:%M:%SZ")))
    widths = [max(len(row[i]) for row in rows) + 1 for i in range(3)]
    return "".join("".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                   + row[3] + "\n" for row in rows)


def run(args: list[str], config: dict[str, Any]) -> int:
    command = args[0] if args else "save"
    db, snapshots = _dirs(config)
    if command == "save":
        state = _datastore(db)
        if not state.exists():  # (the stand-in's own: kine's data is on the first server)
            log.fatal(
                "etcd datastore has no data (a joining server snapshots on its cluster's "
                "first server)"
            )
        snapshots.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{config.get('name') or 'on-demand'}-{node.node_name(config)}-{int(time.time())}"
        _copy(state, snapshots / name)
        log.info(f"Snapshot {name} saved.")
        return 0
    if command in ("ls", "list"):
        print(snapshot_table(snapshots), end="")
        return 0
    if command == "delete":
        if not args[1:]:
            log.fatal("no snapshots given for removal")
        for name in args[1:]:
            if (snapshots / name).is_file():
                (snapshots / name).unlink()
                log.info(f"Snapshot {name} deleted.")
            else:
                log.warning(f"Snapshot {name} not found.")
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
        # (the stand-in's own wording; not found at the pinned tag)
        log.fatal(f"etcd cluster-reset: snapshot {source} not found on {where}")
    if source:
        state = _datastore(db)
        for stale in (state.with_name(state.name + "-wal"), state.with_name(state.name + "-shm")):
            stale.unlink(missing_ok=True)
        shutil.copy2(str(source), state)
        state.chmod(0o600)
    (db / "joined.json").unlink(missing_ok=True)
    # pkg/etcd/etcd.go (the --cluster-reset path of Start): the message real k3s logs
    log.info(
        "Managed etcd cluster membership has been reset, restart without --cluster-reset "
        "flag now. Backup and delete ${datadir}/server/db on each peer etcd server and "
        "rejoin the nodes"
    )
    return 0
