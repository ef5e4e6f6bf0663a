"""The stand-in k3s's behaviours pinned to what k3s-io/k3s v1.34.2+k3s1 does (each test names
the upstream file; the stand-in's modules cite the same).

Example::

    .venv/bin/python -m pytest tests/unit/test_k3s_standin_upstream.py -q
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from k3sfleet.lab.standins.k3s import log, node, pki, server, snapshot, vpn
from k3sfleet.lab.standins.k3s.config import load_config
from k3sfleet.lab.standins.k3s.main import version_text


def _fatal(call: Any, *args: Any) -> str:
    with pytest.raises(log.Fatal) as raised:
        call(*args)
    return raised.value.message


def test_version_prints_the_release_commit() -> None:
    # pkg/cli/cmds/root.go NewApp: "<name> version <version> (<git commit>)", "go version ..."
    lines = version_text("v1.34.2+k3s1").splitlines()
    assert lines[0] == "k3s version v1.34.2+k3s1 (8dac81b2)"
    assert re.fullmatch(r"go version go1\.\d+\.\d+", lines[1])
    # the lab's made-up versions keep a stable 8-hex-digit commit of their own
    assert re.fullmatch(r"k3s version v1\.35\.0\+k3s1 \([0-9a-f]{8}\)",
                        version_text("v1.35.0+k3s1").splitlines()[0])


def test_environment_is_the_lowest_precedence(tmp_path: Path) -> None:
    # urfave/cli EnvVar is a flag's default; pkg/configfilearg puts the file's values before
    # the command line's: env < config.yaml < config.yaml.d < flags
    config = tmp_path / "config.yaml"
    config.write_text("token: from-file\nnode-name: file-node\nnode-label: [a=1]\n")
    (tmp_path / "config.yaml.d").mkdir()
    (tmp_path / "config.yaml.d" / "10-late.YAML").write_text("node-name: dropin-node\n")
    (tmp_path / "config.yaml.d" / "20-dir.yaml").mkdir()  # a directory is no drop-in
    env = {"K3S_TOKEN": "from-env", "K3S_URL": "https://10.0.0.1:6443"}
    loaded = load_config(["--node-label", "b=2"], config, env)
    assert loaded["token"] == "from-file"
    assert loaded["server"] == "https://10.0.0.1:6443"  # only the environment sets it
    assert loaded["node-name"] == "dropin-node"
    assert loaded["node-label"] == ["a=1", "b=2"]
    assert load_config(["--token", "from-flag"], config, env)["token"] == "from-flag"


def test_k3s_config_file_wins_over_the_config_flag(tmp_path: Path) -> None:
    # pkg/configfilearg parser.go findConfigFileFlag reads $K3S_CONFIG_FILE first
    (tmp_path / "env.yaml").write_text("node-name: from-env-file\n")
    (tmp_path / "flag.yaml").write_text("node-name: from-flag-file\n")
    loaded = load_config(["--config", str(tmp_path / "flag.yaml")], tmp_path / "none.yaml",
                         {"K3S_CONFIG_FILE": str(tmp_path / "env.yaml")})
    assert loaded["node-name"] == "from-env-file"


def _snapshot_dir(tmp_path: Path) -> dict[str, Any]:
    db = tmp_path / "server" / "db"
    (db / "etcd").mkdir(parents=True)
    (db / "snapshots").mkdir()
    return {"data-dir": str(tmp_path), "node-name": "s1"}


def test_snapshot_ls_is_a_tabwriter_table_sorted_by_creation(tmp_path: Path) -> None:
    # pkg/cli/etcdsnapshot/etcd_snapshot.go list: tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ',
    # 0), "Name\tLocation\tSize\tCreated", Location file://..., RFC 3339, by time then name
    _snapshot_dir(tmp_path)
    snapshots = tmp_path / "server" / "db" / "snapshots"
    older, newer = snapshots / "z-s1-1700000000", snapshots / "a-s1-1700000100"
    older.write_bytes(b"x" * 12345)
    newer.write_bytes(b"y" * 7)
    os.utime(older, (1_700_000_000, 1_700_000_000))
    os.utime(newer, (1_700_000_100, 1_700_000_100))
    location = f"file://{older}"
    width = len(location) + 1
    assert snapshot.snapshot_table(snapshots) == (
        f"{'Name':<16}{'Location':<{width}}{'Size':<6}Created\n"
        f"{older.name:<16}{location:<{width}}{'12345':<6}2023-11-14T22:13:20Z\n"
        f"{newer.name:<16}{'file://' + str(newer):<{width}}{'7':<6}2023-11-14T22:15:00Z\n"
    )


def test_snapshot_messages_are_the_clis(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # etcd_snapshot.go: "Snapshot %s saved.", "Snapshot %s deleted.", "Snapshot %s not
    # found.", wrapServerError's "see server log for details: ..."
    assert _fatal(snapshot.run, ["save"], {"data-dir": str(tmp_path)}) == (
        "see server log for details: etcd datastore disabled")
    config = _snapshot_dir(tmp_path)
    (tmp_path / "server" / "db" / "state.db").write_bytes(b"")
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.4)
    assert snapshot.run(["save"], config) == 0
    assert 'msg="Snapshot on-demand-s1-1700000000 saved."' in capsys.readouterr().err
    assert snapshot.run(["delete", "on-demand-s1-1700000000", "gone"], config) == 0
    err = capsys.readouterr().err
    assert 'level=info msg="Snapshot on-demand-s1-1700000000 deleted."' in err
    assert 'level=warning msg="Snapshot gone not found."' in err
    assert _fatal(snapshot.run, ["delete"], config) == "no snapshots given for removal"


def test_vpn_auth_errors_are_k3s_words() -> None:
    # pkg/vpn/vpn.go isVPNConfigOK
    assert _fatal(vpn.vpn_settings, {"vpn-auth": "name=wireguard,joinKey=k"}) == (
        "Requested VPN: wireguard is not supported. We currently only support tailscale")
    assert _fatal(vpn.vpn_settings, {"vpn-auth": "name=tailscale"}) == (
        "VPN Error. Tailscale requires a JoinKey")


def test_a_configured_node_ip_is_always_reported_overridden(
        capsys: pytest.CaptureFixture[str]) -> None:
    # pkg/executor/embed/embed.go Bootstrap: the warning whenever node-ip was configured
    assert vpn.with_vpn_node_ip({"node-ip": "100.64.1.11"}, "100.64.1.11")["node-ip"] == (
        "100.64.1.11")
    err = capsys.readouterr().err
    assert 'msg="Node-ip changed to [100.64.1.11] due to VPN"' in err
    assert 'level=warning msg="VPN provider overrides configured node-ip parameter"' in err


def test_the_hostname_address_is_the_k3s_hostname_annotation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # pkg/agent/run.go getHostname; pkg/cloudprovider/instances.go (Hostname address from the
    # k3s.io/hostname annotation, providerID k3s://<name>, instance type k3s)
    monkeypatch.setattr(node.socket, "gethostname", lambda: "vps-aws-1")
    own = node.node_object("lab-agent-1", "v1.34.2+k3s1", {"node-ip": "10.0.0.2"}, server=False)
    assert own["metadata"]["annotations"]["k3s.io/hostname"] == "vps-aws-1"
    assert {"type": "Hostname", "address": "vps-aws-1"} in own["status"]["addresses"]
    assert own["spec"]["providerID"] == "k3s://lab-agent-1"
    assert own["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "k3s"
    monkeypatch.setattr(node.socket, "gethostname", lambda: "localhost.localdomain")
    own = node.node_object("lab-agent-1", "v1.34.2+k3s1", {"node-ip": "10.0.0.2"}, server=False)
    assert own["metadata"]["annotations"]["k3s.io/hostname"] == "lab-agent-1"
    assert {"type": "Hostname", "address": "lab-agent-1"} in own["status"]["addresses"]


def test_node_token_and_agent_token_link_to_token(tmp_path: Path) -> None:
    # pkg/server/server.go printTokens
    tls = pki.ensure_ca(tmp_path / "tls")
    server._write_tokens({}, tmp_path, tls, "s3cret")
    assert (tmp_path / "token").read_text() == f"K10{tls.ca_hash}::server:s3cret\n"
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    for name in ("node-token", "agent-token"):
        assert (tmp_path / name).is_symlink(), name
        assert (tmp_path / name).resolve() == (tmp_path / "token").resolve()
    server._write_tokens({"agent-token": "agentpw"}, tmp_path, tls, "s3cret")
    assert not (tmp_path / "agent-token").is_symlink()
    assert (tmp_path / "agent-token").read_text() == f"K10{tls.ca_hash}::node:agentpw\n"


def test_k3s_yaml_names_the_bind_address() -> None:
    # pkg/server/server.go writeKubeConfig: BindAddressOrLoopback(false, true)
    assert server.kubeconfig_server({}, 6443) == "https://127.0.0.1:6443"
    assert server.kubeconfig_server({"bind-address": "0.0.0.0"}, 6443) == (
        "https://127.0.0.1:6443")
    assert server.kubeconfig_server({"bind-address": "10.0.0.5"}, 7443) == (
        "https://10.0.0.5:7443")
    assert server.kubeconfig_server({"bind-address": "fd00::5"}, 6443) == "https://[fd00::5]:6443"


def test_cluster_cas_are_named_like_k3s(tmp_path: Path) -> None:
    # CN=k3s-server-ca@<unix time>, as real K3s CAs are
    tls = pki.ensure_ca(tmp_path)
    subject = x509.load_pem_x509_certificate(tls.server_ca.read_bytes()).subject
    assert re.fullmatch(r"CN=k3s-server-ca@\d{10}", subject.rfc4514_string())


@pytest.fixture
def cacerts_server(tmp_path: Path) -> Any:
    """An HTTPS server on loopback serving a fresh cluster CA at /cacerts, as the front does;
    yields (url, the CA's PEM bytes)."""
    import http.server
    import ssl
    import threading

    tls = pki.ensure_ca(tmp_path / "tls")
    crt, key = pki.ensure_serving(tls, ["127.0.0.1"])
    body = tls.server_ca.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/cacerts" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", body
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_cacerts_are_checked_against_the_tokens_ca_hash(cacerts_server: Any) -> None:
    """token.go ``validateCAHash`` over ``hashCA`` (sha256 of the PEM served at /cacerts); the
    joining server's prefix is bootstrap.go's "failed to validate token", the agent's run.go's
    "Failed to validate connection to cluster at <url>"."""
    import hashlib

    from k3sfleet.lab.standins.k3s.kubeclient import trusted_cacerts

    url, pem = cacerts_server
    good = hashlib.sha256(pem).hexdigest()
    kwargs: dict[str, Any] = {"waiting": "waiting", "pause": 0, "give_up": (1, "unreachable"),
                              "refused": "failed to validate token"}
    assert trusted_cacerts(url, good, **kwargs) == pem
    assert trusted_cacerts(url, None, **kwargs) == pem  # a token without a CA hash trusts it
    assert _fatal(lambda: trusted_cacerts(url, "0" * 64, **kwargs)) == (
        "failed to validate token: token CA hash does not match the Cluster CA certificate "
        f"hash: {'0' * 64} != {good}")


def test_cacerts_from_a_server_that_never_answers(capsys: Any) -> None:
    import socket

    from k3sfleet.lab.standins.k3s.kubeclient import trusted_cacerts

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{s.getsockname()[1]}"
        message = _fatal(lambda: trusted_cacerts(
            url, None, waiting=f"Waiting to retrieve cluster bootstrap data from {url}", pause=0,
            give_up=(3, f"failed to get CA certs from {url}: server not reachable"),
            refused="x"))
    assert message == f"failed to get CA certs from {url}: server not reachable"
    waits = [line for line in capsys.readouterr().err.splitlines() if "Waiting to retrieve" in line]
    assert len(waits) == 2  # give_up after 3: two waits, then the third refusal ends it
