"""Backups read straight from an S3 bucket (moto in server mode on 127.0.0.1) in Velero's layout,
and Backup objects made through the Kubernetes API (an in-memory CustomObjectsApi)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from k3sfleet import backup
from k3sfleet.backup import (
    BackupError,
    BackupInfo,
    backup_manifest,
    create_backup,
    latest_completed,
    list_bucket_backups,
    list_cluster_backups,
    r2_client,
    render,
    wait_backup,
)
from k3sfleet.settings import Settings

BUCKET = "velero-backups"
ETCD_BUCKET = "etcd-snapshots"


def velero_backup_json(name: str, started: str, phase: str = "Completed") -> bytes:
    return json.dumps(
        {
            "apiVersion": "velero.io/v1",
            "kind": "Backup",
            "metadata": {"name": name, "namespace": "velero", "labels": {"a": "b"}},
            "spec": {"includedNamespaces": ["database"], "ttl": "720h0m0s"},
            "status": {"phase": phase, "startTimestamp": started},
        }
    ).encode()


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    admin = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
        region_name="us-east-1",
    )
    admin.create_bucket(Bucket=BUCKET)
    layout = {
        "daily-20260101": ("2026-01-01T02:00:00Z", "Completed", 1000),
        "daily-20260103": ("2026-01-03T02:00:00Z", "PartiallyFailed", 3000),
        "daily-20260102": ("2026-01-02T02:00:00Z", "Completed", 2000),
    }
    sizes = {}
    for name, (started, phase, size) in layout.items():
        meta = velero_backup_json(name, started, phase)
        sizes[name] = len(meta) + size + 10
        admin.put_object(Bucket=BUCKET, Key=f"backups/{name}/velero-backup.json", Body=meta)
        admin.put_object(Bucket=BUCKET, Key=f"backups/{name}/{name}.tar.gz", Body=b"x" * size)
        admin.put_object(Bucket=BUCKET, Key=f"backups/{name}/{name}-logs.gz", Body=b"l" * 10)
    admin.put_object(Bucket=BUCKET, Key="restores/r1/restore-r1-logs.gz", Body=b"r")
    admin.create_bucket(Bucket=ETCD_BUCKET)
    for key, size in [
        ("etcd-snapshot-vps-aws-1-1767225600", 500),  # 2026-01-01 00:00 UTC
        ("etcd-snapshot-vps-aws-1-1767312000", 700),  # 2026-01-02
        ("on-demand-vps-aws-2-1767268800", 600),  # 2026-01-01 12:00
        (".metadata/etcd-snapshot-vps-aws-1-1767312000", 50),
        ("notes.txt", 5),
    ]:
        admin.put_object(Bucket=ETCD_BUCKET, Key=key, Body=b"e" * size)
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
        region_name="us-east-1",
    )
    iam.create_user(UserName="velero")
    iam.put_user_policy(
        UserName="velero",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="velero")["AccessKey"]
    # from here on, moto checks credentials like R2 does
    reset_auth(endpoint, b"0")
    try:
        yield {
            "endpoint": endpoint,
            "key": key["AccessKeyId"],
            "secret": key["SecretAccessKey"],
            "sizes": sizes,
        }
    finally:
        reset_auth(endpoint, b"inf")
        server.stop()


def reset_auth(endpoint: str, count: bytes) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=count,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback moto server
        assert response.status == 200


def settings_for(s3: dict[str, Any], key: str | None = None, secret: str | None = None) -> Any:
    return Settings.load(
        "/nonexistent",
        environ={
            "R2_ENDPOINT": s3["endpoint"],
            "R2_ACCESS_KEY_ID": key or s3["key"],
            "R2_SECRET_ACCESS_KEY": secret or s3["secret"],
            "VELERO_BUCKET": BUCKET,
        },
        use_vault=False,
    )


def test_bucket_listing_newest_first_with_sizes_and_times(s3: dict[str, Any]) -> None:
    backups = list_bucket_backups(r2_client(settings_for(s3)), BUCKET)
    assert [b.name for b in backups] == ["daily-20260103", "daily-20260102", "daily-20260101"]
    assert [b.size for b in backups] == [s3["sizes"][b.name] for b in backups]
    assert backups[0].size > backups[1].size > backups[2].size > 1010
    assert backups[0].phase == "PartiallyFailed"
    assert backups[1].started == datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
    assert backups[1].namespaces == ["database"]
    assert all(b.source == "bucket" for b in backups)
    assert latest_completed(backups).name == "daily-20260102"  # type: ignore[union-attr]
    table = render(backups)
    row = next(line for line in table.splitlines() if line.startswith("daily-20260102"))
    assert "Completed" in row and "2026-01-02 02:00:00" in row
    assert f"{s3['sizes']['daily-20260102'] / 1024:.1f} KiB" in row


def test_missing_bucket_is_a_clear_error(s3: dict[str, Any]) -> None:
    with pytest.raises(BackupError, match="bucket no-such-bucket does not exist"):
        list_bucket_backups(r2_client(settings_for(s3)), "no-such-bucket")


def test_bad_credentials_are_a_clear_error(s3: dict[str, Any]) -> None:
    client = r2_client(settings_for(s3, key="AKIAWRONGWRONGWRONG0", secret="nope"))
    with pytest.raises(BackupError, match="R2 refused the credentials") as e:
        list_bucket_backups(client, BUCKET)
    assert "nope" not in str(e.value)


def test_wrong_secret_is_a_clear_error(s3: dict[str, Any]) -> None:
    client = r2_client(settings_for(s3, secret="not-the-secret"))
    with pytest.raises(BackupError, match="R2_SECRET_ACCESS_KEY"):
        list_bucket_backups(client, BUCKET)


def test_r2_settings_are_required() -> None:
    settings = Settings.load("/nonexistent", environ={}, use_vault=False)
    with pytest.raises(BackupError, match="R2_ENDPOINT"):
        r2_client(settings)


# -- through the API ------------------------------------------------------------------------


class FakeCustom:
    """``CustomObjectsApi`` calls for velero.io/v1 objects, kept in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads = 0

    def create_namespaced_custom_object(self, group, version, ns, plural, body):  # type: ignore[no-untyped-def]
        assert (group, version, ns) == ("velero.io", "v1", "velero")
        self.objects[(plural, body["metadata"]["name"])] = json.loads(json.dumps(body))
        return body

    def get_namespaced_custom_object(self, group, version, ns, plural, name):  # type: ignore[no-untyped-def]
        from kubernetes.client.rest import ApiException

        self.reads += 1
        if (plural, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        obj = self.objects[(plural, name)]
        if self.reads >= 3:  # Velero finishes on the third look
            obj.setdefault("status", {})["phase"] = "Completed"
        elif self.reads == 2:
            obj.setdefault("status", {})["phase"] = "InProgress"
        return obj

    def list_namespaced_custom_object(self, group, version, ns, plural, **kw):  # type: ignore[no-untyped-def]
        return {"items": [o for (p, _), o in self.objects.items() if p == plural]}


class FakeTime:
    """The clock ``wait_backup`` reads: each of its sleeps moves it on by ``step`` seconds."""

    def __init__(self, step: float = 0.0) -> None:
        self.now, self.step = 0.0, step

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += self.step


@pytest.fixture(autouse=True)
def in_memory_velero(monkeypatch: pytest.MonkeyPatch) -> None:
    """``FakeCustom`` reaches the code the way a cluster does: through the kubernetes client's
    ``CustomObjectsApi`` of an API client."""
    from kubernetes import client

    real = client.CustomObjectsApi
    monkeypatch.setattr(
        client,
        "CustomObjectsApi",
        lambda api=None: api if isinstance(api, FakeCustom) else real(api),
    )


def test_create_backup_object_and_wait_for_its_phase(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeCustom()
    monkeypatch.setattr(backup, "time", FakeTime())
    name = create_backup(api, "manual-1", ["database", "apps"])
    spec = api.objects[("backups", "manual-1")]["spec"]
    assert spec["includedNamespaces"] == ["database", "apps"]
    assert spec["storageLocation"] == "default"
    assert spec["defaultVolumesToFsBackup"] is True
    info = wait_backup(api, name)
    lines = capsys.readouterr().out.splitlines()
    assert info.phase == "Completed"
    assert lines == [
        "backup manual-1: New",
        "backup manual-1: InProgress",
        "backup manual-1: Completed",
    ]


def test_wait_backup_times_out_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeCustom()
    create_backup(api, "stuck")
    monkeypatch.setattr(backup, "time", FakeTime(step=100))
    api.reads = -10_000  # never finishes
    with pytest.raises(BackupError, match="still"):
        wait_backup(api, "stuck", timeout=300)


def test_cluster_listing_and_latest_completed() -> None:
    api = FakeCustom()
    for name, started, phase in [
        ("a", "2026-01-01T00:00:00Z", "Completed"),
        ("c", "2026-01-03T00:00:00Z", "Failed"),
        ("b", "2026-01-02T00:00:00Z", "Completed"),
    ]:
        body = backup_manifest(name, ["database"], labels={"k3sfleet.io/stateful-service": "pg"})
        body["status"] = {"phase": phase, "startTimestamp": started}
        api.objects[("backups", name)] = body
    backups = list_cluster_backups(api, labels={"k3sfleet.io/stateful-service": "pg"})
    assert [b.name for b in backups] == ["c", "b", "a"]
    assert latest_completed(backups) == backups[1]
    assert list_cluster_backups(api, labels={"k3sfleet.io/stateful-service": "other"}) == []
    assert latest_completed([BackupInfo("x", phase="Failed")]) is None


# -- etcd snapshots (k3s's etcd-s3 layout) and the CLI ------------------------------------------


def test_etcd_snapshots_newest_first(s3: dict[str, Any]) -> None:
    from k3sfleet.etcd import choose, list_snapshots

    snaps = list_snapshots(r2_client(settings_for(s3)), ETCD_BUCKET)
    assert [s.name for s in snaps] == [
        "etcd-snapshot-vps-aws-1-1767312000",
        "on-demand-vps-aws-2-1767268800",
        "etcd-snapshot-vps-aws-1-1767225600",
    ]
    assert [s.node for s in snaps] == ["vps-aws-1", "vps-aws-2", "vps-aws-1"]
    assert snaps[0].created == datetime(2026, 1, 2, tzinfo=UTC)
    assert snaps[1].kind == "on-demand" and snaps[1].size == 600
    assert choose(snaps, "latest") is snaps[0]
    with pytest.raises(BackupError, match="no etcd snapshot named x"):
        choose(snaps, "x")
    with pytest.raises(BackupError, match="no etcd snapshot in the bucket"):
        choose([], "latest")


def test_etcd_restore_commands_keep_secrets_off_the_command_line() -> None:
    from k3sfleet.etcd import render_restore, restore_steps

    steps = restore_steps("etcd-snapshot-s1-1767312000", ["s1", "s2", "s3"])
    text = render_restore(steps)
    reset = next(c for st in steps for c in st.commands if "--cluster-reset" in c)
    assert reset.startswith(
        "sudo k3s server --cluster-reset --etcd-s3 "
        "--cluster-reset-restore-path=etcd-snapshot-s1-1767312000;"
    )
    assert steps[1].where == "s1" and "s2, s3" in text
    assert text.index("systemctl stop k3s") < text.index("--cluster-reset")
    # K3s refuses the reset while server: is set: it is set aside first and put back after
    assert text.index("sed -i -e '/^server:/d' /etc/rancher/k3s/config.yaml") < text.index(
        "--cluster-reset"
    )
    assert "mv -f /etc/rancher/k3s/config.yaml.pre-restore /etc/rancher/k3s/config.yaml" in reset
    assert text.index("--cluster-reset") < text.index("rm -rf /var/lib/rancher/k3s/server/db")
    # the others rejoin the restored server through the deploy, which points them at it
    assert text.index("rm -rf") < text.index("pyinfra inventory.py deploys/cluster.py")
    assert "access-key" not in text and "secret" not in text
    single = render_restore(restore_steps("snap", ["s1"]))
    assert "rm -rf" not in single and "deploys/cluster.py" not in single


def _cli_env(monkeypatch: pytest.MonkeyPatch, s3: dict[str, Any], **extra: str) -> None:
    values = {
        "R2_ENDPOINT": s3["endpoint"],
        "R2_ACCESS_KEY_ID": s3["key"],
        "R2_SECRET_ACCESS_KEY": s3["secret"],
        "VELERO_BUCKET": BUCKET,
        "K3S_ETCD_S3_BUCKET": ETCD_BUCKET,
        **extra,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_cli_backup_list_and_describe_from_the_bucket(
    s3: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from k3sfleet.cli import main

    _cli_env(monkeypatch, s3)
    assert main(["--project-dir", str(tmp_path), "backup", "list", "--from-bucket"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [
        "daily-20260103",
        "daily-20260102",
        "daily-20260101",
    ]
    args = ["--project-dir", str(tmp_path), "backup", "describe", "daily-20260102"]
    assert main([*args, "--from-bucket"]) == 0
    out = capsys.readouterr().out
    assert "Phase:       Completed" in out and "Source:      bucket" in out
    assert main(["--project-dir", str(tmp_path), "etcd", "snapshots"]) == 0
    assert "on-demand-vps-aws-2-1767268800" in capsys.readouterr().out


def test_cli_bad_credentials_exit_non_zero_with_a_clear_message(
    s3: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from k3sfleet.cli import main

    _cli_env(monkeypatch, s3, R2_SECRET_ACCESS_KEY="wrong-secret-value")
    code = main(["--project-dir", str(tmp_path), "backup", "list", "--from-bucket"])
    err = capsys.readouterr().err
    assert code == 1
    assert "R2 refused the credentials" in err and "wrong-secret-value" not in err
