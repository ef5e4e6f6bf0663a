"""The one way k3sfleet reaches the cluster's Kubernetes API from the control machine.

``cluster_api`` picks the first reachable server of the inventory, opens an SSH connection to
it with paramiko (host keys checked strictly, ``TCP_NODELAY`` on), reads
``/etc/rancher/k3s/k3s.yaml`` over that connection (``sudo -n cat``), and forwards a local
port on 127.0.0.1 through the SSH transport to the API's own 127.0.0.1:6443. TLS is verified
against the kubeconfig's CA. Nothing is written to the control machine's disk: the CA, client
certificate and key live in anonymous in-memory files (``memfd``) while the context is open.

When ``K3SFLEET_API_SERVER`` (host data ``k3sfleet_api_server``) is set, the kubeconfig is still
read over SSH, but the client talks to that URL directly (a tailnet address) without a tunnel.

A server that is down (SSH or the API not answering) is skipped and the next one tried; when
none answers, ``ClusterUnreachable`` names every server and why.

Example::

    from kubernetes import client
    from k3sfleet.kube import cluster_api

    with cluster_api("inventory.py") as api:          # or a list of HostInfo, or an Inventory
        print(api.server.name)                         # the server used
        for node in client.CoreV1Api(api).list_node().items:
            print(node.metadata.name)
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import os
import select
import shlex
import socket
import tempfile
import threading
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paramiko
import yaml
from kubernetes import client as k8s
from pyinfra.api import Inventory
from pyinfra.context import ctx_inventory, inventory

from k3sfleet.errors import ConfigError, K3sfleetError

log = logging.getLogger(__name__)

KUBECONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"
DEFAULT_TIMEOUT = 10.0


class KubeAccessError(K3sfleetError):
    """One server could not give us the API (SSH, kubeconfig, or the API port)."""


class ClusterUnreachable(K3sfleetError):
    """No server of the inventory gave us the API; the message names each and why."""


@dataclass(frozen=True)
class HostInfo:
    """How to reach one node over SSH, taken from its pyinfra host data.

    ``known_hosts`` is checked strictly (unknown or changed host keys are refused).
    """

    name: str
    hostname: str
    user: str | None = None
    port: int = 22
    key: str | None = None
    known_hosts: str | None = None
    role: str = "server"
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    sudo: bool = False
    sudo_user: str | None = None

    @classmethod
    def from_data(cls, name: str, data: Mapping[str, Any], groups: Iterable[str] = ()) -> HostInfo:
        """Build from pyinfra host data (``ssh_hostname``, ``ssh_user``, ``ssh_port``,
        ``ssh_key``, ``ssh_known_hosts_file``, ``k3s_role``; ``_sudo`` and ``_sudo_user``, the
        keys pyinfra's own commands read, which ``k3sfleet.inventory.sudo_data`` sets).

        Example::

            HostInfo.from_data("vps-1", {"ssh_hostname": "203.0.113.5", "ssh_user": "admin"})
        """
        groups = list(groups)
        role = data.get("k3s_role") or ("agent" if "k3s_agents" in groups else "server")
        key = data.get("ssh_key")
        known = data.get("ssh_known_hosts_file") or data.get("k3sfleet_known_hosts")
        return cls(
            name=name,
            hostname=str(data.get("ssh_hostname") or name),
            user=str(data["ssh_user"]) if data.get("ssh_user") else None,
            port=int(data.get("ssh_port") or 22),
            key=str(Path(str(key)).expanduser()) if key else None,
            known_hosts=str(Path(str(known)).expanduser()) if known else None,
            role=str(role),
            data=dict(data),
            sudo=bool(data.get("_sudo")),
            sudo_user=str(data["_sudo_user"]) if data.get("_sudo_user") else None,
        )


def hosts_from_inventory(path: str | os.PathLike[str]) -> list[HostInfo]:
    """Every host of a pyinfra inventory file, in inventory order, with the group data the pyinfra
    CLI would give it (``group_data/<group>.py`` next to the file, ``all`` first).

    The file is executed as pyinfra's CLI executes it, but without importing ``pyinfra_cli``
    (which monkey-patches the whole process with gevent on import).

    Example::

        servers = [h for h in hosts_from_inventory("inventory.py") if h.role == "server"]
    """
    return hosts_from_pyinfra(inventory_from_file(path))


def inventory_from_file(path: str | os.PathLike[str]) -> Any:
    """A pyinfra ``Inventory`` from an inventory file, built as the pyinfra CLI builds it
    (groups, ``group_data/``), without importing ``pyinfra_cli`` (whose import monkey-patches
    the whole process with gevent)."""
    path = Path(path)
    namespace = _exec_file(path)
    groups = {
        key: value
        for key, value in namespace.items()
        if not key.startswith("_") and _is_host_group(value) and value
    }
    if not groups:
        raise K3sfleetError(f"k3sfleet: the inventory {path} has no hosts")
    all_hosts: list[Any] = []
    all_data: dict[str, Any] = {}
    if "all" in groups:
        all_group = groups.pop("all")
        all_hosts, all_data = all_group if isinstance(all_group, tuple) else (all_group, {})
    else:
        for members in groups.values():
            for member in members[0] if isinstance(members, tuple) else members:
                name = member[0] if isinstance(member, tuple) else member
                if name not in [m[0] if isinstance(m, tuple) else m for m in all_hosts]:
                    all_hosts.append(member)
    group_data = _group_data(path.resolve().parent / "group_data")
    all_data = {**group_data.pop("all", {}), **all_data}
    final: dict[str, Any] = {}
    for name, members in groups.items():
        hosts, data = members if isinstance(members, tuple) else (members, {})
        final[name] = (hosts, {**group_data.get(name, {}), **data})
    return Inventory((all_hosts, all_data), **final)


def check_syntax(path: str | os.PathLike[str]) -> Any:
    """``path`` compiled, or one ``ConfigError`` naming its file, line and Python's message
    (pyinfra's CLI reports a syntax error in an inventory as an internal error).

    Example::

        check_syntax("inventory.py")
        # ConfigError: inventory.py line 12: invalid syntax. Perhaps you forgot a comma?
    """
    path = Path(path)
    try:
        return compile(path.read_text(encoding="utf-8"), str(path), "exec")
    except OSError as e:
        raise ConfigError(f"cannot read the inventory {path}: {e.strerror}") from None
    except SyntaxError as e:
        where = f"{path} line {e.lineno}" if e.lineno else str(path)
        raise ConfigError(f"{where}: {e.msg} (not valid Python)") from None


def _exec_file(path: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {
        "__file__": str(path),
        "__name__": f"k3sfleet_inventory_{path.stem}",
    }
    exec(check_syntax(path), namespace)  # noqa: S102 - the user's own inventory, as pyinfra runs it
    return namespace


def _is_host_group(value: Any) -> bool:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        value = value[0]
    return isinstance(value, list | tuple) and all(isinstance(v, str | tuple) for v in value)


def _group_data(folder: Path) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return data
    for file in sorted(folder.glob("*.py")):
        attrs = _exec_file(file)
        data[file.stem] = {
            k: v
            for k, v in attrs.items()
            if not k.startswith("_") and not isinstance(v, types.ModuleType) and not callable(v)
        }
    return data


def hosts_from_pyinfra(inventory: Any) -> list[HostInfo]:
    """Every host of a pyinfra ``Inventory`` (also the ``pyinfra.context.inventory`` proxy)."""
    return [HostInfo.from_data(h.name, h.data.dict(), h.groups) for h in inventory]


def _servers(source: Any) -> list[HostInfo]:
    if source is None:
        if not ctx_inventory.isset():
            raise K3sfleetError("cluster_api(): no hosts given and no pyinfra inventory in context")
        hosts = hosts_from_pyinfra(inventory)
    elif isinstance(source, str | os.PathLike):
        hosts = hosts_from_inventory(source)
    elif isinstance(source, HostInfo):
        hosts = [source]
    elif hasattr(source, "get_group") and hasattr(source, "__iter__"):
        hosts = hosts_from_pyinfra(source)
    else:
        hosts = list(source)
    servers = [h for h in hosts if h.role == "server"]
    if not servers:
        raise K3sfleetError("cluster_api(): the inventory has no server")
    return servers


# -- SSH ------------------------------------------------------------------------------------


def ssh_client(host: HostInfo, timeout: float = DEFAULT_TIMEOUT) -> paramiko.SSHClient:
    """An SSH connection to ``host`` with strict host-key checking and ``TCP_NODELAY``.

    The socket is created here so ``TCP_NODELAY`` can be set (paramiko does not), then handed
    to paramiko as ``sock=``. Raises ``KubeAccessError`` on any failure.
    """
    ssh = paramiko.SSHClient()
    try:
        known = host.known_hosts or str(Path("~/.ssh/known_hosts").expanduser())
        if Path(known).is_file():
            ssh.load_host_keys(known)
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock = socket.create_connection((host.hostname, host.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ssh.connect(
            host.hostname,
            port=host.port,
            username=host.user,
            key_filename=host.key,
            look_for_keys=host.key is None,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except (OSError, paramiko.SSHException) as e:
        ssh.close()
        raise KubeAccessError(f"SSH to {host.name} ({host.hostname}:{host.port}): {e}") from None
    return ssh


def run(
    ssh: paramiko.SSHClient, command: str, *, stdin: bytes | None = None, timeout: float = 60.0
) -> tuple[int, bytes, bytes]:
    """Run ``command`` on the other end; ``stdin`` (bytes) is written to it, then closed.

    Secrets go through ``stdin``, never on the command line. Returns (exit code, stdout, stderr).
    """
    chan = ssh.get_transport().open_session(timeout=timeout)  # type: ignore[union-attr]
    try:
        chan.settimeout(timeout)
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            ready = False
            if chan.recv_ready():
                out += chan.recv(65536)
                ready = True
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                ready = True
            if ready:
                continue
            if chan.exit_status_ready() and not (chan.recv_ready() or chan.recv_stderr_ready()):
                break
            select.select([chan], [], [], 1.0)
        return chan.recv_exit_status(), bytes(out), bytes(err)
    finally:
        chan.close()


def sudo_prefix(host: HostInfo) -> str:
    """What goes before a root command on ``host``: ``sudo -n `` (``sudo -n -u USER `` with a
    ``_sudo_user``) when its host data says ``_sudo``, else nothing (see ``HostInfo.from_data``).

    Example::

        sudo_prefix(HostInfo("vps-1", "203.0.113.5", "admin", sudo=True))  # "sudo -n "
    """
    if not host.sudo:
        return ""
    return f"sudo -n -u {shlex.quote(host.sudo_user)} " if host.sudo_user else "sudo -n "


# -- kubeconfig -----------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a kubeconfig gives the client. ``repr`` shows no key material."""

    server: str
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(server={self.server!r}, ...)"


def parse_kubeconfig(text: str | bytes, source: str = "kubeconfig") -> Credentials:
    """The current context's server and credentials from a kubeconfig document.

    Error messages never quote the document (it holds the client key).
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise KubeAccessError(f"{source} is not valid YAML") from None
    try:
        contexts = {c["name"]: c["context"] for c in doc.get("contexts") or []}
        name = doc.get("current-context") or next(iter(contexts))
        ctx = contexts[name]
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
    except (AttributeError, KeyError, StopIteration, TypeError):
        raise KubeAccessError(f"{source} has no usable current context") from None

    def data(entry: Mapping[str, Any], key: str) -> bytes | None:
        if entry.get(f"{key}-data"):
            return base64.b64decode(entry[f"{key}-data"])
        return None

    return Credentials(
        server=str(cluster["server"]),
        ca=data(cluster, "certificate-authority"),
        cert=data(user, "client-certificate"),
        key=data(user, "client-key"),
        token=user.get("token"),
    )


def read_root_file(
    ssh: paramiko.SSHClient,
    host: HostInfo,
    path: str,
    error: type[K3sfleetError] = KubeAccessError,
) -> bytes:
    """The bytes of root-only ``path`` on ``host``, read over ``ssh`` (``sudo -n cat``); a
    failure raises ``error`` naming the file, the host and the first line of stderr.

    Example::

        read_root_file(ssh, host, "/var/lib/rancher/k3s/server/node-token")
    """
    command = f"{sudo_prefix(host)}cat {shlex.quote(path)}"
    try:
        rc, out, err = run(ssh, command, timeout=DEFAULT_TIMEOUT)
    except (OSError, paramiko.SSHException) as e:
        raise error(f"reading {path} on {host.name}: {e}") from None
    if rc != 0:
        reason = err.decode("utf-8", "replace").strip().splitlines()[:1]
        raise error(f"cannot read {path} on {host.name} (exit {rc}): {' '.join(reason)}")
    return out


def read_kubeconfig(ssh: paramiko.SSHClient, host: HostInfo) -> Credentials:
    """Read k3s's admin kubeconfig on ``host`` over ``ssh`` (``sudo -n cat``)."""
    out = read_root_file(ssh, host, KUBECONFIG_PATH)
    return parse_kubeconfig(out, f"{KUBECONFIG_PATH} on {host.name}")


# -- the tunnel -----------------------------------------------------------------------------


class Tunnel:
    """A local listener on 127.0.0.1:<ephemeral> whose connections are forwarded through an SSH
    transport's ``direct-tcpip`` channels to ``remote`` on the other end.

    Example::

        with Tunnel(ssh.get_transport(), ("127.0.0.1", 6443)) as t:
            url = f"https://127.0.0.1:{t.port}"
    """

    def __init__(self, transport: paramiko.Transport, remote: tuple[str, int]) -> None:
        self.transport = transport
        self.remote = remote
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="k3sfleet-tunnel", daemon=True)
        self._acceptor.start()

    def probe(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Open and close one channel: raises ``KubeAccessError`` when nothing listens there."""
        try:
            chan = self.transport.open_channel(
                "direct-tcpip", self.remote, ("127.0.0.1", 0), timeout=timeout
            )
        except (OSError, paramiko.SSHException) as e:
            raise KubeAccessError(f"API port {self.remote[0]}:{self.remote[1]}: {e}") from None
        chan.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                readable, _, _ = select.select([self._listener], [], [], 0.5)
                if not readable:
                    continue
                conn, peer = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                chan = self.transport.open_channel("direct-tcpip", self.remote, peer)
            except (OSError, paramiko.SSHException) as e:
                log.debug("tunnel: cannot open a channel to %s: %s", self.remote, e)
                conn.close()
                continue
            with self._lock:
                self._open += [conn, chan]
            t = threading.Thread(target=self._pump, args=(conn, chan), daemon=True)
            self._threads.append(t)
            t.start()

    def _pump(self, conn: socket.socket, chan: paramiko.Channel) -> None:
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([conn, chan], [], [], 0.5)  # type: ignore[type-var]
                if conn in readable:
                    data = conn.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in readable:
                    data = chan.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
        except (OSError, paramiko.SSHException):
            pass
        finally:
            chan.close()
            conn.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for item in self._open:
                with contextlib.suppress(Exception):
                    item.close()
        self._acceptor.join(timeout=2)
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- key material in memory -----------------------------------------------------------------


class _MemFiles:
    """Byte strings exposed as file paths without touching the disk.

    Linux: anonymous ``memfd`` files, named ``/proc/self/fd/N`` (urllib3 and the websocket
    client want paths for the CA, client certificate and key). Elsewhere: a 0700 temporary
    directory with 0600 files, removed on close.
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def path(self, name: str, data: bytes) -> str:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create(f"k3sfleet-{name}", 0)  # no CLOEXEC: nothing is exec'd here
            os.write(fd, data)
            self._fds.append(fd)
            return f"/proc/{os.getpid()}/fd/{fd}"
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="k3sfleet-kube-")
        path = Path(self._tmp.name) / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return str(path)

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class K3sApiClient(k8s.ApiClient):
    """A ``kubernetes.client.ApiClient`` that also says which server it came through."""

    server: HostInfo
    tunnelled: bool


def api_client(creds: Credentials, url: str, files: _MemFiles) -> K3sApiClient:
    """A configured client for ``url`` with ``creds`` (TLS verified against the CA)."""
    config = k8s.Configuration()
    config.host = url
    config.verify_ssl = True
    if creds.ca:
        config.ssl_ca_cert = files.path("ca.crt", creds.ca)
    if creds.cert and creds.key:
        config.cert_file = files.path("client.crt", creds.cert)
        config.key_file = files.path("client.key", creds.key)
    if creds.token:
        config.api_key = {"authorization": f"Bearer {creds.token}"}
    return K3sApiClient(configuration=config)


def _remote(server_url: str) -> tuple[str, int]:
    parts = urlsplit(server_url)
    return parts.hostname or "127.0.0.1", parts.port or 6443


@contextlib.contextmanager
def cluster_api(
    source: Any = None,
    *,
    api_server: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[K3sApiClient]:
    """A configured ``kubernetes`` ``ApiClient`` for the cluster, open for the ``with`` block.

    ``source``: an inventory file path, a pyinfra ``Inventory``, a list of ``HostInfo``, or
    ``None`` for the pyinfra inventory in context (inside a deploy). ``api_server`` (default:
    host data ``k3sfleet_api_server``) talks to that URL directly instead of tunnelling.
    Servers are tried in inventory order; the first that answers is used.
    """
    servers = _servers(source)
    if api_server is None:
        api_server = servers[0].data.get("k3sfleet_api_server") or None
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        api: K3sApiClient | None = None
        for host in servers:
            attempt = contextlib.ExitStack()
            try:
                ssh = ssh_client(host, timeout)
                attempt.callback(ssh.close)
                creds = read_kubeconfig(ssh, host)
                files = _MemFiles()
                attempt.callback(files.close)
                if api_server:
                    attempt.close()  # the kubeconfig is all we needed from SSH
                    attempt = contextlib.ExitStack()
                    attempt.callback(files.close)
                    _check_direct(api_server, timeout)
                    url = api_server
                else:
                    transport = ssh.get_transport()
                    assert transport is not None
                    tunnel = Tunnel(transport, _remote(creds.server))
                    attempt.callback(tunnel.close)
                    tunnel.probe(timeout)
                    url = f"https://127.0.0.1:{tunnel.port}"
                api = api_client(creds, url, files)
                api.server, api.tunnelled = host, not api_server
                attempt.callback(api.close)
            except KubeAccessError as e:
                attempt.close()
                log.info("k3sfleet: server %s unusable for the API: %s", host.name, e)
                problems.append(str(e))
                continue
            stack.push(attempt)
            break
        if api is None:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise ClusterUnreachable(
                f"k3sfleet: no server gave access to the Kubernetes API:\n{lines}"
            )
        log.debug("k3sfleet: Kubernetes API through %s", api.server.name)
        yield api


def _check_direct(url: str, timeout: float) -> None:
    host, port = _remote(url)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise KubeAccessError(f"API server {url}: {e}") from None


class ApiSession:
    """The one API session: a ``cluster_api`` connection opened on first use (``api``),
    reopened after a server restarted or rebooted (``reopen``), closed by ``close``, the end
    of the ``with`` block, or at interpreter exit.

    ``source`` is what ``cluster_api`` takes (an inventory file, a pyinfra ``Inventory``, a list
    of ``HostInfo``, ``None`` for the pyinfra inventory in context), or a
    ``kubernetes.client.ApiClient`` you configured yourself, used as it is (never reopened or
    closed here).

    Example::

        with ApiSession("inventory.py") as session:
            engine = RollingEngine(session.api, targets, ..., reconnect=session.reopen)
    """

    def __init__(self, source: Any = None) -> None:
        self.source = source
        self._stack: contextlib.ExitStack | None = None
        self._api: Any = source if isinstance(source, k8s.ApiClient) else None
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"ApiSession(open={self.is_open})"

    @property
    def is_open(self) -> bool:
        return self._api is not None

    @property
    def api(self) -> Any:
        """The ``ApiClient``, connecting on first use."""
        return self._api if self._api is not None else self.reopen()

    def reopen(self) -> Any:
        """Close the connection (if any) and open a new one; returns the new ``ApiClient``."""
        if isinstance(self.source, k8s.ApiClient):
            return self.source
        self.close()
        stack = contextlib.ExitStack()
        self._api = stack.enter_context(cluster_api(self.source))
        self._stack = stack
        return self._api

    def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._api = self._stack, None, None
            with contextlib.suppress(Exception):  # the connection may be gone already
                stack.close()

    def __enter__(self) -> ApiSession:
        self.api  # noqa: B018 - connect now: a with block wants the API
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__: Sequence[str] = [
    "ApiSession",
    "ClusterUnreachable",
    "Credentials",
    "HostInfo",
    "K3sApiClient",
    "KubeAccessError",
    "Tunnel",
    "cluster_api",
    "hosts_from_inventory",
    "inventory_from_file",
    "hosts_from_pyinfra",
    "parse_kubeconfig",
    "read_kubeconfig",
    "run",
    "ssh_client",
    "sudo_prefix",
]
