"""k3sfleet.kube against an in-process SSH server (paramiko) and a TLS API that demands a client
certificate: the tunnel, strict host keys, the kubeconfig read over SSH, failover, memfds."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s

from k3sfleet import kube
from k3sfleet.inventory import sudo_data
from k3sfleet.kube import ClusterUnreachable, HostInfo, cluster_api, parse_kubeconfig

# -- a tiny PKI ---------------------------------------------------------------------------------


def _pem(obj: Any) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    cn: str, issuer: tuple[x509.Certificate, Any] | None, *, ca: bool = False, san: bool = False
) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    ca = _cert("k3s-server-ca", None, ca=True)
    server = _cert("k3s", ca, san=True)
    client = _cert("system:admin", ca)
    other_ca = _cert("someone-else", None, ca=True)
    return {
        "ca": _pem(ca[0]),
        "server_cert": _pem(server[0]),
        "server_key": _pem(server[1]),
        "client_cert": _pem(client[0]),
        "client_key": _pem(client[1]),
        "other_ca": _pem(other_ca[0]),
    }


def _write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


# -- a TLS "API server" that requires a client certificate ------------------------------------


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        peer = self.request.getpeercert()
        cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
        info = dict.fromkeys(
            ("buildDate", "compiler", "gitCommit", "gitTreeState", "goVersion", "platform"), "x"
        )
        info.update(major="1", minor="34", gitVersion=f"v1.34.2+{cn}")
        body = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api_port(pki: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("api")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(
        _write(tmp, "s.crt", pki["server_cert"]), _write(tmp, "s.key", pki["server_key"])
    )
    ctx.load_verify_locations(cadata=pki["ca"].decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


# -- an SSH server (paramiko, in process) ------------------------------------------------------


class FakeSshd:
    """Accepts one user key; answers `sudo -n cat /etc/rancher/k3s/k3s.yaml`; forwards
    direct-tcpip to 127.0.0.1 ports. Records commands and forwarded destinations."""

    def __init__(self, user_key: paramiko.PKey, kubeconfig: bytes) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        self.user_key = user_key
        self.kubeconfig = kubeconfig
        self.commands: list[str] = []
        self.forwards: list[tuple[str, int]] = []
        self.nodelay: list[int] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._transports: list[paramiko.Transport] = []
        t = threading.Thread(target=self._serve, daemon=True)
        t.start()
        self._threads.append(t)

    def _serve(self) -> None:
        self.listener.settimeout(0.3)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            server = _Server(self)
            self._transports.append(transport)
            try:
                transport.start_server(server=server)
            except (OSError, EOFError, paramiko.SSHException):
                continue  # the client hung up (a refused host key): serve the next one
            t = threading.Thread(target=self._channels, args=(transport, server), daemon=True)
            t.start()
            self._threads.append(t)

    def _channels(self, transport: paramiko.Transport, server: _Server) -> None:
        while transport.is_active() and not self._stop.is_set():
            chan = transport.accept(0.3)
            if chan is None:
                continue
            dest = server.pending_forwards.pop(chan.get_id(), None)
            if dest is not None:
                t = threading.Thread(target=_pump, args=(chan, dest), daemon=True)
                t.start()
                self._threads.append(t)

    def known_hosts(self, path: Path) -> str:
        entry = f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"
        path.write_text(entry)
        return str(path)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for t in self._transports:
            t.close()
        for th in self._threads:
            th.join(timeout=2)


def _pump(chan: paramiko.Channel, dest: tuple[str, int]) -> None:
    import select

    try:
        sock = socket.create_connection(dest, timeout=5)
    except OSError:
        chan.close()
        return
    try:
        while True:
            r, _, _ = select.select([sock, chan], [], [], 0.5)  # type: ignore[type-var]
            if sock in r:
                data = sock.recv(65536)
                if not data:
                    break
                chan.sendall(data)
            if chan in r:
                data = chan.recv(65536)
                if not data:
                    break
                sock.sendall(data)
    except OSError:
        pass
    finally:
        sock.close()
        chan.close()


class _Server(paramiko.ServerInterface):
    def __init__(self, sshd: FakeSshd) -> None:
        self.sshd = sshd
        self.pending_forwards: dict[int, tuple[str, int]] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == "k3sfleet" and key == self.sshd.user_key:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        if destination[0] != "127.0.0.1":
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:  # refuse like sshd does when nothing listens there
            socket.create_connection(destination, timeout=2).close()
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        self.sshd.forwards.append(destination)
        self.pending_forwards[chanid] = destination
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode()
        self.sshd.commands.append(text)

        def answer() -> None:
            time.sleep(0.1)  # let paramiko send the exec reply first, as sshd would
            if text == "sudo -n cat /etc/rancher/k3s/k3s.yaml":
                channel.sendall(self.sshd.kubeconfig)
                channel.send_exit_status(0)
            else:
                channel.sendall_stderr(b"sudo: a password is required\n")
                channel.send_exit_status(1)
            channel.close()

        threading.Thread(target=answer, daemon=True).start()
        return True


def _kubeconfig(pki: dict[str, bytes], port: int, ca: bytes | None = None) -> bytes:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "default",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": b64(ca or pki["ca"]),
                    },
                }
            ],
            "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
            "current-context": "default",
            "users": [
                {
                    "name": "default",
                    "user": {
                        "client-certificate-data": b64(pki["client_cert"]),
                        "client-key-data": b64(pki["client_key"]),
                    },
                }
            ],
        }
    ).encode()


@pytest.fixture
def user_key(tmp_path: Path) -> tuple[paramiko.PKey, str]:
    key = paramiko.ECDSAKey.generate()
    path = tmp_path / "id_ecdsa"
    key.write_private_key_file(str(path))
    return key, str(path)


@pytest.fixture
def sshd(
    user_key: tuple[paramiko.PKey, str], pki: dict[str, bytes], api_port: int
) -> Iterator[FakeSshd]:
    d = FakeSshd(user_key[0], _kubeconfig(pki, api_port))
    yield d
    d.close()


def _host(name: str, sshd_port: int, key: str, known: str) -> HostInfo:
    return HostInfo.from_data(name, {
        "ssh_hostname": "127.0.0.1", "ssh_user": "k3sfleet", "ssh_port": sshd_port, "ssh_key": key,
        "ssh_known_hosts_file": known, **sudo_data("k3sfleet"),
    })


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- tests --------------------------------------------------------------------------------------


def test_api_through_tunnel_with_client_cert(
    sshd: FakeSshd,
    user_key: tuple[paramiko.PKey, str],
    tmp_path: Path,
    api_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = _host("s1", sshd.port, user_key[1], sshd.known_hosts(tmp_path / "kh"))
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with cluster_api([host]) as api:
        assert api.server.name == "s1" and api.tunnelled
        assert api.configuration.host.startswith("https://127.0.0.1:")
        assert not api.configuration.host.endswith(f":{api_port}")  # a local forwarded port
        version = k8s.VersionApi(api).get_code()
        assert version.git_version == "v1.34.2+system:admin"  # the client certificate was used
        # TLS material lives in memfds, not files on disk
        for path in (api.configuration.ssl_ca_cert, api.configuration.key_file):
            assert path.startswith("/proc/") and os.readlink(path).startswith("/memfd:")
        key_path = api.configuration.key_file
    assert not os.path.exists(key_path)  # closed on exit
    assert list(private_tmp.iterdir()) == []  # no temporary files either
    assert sshd.commands == ["sudo -n cat /etc/rancher/k3s/k3s.yaml"]
    assert ("127.0.0.1", api_port) in sshd.forwards


def test_tls_verified_against_kubeconfig_ca(
    user_key: tuple[paramiko.PKey, str], pki: dict[str, bytes], api_port: int, tmp_path: Path
) -> None:
    d = FakeSshd(user_key[0], _kubeconfig(pki, api_port, ca=pki["other_ca"]))
    try:
        host = _host("s1", d.port, user_key[1], d.known_hosts(tmp_path / "kh"))
        with cluster_api([host]) as api:
            api.configuration.retries = 0
            with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
                k8s.VersionApi(api).get_code()
    finally:
        d.close()


def test_unknown_host_key_is_refused(
    sshd: FakeSshd, user_key: tuple[paramiko.PKey, str], tmp_path: Path
) -> None:
    other = paramiko.ECDSAKey.generate()
    (tmp_path / "kh").write_text(
        f"[127.0.0.1]:{sshd.port} {other.get_name()} {other.get_base64()}\n"
    )
    host = _host("s1", sshd.port, user_key[1], str(tmp_path / "kh"))
    with pytest.raises(ClusterUnreachable, match="s1"), cluster_api([host]):
        pass
    assert sshd.commands == []  # nothing ran on a host we could not authenticate

    (tmp_path / "empty").write_text("")
    host = _host("s1", sshd.port, user_key[1], str(tmp_path / "empty"))
    with pytest.raises(ClusterUnreachable, match="not found in known_hosts"), cluster_api([host]):
        pass


def test_next_server_when_one_is_down(
    sshd: FakeSshd, user_key: tuple[paramiko.PKey, str], tmp_path: Path
) -> None:
    known = sshd.known_hosts(tmp_path / "kh")
    down = _host("s-down", sshd.port, user_key[1], known)
    down = HostInfo("s-down", "127.0.0.1", "k3sfleet", _dead_port(), user_key[1], known, sudo=True)
    agent = HostInfo("a1", "127.0.0.1", "k3sfleet", sshd.port, user_key[1], known, role="agent",
                     sudo=True)
    up = _host("s-up", sshd.port, user_key[1], known)
    with cluster_api([agent, down, up]) as api:
        assert api.server.name == "s-up"
        assert k8s.VersionApi(api).get_code().major == "1"


def test_server_whose_api_is_down_is_skipped(
    user_key: tuple[paramiko.PKey, str], pki: dict[str, bytes], api_port: int, tmp_path: Path
) -> None:
    dead_api = FakeSshd(user_key[0], _kubeconfig(pki, _dead_port()))
    live = FakeSshd(user_key[0], _kubeconfig(pki, api_port))
    try:
        kh = tmp_path / "kh"
        kh.write_text(
            Path(dead_api.known_hosts(tmp_path / "a")).read_text()
            + Path(live.known_hosts(tmp_path / "b")).read_text()
        )
        hosts = [
            _host("s1", dead_api.port, user_key[1], str(kh)),
            _host("s2", live.port, user_key[1], str(kh)),
        ]
        with cluster_api(hosts) as api:
            assert api.server.name == "s2"
        with pytest.raises(ClusterUnreachable) as info, cluster_api(hosts[:1]):
            pass
        assert "s1" in str(info.value) or "API port" in str(info.value)
    finally:
        dead_api.close()
        live.close()


def test_all_servers_down_names_each(user_key: tuple[paramiko.PKey, str], tmp_path: Path) -> None:
    hosts = [
        HostInfo("s1", "127.0.0.1", "k3sfleet", _dead_port(), user_key[1], None),
        HostInfo("s2", "127.0.0.1", "k3sfleet", _dead_port(), user_key[1], None),
    ]
    with pytest.raises(ClusterUnreachable) as info, cluster_api(hosts, timeout=2):
        pass
    assert "s1" in str(info.value) and "s2" in str(info.value)


def test_direct_api_server_skips_the_tunnel(
    sshd: FakeSshd, user_key: tuple[paramiko.PKey, str], tmp_path: Path, api_port: int
) -> None:
    host = _host("s1", sshd.port, user_key[1], sshd.known_hosts(tmp_path / "kh"))
    with cluster_api([host], api_server=f"https://127.0.0.1:{api_port}") as api:
        assert not api.tunnelled
        assert api.configuration.host == f"https://127.0.0.1:{api_port}"
        assert k8s.VersionApi(api).get_code().minor == "34"
    assert sshd.forwards == []  # no tunnel was used


def test_tcp_nodelay_on_ssh_socket(
    sshd: FakeSshd, user_key: tuple[paramiko.PKey, str], tmp_path: Path
) -> None:
    host = _host("s1", sshd.port, user_key[1], sshd.known_hosts(tmp_path / "kh"))
    ssh = kube.ssh_client(host)
    try:
        sock = ssh.get_transport().sock  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        ssh.close()


def test_sudo_failure_reports_stderr_not_content(
    user_key: tuple[paramiko.PKey, str], tmp_path: Path
) -> None:
    d = FakeSshd(user_key[0], b"")
    try:
        host = HostInfo(
            "s1", "127.0.0.1", "k3sfleet", d.port, user_key[1], d.known_hosts(tmp_path / "kh")
        )
        ssh = kube.ssh_client(host)
        rc, out, err = kube.run(ssh, "sudo -n cat /nope")
        ssh.close()
        assert rc == 1 and b"password is required" in err
    finally:
        d.close()


@pytest.mark.parametrize(("data", "prefix"), [
    (sudo_data("root"), ""),
    (sudo_data("admin"), "sudo -n "),
    ({"_sudo": True, "_sudo_user": "k3s admin"}, "sudo -n -u 'k3s admin' "),
    ({}, ""),  # no `_sudo` in the host data: no sudo, as in pyinfra's own commands
])
def test_root_reads_use_the_sudo_of_the_host_data(
    user_key: tuple[paramiko.PKey, str], tmp_path: Path, data: dict[str, Any], prefix: str
) -> None:
    """The one sudo rule: the kubeconfig and node-token reads over k3sfleet's SSH transport
    take ``_sudo`` / ``_sudo_user`` from the host data, the keys pyinfra's commands read."""
    d = FakeSshd(user_key[0], b"")
    try:
        host = HostInfo.from_data("s1", {
            "ssh_hostname": "127.0.0.1", "ssh_user": "k3sfleet", "ssh_port": d.port,
            "ssh_key": user_key[1], "ssh_known_hosts_file": d.known_hosts(tmp_path / "kh"), **data,
        })
        ssh = kube.ssh_client(host)
        with contextlib.suppress(kube.KubeAccessError):  # (the fake answers one command only)
            kube.read_root_file(ssh, host, "/etc/rancher/k3s/k3s.yaml")
        ssh.close()
        assert d.commands == [f"{prefix}cat /etc/rancher/k3s/k3s.yaml"]
    finally:
        d.close()


def test_parse_kubeconfig_errors_never_quote_the_document(pki: dict[str, bytes]) -> None:
    creds = parse_kubeconfig(_kubeconfig(pki, 6443))
    assert creds.server == "https://127.0.0.1:6443" and creds.key == pki["client_key"]
    assert "PRIVATE" not in repr(creds)
    bad = b"clusters: [\n client-key-data: SECRETKEYMATERIAL"
    with pytest.raises(kube.KubeAccessError) as info:
        parse_kubeconfig(bad)
    assert "SECRETKEYMATERIAL" not in str(info.value)


def test_hosts_from_inventory_file(tmp_path: Path) -> None:
    inv = tmp_path / "inventory.py"
    inv.write_text(
        "k3s_servers = [('s1', {'ssh_hostname': '10.0.0.1', 'ssh_user': 'admin', 'ssh_port': 2222,"
        " 'ssh_key': '~/k', 'ssh_known_hosts_file': '/kh', 'k3s_role': 'server'}), 's2']\n"
        "k3s_agents = [('a1', {'ssh_hostname': '10.0.0.3'})]\n"
    )
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "all.py").write_text("ssh_user = 'deploy'\n")
    hosts = kube.hosts_from_inventory(inv)
    assert [(h.name, h.role) for h in hosts] == [
        ("s1", "server"),
        ("s2", "server"),
        ("a1", "agent"),
    ]
    s1 = hosts[0]
    assert (s1.hostname, s1.user, s1.port, s1.known_hosts) == ("10.0.0.1", "admin", 2222, "/kh")
    assert s1.key == str(Path("~/k").expanduser())
    assert hosts[2].user == "deploy"  # group data applied as the pyinfra CLI does


def test_token_kubeconfig_sets_bearer_auth() -> None:
    doc = yaml.safe_dump(
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "u", "user": {"token": "tok-123"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    creds = parse_kubeconfig(doc)
    assert creds.token == "tok-123" and creds.cert is None and "tok-123" not in repr(creds)
    files = kube._MemFiles()
    try:
        api = kube.api_client(creds, "https://127.0.0.1:1", files)
        auth = api.configuration.auth_settings()["BearerToken"]
        assert auth["value"] == "Bearer tok-123"
        assert api.configuration.ssl_ca_cert is None and api.configuration.verify_ssl
    finally:
        files.close()


def test_inventory_loading_does_not_monkey_patch_the_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    inv = tmp_path / "inventory.py"
    inv.write_text("k3s_servers = [('s1', {'ssh_hostname': '10.0.0.1'})]\nk3s_agents = ['a1']\n")
    code = (
        "import sys; from k3sfleet.kube import inventory_from_file\n"
        "inv = inventory_from_file(sys.argv[1])\n"
        "names = sorted(h.name for h in inv.get_group('k3s_servers'))\n"
        "print(names, 'pyinfra_cli' in sys.modules)\n"
        "import gevent.monkey; print(gevent.monkey.is_module_patched('socket'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(inv)], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["['s1'] False", "False"]


@pytest.mark.parametrize(("data", "expected"), [
    ({"ssh_user": "root"}, (False, None)),
    ({"ssh_user": "admin", "_sudo": True}, (True, None)),
    ({"ssh_user": "admin", "_sudo": True, "_sudo_user": "k3s"}, (True, "k3s")),
])
def test_verify_runs_its_checks_with_the_sudo_of_the_host_data(
    data: dict[str, Any], expected: tuple[bool, str | None]
) -> None:
    """``k3sfleet verify``'s testinfra hosts take sudo from the host data too (it was always on,
    root logins included), and testinfra wraps each check as the host data says."""
    from k3sfleet.verify import testinfra_host

    node = HostInfo.from_data("s1", {"ssh_hostname": "127.0.0.1", **data})
    backend = testinfra_host(node).backend
    assert (backend.sudo, backend.sudo_user) == expected
    wrapped = backend.get_command("id -u")
    assert wrapped.startswith("sudo") == expected[0]
    assert ("-u k3s" in wrapped) == (expected[1] == "k3s")
