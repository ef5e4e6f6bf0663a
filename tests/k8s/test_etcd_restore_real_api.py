"""The printed etcd restore (``k3sfleet.etcd.reset_commands``, what ``k3sfleet etcd restore``
prints) run through ``sh`` exactly as printed, against the stand-in ``k3s`` on the real
datastore: kine's SQLite database, with a snapshot taken by ``k3s etcd-snapshot save`` from the
running server. ``sudo`` in the printed commands is a command that runs its arguments (the test
already owns every file); everything runs on 127.0.0.1.

The node is a rebuilt first server as the deploy leaves it: config.yaml with ``server:`` (a
member that had joined the server named there, ``db/joined.json``) and its data directory.

Real behaviour the stand-in encodes (k3s-io/k3s v1.34.2+k3s1):
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
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from k3sfleet.etcd import reset_commands
from k3sfleet.lab.controlplane import K3S_VERSION, Binaries
from tests.k8s.k3s_procs import TOKEN, K3sProcs, free_port
from tests.polling import wait_for

pytestmark = pytest.mark.k8s

REFUSAL = (
    'level=fatal msg="Error: cannot perform cluster-reset while server URL is set - remove '
    'server from configuration before resetting"'
)


def _configmaps(api: client.ApiClient) -> set[str]:
    return {c.metadata.name for c in client.CoreV1Api(api).list_namespaced_config_map(
        "default").items}  # fmt: skip


def _configmap(api: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api).create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name)))


@pytest.fixture(scope="module")
def procs(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[K3sProcs]:
    procs = K3sProcs(tmp_path_factory.mktemp("k3s"), binaries)
    yield procs
    procs.stop_all()
    assert all(proc.poll() is not None for proc in procs.procs)


@pytest.fixture(scope="module")
def saved(procs: K3sProcs) -> tuple[Path, Path]:
    """A first server's data after: ConfigMap ``in-the-snapshot``, ``k3s etcd-snapshot save``,
    ConfigMap ``written-after-the-snapshot``, server stopped. Returns (data dir, snapshot)."""
    data, kubeconfig = procs.root / "saved", procs.root / "saved.yaml"
    server = procs.start(
        "server", K3S_VERSION, f"--data-dir={data}", f"--https-listen-port={free_port()}",
        "--bind-address=127.0.0.1", "--node-name=s1", "--node-ip=127.0.0.1",
        f"--token={TOKEN}", f"--write-kubeconfig={kubeconfig}", "--cluster-init")
    wait_for("k3s.yaml", kubeconfig.exists, 120)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    wait_for("the API", lambda: client.VersionApi(api).get_code(), 180)
    _configmap(api, "in-the-snapshot")
    snap = procs.run("etcd-snapshot", "save", f"--data-dir={data}", "--name=etcd-snapshot",
                     "--node-name=s1")
    assert snap.returncode == 0, snap.stderr
    _configmap(api, "written-after-the-snapshot")
    procs.stop(server)
    (snapshot,) = (data / "server" / "db" / "snapshots").iterdir()
    return data, snapshot


@pytest.fixture
def node(procs: K3sProcs, saved: tuple[Path, Path], tmp_path: Path) -> dict[str, Path]:
    """A copy of the saved server, now a member that joined another server (stopped, on a
    loopback port nothing listens on), with ``k3s`` and ``sudo`` commands for ``sh``."""
    data = tmp_path / "data"
    shutil.copytree(saved[0], data, symlinks=True)
    db = data / "server" / "db"
    gone = f"https://127.0.0.1:{free_port()}"
    (db / "joined.json").write_text(json.dumps({"server": gone}))
    bindir = tmp_path / "bin"
    procs.executable(bindir)
    (bindir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (bindir / "sudo").chmod(0o755)
    conf = tmp_path / "config.yaml"
    conf.write_text(
        "# Managed by k3sfleet (deploys/k3s_server.py)\n"
        f'server: "{gone}"\ntoken: "{TOKEN}"\nnode-name: "s1"\ndata-dir: "{data}"\n'
    )
    return {"bin": bindir, "data": data, "db": db, "config": conf,
            "snapshot": data / "server" / "db" / "snapshots" / saved[1].name}  # fmt: skip


def sh(procs: K3sProcs, command: str, bindir: Path) -> subprocess.CompletedProcess[str]:
    env = {**procs.env, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(  # noqa: S603 - the printed command, run as an operator would
        ["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _datastore(node: dict[str, Path]) -> bytes:
    return (node["db"] / "state.db").read_bytes()


def test_the_standin_refuses_a_reset_while_server_is_set(
    procs: K3sProcs, node: dict[str, Path]
) -> None:
    before = _datastore(node)
    plain = (f"k3s server --config={node['config']} --cluster-reset "
             f"--cluster-reset-restore-path={node['snapshot']}")  # fmt: skip
    run = sh(procs, plain, node["bin"])
    assert run.returncode == 1 and REFUSAL in run.stderr, run.stderr
    assert _datastore(node) == before  # nothing restored
    node["config"].write_text(f'data-dir: "{node["data"]}"\n')
    flag = sh(procs, plain + " --server=https://127.0.0.1:1", node["bin"])
    assert flag.returncode == 1 and REFUSAL in flag.stderr  # the flag is the same URL
    (node["data"] / "server" / "token").unlink()
    tokenless = sh(procs, plain, node["bin"])
    assert tokenless.returncode == 1
    assert "server/token does not exist, please pass --token" in tokenless.stderr
    assert _datastore(node) == before


def test_the_printed_reset_restores_and_puts_server_back(
    procs: K3sProcs, node: dict[str, Path]
) -> None:
    conf = node["config"]
    before, mode = conf.read_text(), stat.S_IMODE(conf.stat().st_mode)
    commands = reset_commands(str(node["snapshot"]), config=str(conf), s3=False)
    assert all(c.startswith("sudo ") for c in commands)
    for command in commands:
        run = sh(procs, command, node["bin"])
        assert run.returncode == 0, (command, run.stderr)
    assert _datastore(node) == node["snapshot"].read_bytes()
    assert not (node["db"] / "state.db-wal").exists()  # no log of the newer data replayed
    assert conf.read_text() == before and stat.S_IMODE(conf.stat().st_mode) == mode
    assert not Path(f"{conf}.pre-restore").exists()
    assert not (node["db"] / "joined.json").exists()  # the only member of the restored cluster


def test_a_failed_reset_still_puts_the_config_back(
    procs: K3sProcs, node: dict[str, Path]
) -> None:
    conf = node["config"]
    before, data = conf.read_text(), _datastore(node)
    commands = reset_commands(str(node["snapshot"]) + ".gone", config=str(conf), s3=False)
    results = [sh(procs, command, node["bin"]) for command in commands]
    assert results[-1].returncode != 0 and "not found" in results[-1].stderr
    assert conf.read_text() == before and _datastore(node) == data


def test_the_reset_server_starts_from_its_data_with_server_set(
    procs: K3sProcs, node: dict[str, Path], tmp_path: Path
) -> None:
    """After the reset, k3s starts with config.yaml's ``server:`` back in place: it serves its
    restored datastore instead of following a server that is stopped (wiped next in the DR)."""
    for command in reset_commands(str(node["snapshot"]), config=str(node["config"]), s3=False):
        assert sh(procs, command, node["bin"]).returncode == 0
    kubeconfig = tmp_path / "k3s.yaml"
    server = procs.start(
        "server", K3S_VERSION, f"--config={node['config']}", f"--write-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1", f"--https-listen-port={free_port()}",
        "--node-ip=127.0.0.1")
    wait_for("k3s.yaml", kubeconfig.exists, 120)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    names = wait_for("the restored ConfigMaps", lambda: _configmaps(api), 180)
    assert "in-the-snapshot" in names and "written-after-the-snapshot" not in names
    # never asked the server it had joined for bootstrap data (server.join's messages)
    assert "bootstrap data" not in procs.log(server) and "CA certs" not in procs.log(server)
    procs.stop(server)
