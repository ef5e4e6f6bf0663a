"""The K3s facts: the commands they run (real shell, against a scratch tree) and their parsing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from k3sfleet.facts.k3s import (
    DB_DIR,
    K3sState,
    parse_version,
)


def run_in(root: Path, command: str) -> list[str]:
    """Run a fact's command with every absolute k3s path moved under ``root`` (and moved back
    in its output)."""
    for prefix in ("/var/lib/rancher", "/etc/rancher", "/usr/local/bin/k3s", "/etc/systemd"):
        command = command.replace(prefix, f"{root}{prefix}")
    out = subprocess.run(  # noqa: S603 - the fact's own command, in a test
        ["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.replace(str(root), "").splitlines()


def test_version_parsing() -> None:
    assert parse_version("k3s version v1.34.2+k3s1 (abcdef12)") == "v1.34.2+k3s1"
    assert parse_version("v1.33.6+k3s1") == "v1.33.6+k3s1"
    assert parse_version("") is None


@pytest.mark.parametrize(
    ("layout", "expected"),
    [([], None), (["etcd/"], "etcd"), (["state.db"], "sqlite"), (["joined.json"], "other")],
)
def test_datastore_kinds(tmp_path: Path, layout: list[str], expected: str | None) -> None:
    db = Path(f"{tmp_path}{DB_DIR}")
    db.mkdir(parents=True)
    for entry in layout:
        (db / entry.rstrip("/")).mkdir() if entry.endswith("/") else (db / entry).write_text("x")
    assert state_in(tmp_path)["datastore"] == expected


def state_in(root: Path) -> dict[str, Any]:
    """``K3sState`` of the scratch tree ``root`` (no tailnet)."""
    return K3sState().process(run_in(root, K3sState().command(tailnet=False)))


def test_server_url_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "etc/rancher/k3s/config.yaml"
    cfg.parent.mkdir(parents=True)
    assert state_in(tmp_path)["join"] is None
    cfg.write_text('node-name: "a"\nserver: "https://100.64.0.11:6443"\ntoken: "t"\n')
    assert state_in(tmp_path)["join"] == "https://100.64.0.11:6443"
    cfg.write_text("cluster-init: true\n")
    assert state_in(tmp_path)["join"] == "cluster-init"


def test_service_status_parsing() -> None:
    status = K3sState().process(["unit1.ActiveState=active", "unit1.UnitFileState=enabled", "junk"])
    assert status["services"]["k3s-agent"] == {"ActiveState": "active", "UnitFileState": "enabled"}


def test_state_in_one_command(tmp_path: Path) -> None:
    server = Path(f"{tmp_path}/var/lib/rancher/k3s/server")
    (server / "db/etcd").mkdir(parents=True)
    (server / "node-token").write_text("K10x::server:y\n")
    cfg = tmp_path / "etc/rancher/k3s/config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("cluster-init: true\n")
    binary = tmp_path / "usr/local/bin/k3s"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\necho 'k3s version v1.34.2+k3s1 (deadbeef)'\n")
    binary.chmod(0o755)
    state = K3sState().process(run_in(tmp_path, K3sState().command()))
    assert state["version"] == "v1.34.2+k3s1"
    assert state["datastore"] == "etcd" and state["node_token"] is True
    assert state["join"] == "cluster-init"
    assert state["config_sha256"] and len(state["config_sha256"]) == 64
    assert state["vpn_auth_sha256"] is None
    assert state["unit_sha256"] == {"k3s": None, "k3s-agent": None}
    assert set(state["services"]) == {"k3s", "k3s-agent"}


def test_state_reads_directories_and_tailnet_only_when_asked(tmp_path: Path) -> None:
    import grp
    import os
    import pwd

    (tmp_path / "etc/rancher/k3s").mkdir(parents=True)
    (tmp_path / "etc/rancher/k3s").chmod(0o750)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    with_tailnet = K3sState().command()
    without = K3sState().command(tailnet=False)
    assert "tailscale ip" in with_tailnet and "tailscale ip" not in without
    state = K3sState().process(run_in(tmp_path, without))
    assert state["tailnet_ip"] is None
    assert state["directories"] == {
        "/etc/rancher/k3s": {"user": user, "group": group, "mode": "750"},
        "/var/lib/rancher/k3s": None,
    }
    assert "binary_sha256" not in state  # K3s's ~70 MB binary is not hashed on every run


def test_state_parses_units_by_position_and_the_first_join_line() -> None:
    sha_a, sha_b = "a" * 64, "b" * 64
    output = [
        "version=k3s version v1.34.2+k3s1 (abc)",
        "join.cluster-init=false",
        'join.server="https://100.64.0.11:6443"',
        "join.cluster-init=true",
        f"{sha_a}  /etc/rancher/k3s/config.yaml",
        f"{sha_b}  /etc/systemd/system/k3s-agent.service",
        "unit0.ActiveState=inactive",
        "unit1.ActiveState=active",
        "unit1.UnitFileState=enabled",
    ]
    state = K3sState().process(output)
    assert state["join"] == "https://100.64.0.11:6443"
    assert state["config_sha256"] == sha_a and state["vpn_auth_sha256"] is None
    assert state["unit_sha256"] == {"k3s": None, "k3s-agent": sha_b}
    assert state["services"] == {
        "k3s": {"ActiveState": "inactive"},
        "k3s-agent": {"ActiveState": "active", "UnitFileState": "enabled"},
    }
