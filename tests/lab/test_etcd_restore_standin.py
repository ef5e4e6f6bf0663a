"""The printed etcd restore (k3sfleet.etcd) against the stand-in k3s, which refuses a reset
while ``server:`` is set exactly as the real one does. No lab host: the built stand-in runs on
loopback, the reset commands run through ``sh`` as printed (without ``sudo``).

Real behaviour encoded by the stand-in (k3s-io/k3s):
* pkg/cli/server/server.go, ``if cfg.ClusterReset`` block: ``JoinURL != ""`` -> "cannot perform
  cluster-reset while server URL is set - remove server from configuration before resetting";
  a restore without a token needs <data-dir>/server/token.
* pkg/cluster/bootstrap.go ``shouldBootstrapLoad`` / pkg/etcd/etcd.go ``Start``: a server whose
  etcd is initialized starts from its own data ("Managed etcd cluster bootstrap already
  complete and initialized", "Starting etcd for existing cluster member"), ``server:`` or not.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client, config
from test_standin_api import Proc, free_port

from k3sfleet.etcd import reset_commands
from k3sfleet.lab.artifacts import build_k3s_executable
from k3sfleet.lab.standins import LAB_K3S_VERSIONS

REFUSAL = (
    'level=fatal msg="Error: cannot perform cluster-reset while server URL is set - remove '
    'server from configuration before resetting"'
)
def state(configmap: str, revision: int) -> str:
    """A stand-in datastore holding one ConfigMap (the format of its state.json)."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": configmap, "namespace": "default"}, "data": {}}  # fmt: skip
    return json.dumps({"revision": revision, "objects": [obj]})


CONFIG_TEXT = (
    "# Managed by k3sfleet (deploys/k3s_server.py)\n"
    'server: "https://100.64.0.12:6443"\n'
    'token: "K10abc::server:s3cret"\n'
    'node-name: "s1"\n'
)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    """A rebuilt first server as the deploy leaves it: config.yaml with ``server:``, an
    initialized etcd datastore that follows s2, its token file, and a snapshot to restore."""
    binary = tmp_path / "k3s-standin"
    binary.write_bytes(build_k3s_executable(LAB_K3S_VERSIONS[-1]))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "k3s"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {binary} "$@"\n')
    wrapper.chmod(0o755)
    data = tmp_path / "data"
    db = data / "server" / "db"
    (db / "etcd").mkdir(parents=True)
    (db / "state.json").write_text(state("written-after-the-snapshot", 9))
    (db / "joined.json").write_text(json.dumps({"server": "https://100.64.0.12:6443"}))
    (data / "server" / "token").write_text("K10abc::server:s3cret\n")
    snapshot = tmp_path / "etcd-snapshot-s1-1767225600"
    snapshot.write_text(state("in-the-snapshot", 7))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_TEXT + f'data-dir: "{data}"\n')
    return {"bin": bindir, "binary": binary, "data": data, "db": db, "config": config,
            "snapshot": snapshot}  # fmt: skip


def sh(command: str, bindir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(  # noqa: S603 - the printed command, run as an operator would
        ["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_standin_refuses_a_reset_while_server_is_set(node: dict[str, Path]) -> None:
    before = (node["db"] / "state.json").read_text()
    plain = f"k3s server --config={node['config']} --cluster-reset " + (
        f"--cluster-reset-restore-path={node['snapshot']}"
    )
    run = sh(plain, node["bin"])
    assert run.returncode == 1 and REFUSAL in run.stderr, run.stderr
    assert (node["db"] / "state.json").read_text() == before  # nothing restored
    node["config"].write_text(f'data-dir: "{node["data"]}"\n')
    flag = sh(plain + " --server=https://100.64.0.12:6443", node["bin"])
    assert flag.returncode == 1 and REFUSAL in flag.stderr  # the flag is the same URL
    (node["data"] / "server" / "token").unlink()
    tokenless = sh(plain, node["bin"])
    assert tokenless.returncode == 1
    assert "server/token does not exist, please pass --token" in tokenless.stderr


def test_the_printed_reset_restores_and_puts_server_back(node: dict[str, Path]) -> None:
    config = node["config"]
    before = config.read_text()
    mode = stat.S_IMODE(config.stat().st_mode)
    commands = reset_commands(str(node["snapshot"]), config=str(config), s3=False, sudo="")
    assert any("--cluster-reset" in c for c in commands)
    for command in commands:
        run = sh(command, node["bin"])
        assert run.returncode == 0, (command, run.stderr)
    assert (node["db"] / "state.json").read_text() == node["snapshot"].read_text()
    assert config.read_text() == before and stat.S_IMODE(config.stat().st_mode) == mode
    assert not Path(f"{config}.pre-restore").exists()
    assert not (node["db"] / "joined.json").exists()  # the only member of the restored cluster


def test_a_failed_reset_still_puts_the_config_back(node: dict[str, Path]) -> None:
    config = node["config"]
    before = config.read_text()
    commands = reset_commands(str(node["snapshot"]) + ".gone", config=str(config), s3=False,
                              sudo="")  # fmt: skip
    results = [sh(command, node["bin"]) for command in commands]
    assert results[-1].returncode != 0 and "not found" in results[-1].stderr
    assert config.read_text() == before


def test_the_reset_server_starts_from_its_data_with_server_set(
    node: dict[str, Path], tmp_path: Path
) -> None:
    """After the reset, k3s starts with config.yaml's ``server:`` back in place: it serves its
    restored datastore instead of following a server that is stopped (s2 is wiped next)."""
    for command in reset_commands(
        str(node["snapshot"]), config=str(node["config"]), s3=False, sudo=""
    ):
        assert sh(command, node["bin"]).returncode == 0
    port = free_port()
    proc = Proc(
        node["binary"],
        ["server", "--config", str(node["config"]), "--write-kubeconfig",
         str(tmp_path / "k3s.yaml"), "--bind-address", "127.0.0.1", "--https-listen-port",
         str(port), "--node-ip", "127.0.0.1"],
        tmp_path,
        "restored",
    )  # fmt: skip
    try:
        assert proc.wait_ready(), proc.log.read_text()
        assert "100.64.0.12" not in proc.log.read_text()  # never contacted the old server
        api = config.new_client_from_config(config_file=str(tmp_path / "k3s.yaml"))
        names = {c.metadata.name for c in client.CoreV1Api(api).list_namespaced_config_map(
            "default").items}  # fmt: skip
        assert "in-the-snapshot" in names and "written-after-the-snapshot" not in names
    finally:
        proc.stop()
