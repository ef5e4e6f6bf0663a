"""Velero backups: create, list, describe, through the Kubernetes API or straight from R2.

Backups are ``velero.io/v1`` ``Backup`` objects in namespace ``velero`` (storage location
``default``, file-system backup of local-path volumes, as helm/infrastructure configures
Velero). When the cluster is down (the disaster case) the backups are read from the R2 bucket
itself, in Velero's object layout::

    backups/<name>/velero-backup.json        the Backup object as Velero stored it
    backups/<name>/<name>.tar.gz             the resources; -logs.gz, -podvolumebackups.json.gz...

Example::

    with cluster_api("inventory.py") as api:
        name = create_backup(api, namespaces=["database"])
        print(wait_backup(api, name).phase)          # "Completed"
    for b in list_bucket_backups(r2_client(settings), settings.velero_bucket):
        print(b.name, b.phase, b.size, b.started)    # newest first
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from k3sfleet.errors import K3sfleetError
from k3sfleet.secret import reveal

GROUP, VERSION = "velero.io", "v1"
NAMESPACE = "velero"
STORAGE_LOCATION = "default"
SERVICE_LABEL = "k3sfleet.io/stateful-service"
DONE_PHASES = ("Completed", "PartiallyFailed", "Failed", "FailedValidation")
TTL = "720h0m0s"  # how long Velero keeps a backup k3sfleet makes (`backup create --ttl`)
WAIT_TIMEOUT = 3600.0  # seconds `backup create --wait` waits for a final phase
POLL_INTERVAL = 5.0  # seconds between two reads of a Backup being waited for


class BackupError(K3sfleetError):
    """A backup could not be created, found or read; the message says why and what to check."""


@dataclass
class BackupInfo:
    """One Velero backup, from the cluster or from the bucket."""

    name: str
    phase: str = ""
    started: datetime | None = None
    completed: datetime | None = None
    expires: datetime | None = None
    namespaces: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    size: int | None = None  # bytes in the bucket (bucket listings only)
    errors: int = 0
    warnings: int = 0
    source: str = "cluster"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], source: str = "cluster") -> BackupInfo:
        """From a Backup object (the API's dict, or velero-backup.json)."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        return cls(
            name=str(meta.get("name", "")),
            phase=str(status.get("phase") or ""),
            started=parse_time(status.get("startTimestamp") or meta.get("creationTimestamp")),
            completed=parse_time(status.get("completionTimestamp")),
            expires=parse_time(status.get("expiration")),
            namespaces=list(spec.get("includedNamespaces") or []),
            labels=dict(meta.get("labels") or {}),
            errors=int(status.get("errors") or 0),
            warnings=int(status.get("warnings") or 0),
            source=source,
            raw=dict(obj),
        )

    @property
    def sort_key(self) -> datetime:
        return self.started or datetime.min.replace(tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``2026-01-02T03:04:05Z``) or a datetime, as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def render(backups: Sequence[BackupInfo]) -> str:
    """A table of backups: name, phase, started, size, namespaces."""
    lines = [f"{'NAME':40} {'PHASE':16} {'STARTED':20} {'SIZE':>10}  NAMESPACES"]
    for b in backups:
        started = b.started.strftime("%Y-%m-%d %H:%M:%S") if b.started else "-"
        namespaces = ",".join(b.namespaces) or "*"
        lines.append(
            f"{b.name:40} {b.phase or '-':16} {started:20} {human_size(b.size):>10}  {namespaces}"
        )
    return "\n".join(lines)


# -- through the Kubernetes API ------------------------------------------------------------


def _custom(api: Any) -> Any:
    """The ``CustomObjectsApi`` of an ``ApiClient`` (Velero's objects are custom resources)."""
    return client.CustomObjectsApi(api)


def backup_manifest(
    name: str,
    namespaces: Sequence[str] = (),
    *,
    labels: Mapping[str, str] | None = None,
    label_selector: Mapping[str, str] | None = None,
    ttl: str = TTL,
) -> dict[str, Any]:
    """The ``velero.io/v1`` Backup object k3sfleet creates.

    Example::

        backup_manifest("manual-1", ["database"])["spec"]["includedNamespaces"]  # ["database"]
    """
    spec: dict[str, Any] = {
        "storageLocation": STORAGE_LOCATION,
        "ttl": ttl,
        "defaultVolumesToFsBackup": True,
        "snapshotVolumes": False,
    }
    if namespaces:
        spec["includedNamespaces"] = list(namespaces)
    if label_selector:
        spec["labelSelector"] = {"matchLabels": dict(label_selector)}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "k3sfleet", **(labels or {})},
        },
        "spec": spec,
    }


def new_name(prefix: str = "k3sfleet") -> str:
    """``<prefix>-YYYYMMDD-HHMMSS`` (UTC), a valid Kubernetes object name."""
    return f"{prefix}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def create_backup(
    api: Any,
    name: str | None = None,
    namespaces: Sequence[str] = (),
    **kwargs: Any,
) -> str:
    """Create a Backup object; return its name."""
    name = name or new_name()
    body = backup_manifest(name, namespaces, **kwargs)
    try:
        _custom(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "backups", body)
    except ApiException as e:
        if e.status == 404:
            raise BackupError(
                "k3sfleet: the cluster has no Velero (velero.io/v1 Backup in namespace velero): "
                "is the infrastructure chart synced?"
            ) from None
        if e.status == 409:
            raise BackupError(f"k3sfleet: a backup named {name} exists already") from None
        raise BackupError(
            f"k3sfleet: creating backup {name}: API error {e.status} {e.reason}"
        ) from None
    return name


def get_backup(api: Any, name: str) -> BackupInfo:
    try:
        obj = _custom(api).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "backups", name)
    except ApiException as e:
        if e.status == 404:
            raise BackupError(f"k3sfleet: no backup named {name} in the cluster") from None
        raise BackupError(
            f"k3sfleet: reading backup {name}: API error {e.status} {e.reason}"
        ) from None
    return BackupInfo.from_object(obj)


def wait_backup(api: Any, name: str, timeout: float = WAIT_TIMEOUT) -> BackupInfo:
    """Poll the Backup until its phase is final (Completed, PartiallyFailed, Failed...),
    printing each phase it passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        info = get_backup(api, name)
        if info.phase != last:
            print(f"backup {name}: {info.phase or 'New'}")
            last = info.phase
        if info.phase in DONE_PHASES:
            return info
        if time.monotonic() >= deadline:
            raise BackupError(
                f"k3sfleet: backup {name} still {info.phase or 'New'} after {timeout:.0f}s"
            )
        time.sleep(POLL_INTERVAL)


def list_cluster_backups(api: Any, labels: Mapping[str, str] | None = None) -> list[BackupInfo]:
    """Backups known to the cluster, newest first (``labels``: only those carrying them)."""
    selector = ",".join(f"{k}={v}" for k, v in (labels or {}).items())
    try:
        result = _custom(api).list_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            "backups",
            **({"label_selector": selector} if selector else {}),
        )
    except ApiException as e:
        raise BackupError(f"k3sfleet: listing backups: API error {e.status} {e.reason}") from None
    items = [BackupInfo.from_object(o) for o in result.get("items", [])]
    if labels:  # also filter here: not every API server applies label selectors on CRs
        items = [b for b in items if all(b.labels.get(k) == v for k, v in labels.items())]
    return sorted(items, key=lambda b: b.sort_key, reverse=True)


def latest_completed(backups: Iterable[BackupInfo]) -> BackupInfo | None:
    """The newest backup whose phase is Completed."""
    done = [b for b in backups if b.phase == "Completed"]
    return max(done, key=lambda b: b.sort_key) if done else None


# -- straight from the bucket (R2, or any S3 API) -------------------------------------------


def r2_client(settings: Any) -> Any:
    """A boto3 S3 client for R2 from the settings (``R2_ENDPOINT``, ``R2_ACCESS_KEY_ID``...)."""
    try:
        import boto3  # in-function: boto3 is the optional [backup] extra
        from botocore.config import Config
    except ImportError:
        raise BackupError(
            "k3sfleet: reading R2 needs boto3, an extra: pip install 'k3sfleet[backup]'"
        ) from None

    missing = settings.missing("r2_endpoint", "r2_access_key_id", "r2_secret_access_key")
    if missing:
        raise BackupError(f"k3sfleet: reading R2 needs {', '.join(missing)}")
    return boto3.client(
        "s3",
        endpoint_url=settings.r2_endpoint,
        aws_access_key_id=reveal(settings.r2_access_key_id),
        aws_secret_access_key=reveal(settings.r2_secret_access_key),
        region_name="auto",
        config=Config(retries={"max_attempts": 2}, connect_timeout=10, read_timeout=30),
    )


def s3_error(e: Exception, bucket: str) -> BackupError:
    """A clear message for what S3/R2 answered."""
    # in-function: botocore comes with boto3, the optional [backup] extra
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404"):
            return BackupError(f"k3sfleet: bucket {bucket} does not exist (check VELERO_BUCKET)")
        if code in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403",
            "Unauthorized",
        ):
            return BackupError(
                f"k3sfleet: R2 refused the credentials for bucket {bucket} ({code}): check "
                "R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY"
            )
        return BackupError(f"k3sfleet: R2 error on bucket {bucket}: {code}")
    if isinstance(e, EndpointConnectionError):
        return BackupError(f"k3sfleet: cannot reach R2 ({e}): check R2_ENDPOINT")
    if isinstance(e, NoCredentialsError):
        return BackupError("k3sfleet: no R2 credentials (R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY)")
    return BackupError(f"k3sfleet: R2: {e}")


def bucket_objects(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    from botocore.exceptions import BotoCoreError, ClientError  # in-function: [backup] extra

    objects: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))
    except (ClientError, BotoCoreError) as e:
        raise s3_error(e, bucket) from None
    return objects


def list_bucket_backups(s3: Any, bucket: str, prefix: str = "") -> list[BackupInfo]:
    """Backups in Velero's layout in ``bucket`` (under ``prefix``), newest first, with sizes."""
    from botocore.exceptions import BotoCoreError, ClientError  # in-function: [backup] extra

    root = f"{prefix.strip('/')}/backups/" if prefix.strip("/") else "backups/"
    by_name: dict[str, list[dict[str, Any]]] = {}
    # list by the prefix without its trailing "/" (some S3 servers mis-sign an encoded "/" in
    # the query) and keep only the keys under it
    for obj in bucket_objects(s3, bucket, root.rstrip("/")):
        if not obj["Key"].startswith(root):
            continue
        rest = obj["Key"][len(root) :]
        name, _, _ = rest.partition("/")
        if name:
            by_name.setdefault(name, []).append(obj)
    backups = []
    for name, objects in by_name.items():
        meta_key = f"{root}{name}/velero-backup.json"
        info = BackupInfo(name=name, source="bucket")
        if any(o["Key"] == meta_key for o in objects):
            try:
                body = s3.get_object(Bucket=bucket, Key=meta_key)["Body"].read()
                info = BackupInfo.from_object(json.loads(body), source="bucket")
            except (ClientError, BotoCoreError) as e:
                raise s3_error(e, bucket) from None
            except ValueError:
                info.phase = "unreadable"
        if info.started is None:
            info.started = max(parse_time(o["LastModified"]) or info.sort_key for o in objects)
        info.size = sum(int(o.get("Size", 0)) for o in objects)
        backups.append(info)
    return sorted(backups, key=lambda b: b.sort_key, reverse=True)


def describe(info: BackupInfo) -> str:
    """A multi-line description of one backup."""

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S %Z") if value else "-"

    spec = info.raw.get("spec") or {}
    lines = [
        f"Name:        {info.name}",
        f"Phase:       {info.phase or '-'}",
        f"Source:      {info.source}",
        f"Namespaces:  {', '.join(info.namespaces) or '* (all)'}",
        f"Labels:      {', '.join(f'{k}={v}' for k, v in sorted(info.labels.items())) or '-'}",
        f"Started:     {when(info.started)}",
        f"Completed:   {when(info.completed)}",
        f"Expires:     {when(info.expires)}",
        f"TTL:         {spec.get('ttl', '-')}",
        f"Errors:      {info.errors}   Warnings: {info.warnings}",
    ]
    if info.size is not None:
        lines.append(f"Size:        {human_size(info.size)}")
    return "\n".join(lines)
