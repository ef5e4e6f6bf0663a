"""etcd snapshots in R2 (k3s's own ``etcd-s3`` settings) and the commands to restore one.

With ``K3S_ETCD_S3=true`` the servers' /etc/rancher/k3s/config.yaml carries ``etcd-s3``,
``etcd-s3-endpoint``, ``etcd-s3-bucket`` and the keys (deploys/k3s_server.py), so k3s uploads
its scheduled snapshots (``etcd-snapshot-<node>-<unix time>``) and on-demand ones
(``on-demand-<node>-<unix time>``) to the bucket, with metadata under ``.metadata/``.

Restoring uses ``k3s server --cluster-reset --cluster-reset-restore-path=<snapshot>
--etcd-s3``: the S3 settings and keys are read from config.yaml, so no secret is ever on a
command line.

Example::

    snaps = list_snapshots(r2_client(settings), settings.k3s_etcd_s3_bucket)
    print(render_restore(restore_steps(snaps[0].name, ["vps-aws-1", "vps-aws-2"])))
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from k3sfleet.backup import BackupError, bucket_objects, human_size

SNAPSHOT = re.compile(r"^(?P<kind>etcd-snapshot|on-demand)-(?P<node>.+)-(?P<ts>\d{9,11})(\.zip)?$")
DB_DIR = "/var/lib/rancher/k3s/server/db"


@dataclass
class Snapshot:
    """One etcd snapshot object in the bucket."""

    name: str
    node: str
    kind: str  # "etcd-snapshot" (scheduled) or "on-demand"
    created: datetime
    size: int
    key: str


def list_snapshots(s3: Any, bucket: str, folder: str = "") -> list[Snapshot]:
    """The k3s etcd snapshots in ``bucket`` (under ``folder``), newest first."""
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    snapshots = []
    for obj in bucket_objects(s3, bucket, prefix.rstrip("/")):
        key = obj["Key"]
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        match = SNAPSHOT.match(name)
        if "/" in name or match is None:
            continue  # .metadata/..., other folders, other files
        snapshots.append(
            Snapshot(
                name=name,
                node=match["node"],
                kind=match["kind"],
                created=datetime.fromtimestamp(int(match["ts"]), UTC),
                size=int(obj.get("Size", 0)),
                key=key,
            )
        )
    return sorted(snapshots, key=lambda s: s.created, reverse=True)


def render(snapshots: Sequence[Snapshot]) -> str:
    lines = [f"{'NAME':60} {'NODE':20} {'CREATED':20} {'SIZE':>10}"]
    for s in snapshots:
        created = s.created.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{s.name:60} {s.node:20} {created:20} {human_size(s.size):>10}")
    return "\n".join(lines)


def choose(snapshots: Sequence[Snapshot], wanted: str) -> Snapshot:
    """``latest`` or a snapshot name; a clear error when there is none."""
    if not snapshots:
        raise BackupError("k3sfleet: no etcd snapshot in the bucket (is K3S_ETCD_S3 on?)")
    if wanted == "latest":
        return snapshots[0]
    for s in snapshots:
        if s.name == wanted:
            return s
    raise BackupError(f"k3sfleet: no etcd snapshot named {wanted} in the bucket")


@dataclass
class RestoreStep:
    """One step of the restore: where it runs and the shell commands (no secrets)."""

    where: str
    what: str
    commands: list[str]


def restore_steps(snapshot: str, servers: Sequence[str]) -> list[RestoreStep]:
    """The k3s restore procedure for ``snapshot`` on ``servers`` (the first one resets).

    Example::

        restore_steps("etcd-snapshot-vps-aws-1-1767225600", ["vps-aws-1"])
    """
    if not servers:
        raise BackupError("k3sfleet: the inventory has no server")
    first, others = servers[0], list(servers[1:])
    steps = [
        RestoreStep(
            "every server",
            "stop k3s on every server",
            ["sudo systemctl stop k3s"],
        ),
        RestoreStep(
            first,
            "reset the cluster from the snapshot (S3 settings and keys come from config.yaml)",
            [
                "sudo k3s server --cluster-reset --etcd-s3 "
                f"--cluster-reset-restore-path={shlex.quote(snapshot)}"
            ],
        ),
        RestoreStep(first, "start k3s again", ["sudo systemctl start k3s"]),
    ]
    if others:
        steps.append(
            RestoreStep(
                ", ".join(others),
                "on each other server: remove the old etcd data, then rejoin",
                [f"sudo rm -rf {DB_DIR}", "sudo systemctl start k3s"],
            )
        )
    steps.append(
        RestoreStep(
            "control machine",
            "check the Nodes (agents reconnect by themselves)",
            ["k3sfleet verify", "kubectl get nodes"],
        )
    )
    return steps


def render_restore(steps: Sequence[RestoreStep]) -> str:
    lines = []
    for i, step in enumerate(steps, 1):
        lines.append(f"# {i}. {step.what} [{step.where}]")
        lines += step.commands
    return "\n".join(lines)
