"""The real Kubernetes control plane, run the way K3s's server runs it.

K3s embeds kine and starts kube-apiserver, kube-controller-manager and kube-scheduler with
arguments of its own (k3s-io/k3s v1.34.2+k3s1 pkg/daemons/control/server.go: ``apiServer``,
``controllerManager``, ``scheduler``; file names from pkg/daemons/control/deps/deps.go). Here the
same programs, built from their upstream sources (k3sfleet.lab.controlplane), run as separate
processes, each with K3s's arguments where they matter to the lab:

* kine on ``<server>/kine.sock`` storing in ``<server>/db/state.db`` (SQLite), as K3s does
  without ``--cluster-init``; kube-apiserver reaches it with ``--etcd-servers=unix://...``.
* kube-apiserver: ``--authorization-mode=Node,RBAC``, ``--enable-admission-plugins=
  NodeRestriction``, ``--anonymous-auth=false``, ``--allow-privileged``, service CIDR
  10.43.0.0/16, service-account issuer ``https://kubernetes.default.svc.cluster.local``,
  audiences including ``k3s``, the client CA for certificate users.
* kube-controller-manager: the service-account key, ``--use-service-account-credentials``,
  ``--allocate-node-cidrs`` with 10.42.0.0/16, the cluster-signing CAs, bound to 127.0.0.1.
* kube-scheduler: bound to 127.0.0.1.

Certificates live in ``<server>/tls/`` and component kubeconfigs in ``<server>/cred/`` under
K3s's names. Each process logs to ``<server>/logs/<program>.log``; ``stop()`` ends each one by
its PID.

Example::

    plane = ControlPlane(bins, Path("/var/lib/rancher/k3s/server"), port=6444)
    plane.start()                    # returns once /readyz answers ok
    plane.admin_kubeconfig           # <server>/cred/admin.kubeconfig
    plane.stop()
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from . import audit, log, pki
from .kubeconfig import write_kubeconfig

PROGRAMS = ("kine", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
CLUSTER_CIDR = "10.42.0.0/16"
SERVICE_CIDR = "10.43.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
# kine's own default SQLite DSN options (k3s-io/kine pkg/drivers/sqlite/sqlite.go, v0.14.6).
SQLITE_OPTIONS = "_journal=WAL&cache=shared&_busy_timeout=30000&_txlock=immediate"

# Client certificates: file name -> (CN, O), as K3s issues them (deps.go genClientCerts).
CLIENTS = {
    "client-admin": ("system:admin", "system:masters"),
    "client-controller": ("system:kube-controller-manager", ""),
    "client-scheduler": ("system:kube-scheduler", ""),
    "client-kube-apiserver": ("system:apiserver", "system:masters"),
    # K3s's supervisor (its deploy controller, Node labels): pkg/server/handlers
    # ClientSupervisorCert, CN "system:" + version.Program + "-supervisor", system:masters.
    "client-supervisor": ("system:k3s-supervisor", "system:masters"),
}
# The front on 6443 authenticates clients itself and hands kube-apiserver the identity in
# X-Remote-User/X-Remote-Group with this certificate (K3s's ClientAuthProxyCert, CN
# deps.RequestHeaderCN, signed by the request-header CA: k3s-io/k3s
# pkg/daemons/control/deps/deps.go, pkg/daemons/control/server.go apiServer, v1.34.2+k3s1).
REQUEST_HEADER_CN = "system:auth-proxy"


#: Where a lab host sees the built programs: read-only binds of the lab cache's entries
#: (k3sfleet.lab.controlplane.HOST_DIR, docs/lab-contract.md).
HOST_DIR = Path("/opt/k3sfleet-standin/go")
PROGRAM_DIRS = {"kine": "kine", "kube-apiserver": "kube", "kube-controller-manager": "kube",
                "kube-scheduler": "kube", "kwok": "kwok"}


def programs() -> dict[str, Path]:
    """Each built program's path, under ``K3SFLEET_LAB_PROGRAMS`` (tests on the machine) or
    :data:`HOST_DIR`; a fatal error naming the missing ones and the fix otherwise.

    Example::

        programs()["kube-apiserver"]       # /opt/k3sfleet-standin/go/kube/kube-apiserver
    """
    base = Path(os.environ.get("K3SFLEET_LAB_PROGRAMS") or HOST_DIR)
    found = {program: base / directory / program for program, directory in PROGRAM_DIRS.items()}
    missing = [str(path) for path in found.values() if not path.is_file()]
    if missing:
        log.fatal(f"the lab's control plane is not built: missing {', '.join(missing)} "
                  "(scripts/setup.sh builds it)")
    return found


class ControlPlaneError(RuntimeError):
    """A component exited or did not become ready; the message names it and its log."""


class ControlPlane:
    """kine + kube-apiserver + kube-controller-manager + kube-scheduler for one server."""

    def __init__(
        self,
        binaries: Mapping[str, Path],
        server_dir: Path,
        *,
        bind_address: str = "127.0.0.1",
        port: int = 6444,
        server_names: tuple[str, ...] = (),
        extra_args: Mapping[str, list[str]] | None = None,
        advertise_address: str | None = None,
        datastore: str | None = None,
        kine_listen: str | None = None,
    ) -> None:
        """``datastore``: another server's kine (``http://host:2379``), no kine of our own (a
        joined server); ``kine_listen``: ``host:port`` where our kine serves other servers too
        (as embedded etcd's client port), else only its unix socket."""
        missing = [p for p in PROGRAMS if p not in binaries]
        if missing:
            raise ValueError(f"no binary for {', '.join(missing)}")
        self.binaries = dict(binaries)
        self.server_dir = server_dir
        self.bind_address = bind_address
        self.port = port
        self.server_names = tuple(
            dict.fromkeys(("127.0.0.1", "localhost", "kubernetes", bind_address, *server_names))
        )
        self.extra_args = dict(extra_args or {})
        self.advertise_address = advertise_address
        self.datastore = datastore
        self.kine_listen = kine_listen
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.tls = pki.ClusterTLS(server_dir / "tls")

    # -- files -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.bind_address}:{self.port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.server_dir / "cred" / "admin.kubeconfig"

    @property
    def kine_socket(self) -> Path:
        return self.server_dir / "kine.sock"

    @property
    def etcd_servers(self) -> str:
        if self.datastore:
            return self.datastore
        if self.kine_listen:
            return "http://{}:{}".format(*self._kine_address())
        return f"unix://{self.kine_socket}"

    def _kine_address(self) -> tuple[str, int]:
        assert self.kine_listen
        host, _, port = self.kine_listen.rpartition(":")
        return ("127.0.0.1" if host in ("0.0.0.0", "") else host), int(port)

    def log(self, program: str) -> Path:
        return self.server_dir / "logs" / f"{program}.log"

    def prepare(self) -> None:
        """CAs, serving and client certificates, the service-account key, kubeconfigs."""
        self.tls = pki.ensure_ca(self.server_dir / "tls")
        pki.ensure_serving(self.tls, list(self.server_names))
        pki.ensure_service_key(self.tls)
        ca = self.tls.server_ca.read_bytes()
        for name, (common_name, organization) in CLIENTS.items():
            cert, key = pki.ensure_client(self.tls, name, common_name, organization)
            kubeconfig = {"client-admin": "admin", "client-controller": "controller",
                          "client-scheduler": "scheduler"}.get(name)
            if kubeconfig:
                write_kubeconfig(self.server_dir / "cred" / f"{kubeconfig}.kubeconfig",
                                 self.url, ca, cert, key)
        if not (self.tls.directory / "client-auth-proxy.crt").exists():
            self.tls.store_pair("client-auth-proxy", *pki.issue(
                *self.tls.pair("request-header-ca"), REQUEST_HEADER_CN, client=True))
        (self.server_dir / "db").mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.server_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.audit_policy.parent.mkdir(parents=True, exist_ok=True)
        self.audit_policy.write_text(audit.POLICY)

    @property
    def audit_policy(self) -> Path:
        return self.server_dir / "etc" / "audit-policy.yaml"

    @property
    def audit_log(self) -> Path:
        """kube-apiserver's audit log, the lab's write log (:mod:`.audit`)."""
        return self.server_dir / "logs" / "audit.log"

    # -- arguments -------------------------------------------------------------------------
    def args(self, program: str) -> list[str]:
        """The command line of ``program`` (binary first), extra arguments last."""
        tls = self.server_dir / "tls"
        cred = self.server_dir / "cred"
        if program == "kine":
            args = [
                f"--endpoint=sqlite://{self.server_dir / 'db' / 'state.db'}?{SQLITE_OPTIONS}",
                (f"--listen-address=http://{self.kine_listen}" if self.kine_listen
                 else f"--listen-address=unix://{self.kine_socket}"),
                "--metrics-bind-address=0",
            ]
        elif program == "kube-apiserver":
            issuer = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"
            args = [
                f"--etcd-servers={self.etcd_servers}",
                "--storage-backend=etcd3",
                f"--cert-dir={tls / 'temporary-certs'}",
                "--allow-privileged=true",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--anonymous-auth=false",
                "--profiling=false",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self._advertise_address()}",
                f"--secure-port={self.port}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-node-port-range=30000-32767",
                f"--tls-cert-file={tls / 'serving-kube-apiserver.crt'}",
                f"--tls-private-key-file={tls / 'serving-kube-apiserver.key'}",
                f"--client-ca-file={tls / 'client-ca.crt'}",
                f"--requestheader-client-ca-file={tls / 'request-header-ca.crt'}",
                f"--requestheader-allowed-names={REQUEST_HEADER_CN}",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-username-headers=X-Remote-User",
                f"--proxy-client-cert-file={tls / 'client-auth-proxy.crt'}",
                f"--proxy-client-key-file={tls / 'client-auth-proxy.key'}",
                f"--service-account-key-file={tls / 'service.key'}",
                f"--service-account-signing-key-file={tls / 'service.key'}",
                f"--service-account-issuer={issuer}",
                f"--api-audiences={issuer},k3s",
                f"--kubelet-certificate-authority={tls / 'server-ca.crt'}",
                f"--kubelet-client-certificate={tls / 'client-kube-apiserver.crt'}",
                f"--kubelet-client-key={tls / 'client-kube-apiserver.key'}",
                # the lab's write log; a K3s user passes these as kube-apiserver-arg
                f"--audit-policy-file={self.audit_policy}",
                f"--audit-log-path={self.audit_log}",
            ]
        elif program == "kube-controller-manager":
            args = [
                f"--kubeconfig={cred / 'controller.kubeconfig'}",
                f"--authentication-kubeconfig={cred / 'controller.kubeconfig'}",
                f"--authorization-kubeconfig={cred / 'controller.kubeconfig'}",
                f"--service-account-private-key-file={tls / 'service.key'}",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={CLUSTER_CIDR}",
                f"--root-ca-file={tls / 'server-ca.crt'}",
                "--profiling=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--use-service-account-credentials=true",
                *(
                    f"--cluster-signing-{kind}-{part}-file={tls / f'{ca}.{ext}'}"
                    for kind, ca in (
                        ("kube-apiserver-client", "client-ca"),
                        ("kubelet-client", "client-ca"),
                        ("kubelet-serving", "server-ca"),
                        ("legacy-unknown", "client-ca"),
                    )
                    for part, ext in (("cert", "crt"), ("key", "key"))
                ),
            ]
        elif program == "kube-scheduler":
            args = [
                f"--kubeconfig={cred / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={cred / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={cred / 'scheduler.kubeconfig'}",
                "--profiling=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
            ]
        else:
            raise KeyError(program)
        return [str(self.binaries[program]), *args, *self.extra_args.get(program, [])]

    def _advertise_address(self) -> str:
        if self.advertise_address:
            return self.advertise_address
        if self.bind_address not in ("0.0.0.0", "::"):
            return self.bind_address
        return socket.gethostbyname(socket.gethostname())

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, program: str) -> None:
        with self.log(program).open("ab") as out:
            self.processes[program] = subprocess.Popen(  # noqa: S603
                self.args(program), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.server_dir, start_new_session=True,
            )

    def _check_running(self, program: str) -> None:
        proc = self.processes[program]
        if proc.poll() is not None:
            tail = self.log(program).read_text(errors="replace").splitlines()[-15:]
            raise ControlPlaneError(
                f"{program} exited with {proc.returncode} (log {self.log(program)}):\n"
                + "\n".join(tail)
            )

    def _wait(self, program: str, ready: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running(program)
            if callable(ready) and ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{program} not ready after {timeout:.0f} s ({self.log(program)})")

    def _kine_ready(self) -> bool:
        if self.kine_listen:
            try:
                socket.create_connection(self._kine_address(), timeout=2).close()
            except OSError:
                return False
            return True
        if not self.kine_socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(self.kine_socket))
            except OSError:
                return False
        return True

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the API's serving certificate and presents the admin client certificate."""
        context = ssl.create_default_context(cafile=str(self.tls.server_ca))
        tls = self.server_dir / "tls"
        context.load_cert_chain(tls / "client-admin.crt", tls / "client-admin.key")
        return context

    def readyz(self) -> bool:
        """True when kube-apiserver's ``/readyz`` answers ``ok``."""
        try:
            with urllib.request.urlopen(  # noqa: S310
                f"{self.url}/readyz", context=self.ssl_context(), timeout=5
            ) as response:
                return bool(response.status == 200 and response.read().strip() == b"ok")
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 180.0) -> None:
        """Prepare, then start each component after the one it needs is ready."""
        self.prepare()
        try:
            if not self.datastore:
                if self.kine_listen and self._kine_ready():
                    raise ControlPlaneError(
                        f"{self.kine_listen} is in use: another datastore would be served")
                self._spawn("kine")
                self._wait("kine", self._kine_ready, 30)
            self._spawn("kube-apiserver")
            self._wait("kube-apiserver", self.readyz, timeout)
            self._spawn("kube-controller-manager")
            self._spawn("kube-scheduler")
            time.sleep(0.5)
            for program in ("kube-controller-manager", "kube-scheduler"):
                self._check_running(program)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> dict[str, int]:
        return {program: proc.pid for program, proc in self.processes.items()}

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM each process by its PID (dependents first), SIGKILL what outlives timeout."""
        for program in reversed(list(self.processes)):
            proc = self.processes[program]
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.processes.clear()

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
