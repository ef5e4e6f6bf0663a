"""k3sfleet.kubeconfig: k3s.yaml renamed and merged into an existing kubeconfig, mode 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from k3sfleet.kubeconfig import KubeconfigError, load, merge, rename, write

K3S_YAML = """apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EtREFUQQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"""

OTHER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "work", "cluster": {"server": "https://work.example:443"}}],
    "users": [{"name": "work-admin", "user": {"token": "work-token"}}],
    "contexts": [{"name": "work", "context": {"cluster": "work", "user": "work-admin"}}],
    "current-context": "work",
}


def test_rename_points_at_the_tailnet_and_names_everything() -> None:
    doc = rename(K3S_YAML, "lab", "https://100.64.0.11:6443")
    assert doc["clusters"] == [
        {
            "name": "lab",
            "cluster": {
                "certificate-authority-data": "Q0EtREFUQQ==",
                "server": "https://100.64.0.11:6443",
            },
        }
    ]
    assert doc["users"][0]["name"] == "lab"
    assert doc["users"][0]["user"]["client-key-data"] == "S0VZ"
    assert doc["contexts"] == [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]


def test_merge_keeps_other_contexts_and_the_current_one() -> None:
    new = rename(K3S_YAML, "lab", "https://100.64.0.11:6443")
    merged = merge(OTHER, new, "lab")
    assert [c["name"] for c in merged["contexts"]] == ["work", "lab"]
    assert merged["users"][0] == OTHER["users"][0]
    assert merged["clusters"][0] == OTHER["clusters"][0]
    assert merged["current-context"] == "work"
    assert merge(OTHER, new, "lab", use=True)["current-context"] == "lab"


def test_merge_replaces_only_its_own_name() -> None:
    first = merge(OTHER, rename(K3S_YAML, "lab", "https://100.64.0.11:6443"), "lab")
    second = merge(first, rename(K3S_YAML, "lab", "https://100.64.0.12:6443"), "lab")
    assert [c["name"] for c in second["clusters"]] == ["work", "lab"]
    assert second["clusters"][1]["cluster"]["server"] == "https://100.64.0.12:6443"


def test_write_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(OTHER))
    path.chmod(0o644)
    write(path, merge(load(path), rename(K3S_YAML, "lab", "https://100.64.0.11:6443"), "lab"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = load(path)
    assert doc is not None and {c["name"] for c in doc["contexts"]} == {"work", "lab"}
    assert [p.name for p in path.parent.iterdir()] == ["config"]


def test_fresh_file_gets_the_context_as_current(tmp_path: Path) -> None:
    path = tmp_path / "config"
    write(path, merge(load(path), rename(K3S_YAML, "lab", "https://h:6443"), "lab"))
    doc = load(path)
    assert doc is not None and doc["current-context"] == "lab"


def test_broken_existing_file_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(KubeconfigError):
        load(path)
    assert path.read_text() == "clusters: [unclosed\n"


def test_not_a_kubeconfig() -> None:
    with pytest.raises(KubeconfigError):
        rename("just: text\n", "lab", "https://h:6443")
