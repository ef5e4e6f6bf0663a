"""etcd snapshots in R2 (k3s's own ``etcd-s3`` settings) and the commands to restore one.

With ``K3S_ETCD_S3=true`` the servers' /etc/rancher/k3s/config.yaml carries ``etcd-s3``,
``etcd-s3-endpoint``, ``etcd-s3-bucket`` and the keys (deploys/k3s_server.py), so k3s uploads
its scheduled snapshots (``etcd-snapshot-<node>-<unix time>``) and on-demand ones
(``on-demand-<node>-<unix time>``) to the bucket, with metadata under ``.metadata/``.

Restoring uses ``k3s server --cluster-reset --cluster-reset-restore-path=<snapshot>
--etcd-s3``: the S3 settings and keys are read from config.yaml, so no secret is ever on a
command line. K3s refuses ``--cluster-reset`` while ``server:`` is set ("cannot perform
cluster-reset while server URL is set - remove server from configuration before resetting",
k3s-io/k3s pkg/cli/server/server.go, the ``cfg.ClusterReset`` block), which a rebuilt first
server has (it joined the others). The reset therefore runs with config.yaml's ``server:``
line moved aside and put back right after, whatever the reset's outcome; K3s ignores
``server:`` on a server whose etcd is initialized (pkg/etcd/etcd.go ``Start``: "Starting etcd
for existing cluster member"). The other servers then join the restored one through
``deploys/cluster.py``, which points every server without a datastore at the server holding it.

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
CONFIG = "/etc/rancher/k3s/config.yaml"


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


def reset_commands(snapshot: str, config: str = CONFIG, s3: bool = True) -> list[str]:
    """The commands that reset etcd from ``snapshot`` on one server, with config.yaml's
    ``server:`` line out of the way for the reset only (K3s refuses the reset while it is set).

    Example::

        reset_commands("etcd-snapshot-s1-1767225600")
    """
    q = shlex.quote
    kept = f"{config}.pre-restore"
    reset = f"sudo k3s server --cluster-reset{' --etcd-s3' if s3 else ''}"
    if config != CONFIG:
        reset += f" --config={q(config)}"
    return [
        f"sudo cp -p {q(config)} {q(kept)}",
        f"sudo sed -i -e '/^server:/d' {q(config)}",
        f"{reset} --cluster-reset-restore-path={q(snapshot)}; "
        f"rc=$?; sudo mv -f {q(kept)} {q(config)}; test $rc -eq 0",
    ]


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
            "reset the cluster from the snapshot (S3 settings and keys come from config.yaml; "
            "its server: line, which K3s refuses during a reset, is set aside and put back)",
            reset_commands(snapshot),
        ),
        RestoreStep(first, "start k3s again", ["sudo systemctl start k3s"]),
    ]
    if others:
        steps += [
            RestoreStep(
                ", ".join(others),
                "on each other server: remove the old etcd data (k3s stays stopped)",
                [f"sudo rm -rf {DB_DIR}"],
            ),
            RestoreStep(
                "control machine",
                f"the other servers join {first} (their config is pointed at it)",
                ["pyinfra inventory.py deploys/cluster.py"],
            ),
        ]
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
