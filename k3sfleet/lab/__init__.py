"""The lab: real Debian bookworm hosts on one machine, for tests, demos and newcomers.

Each host boots systemd (``systemd-nspawn -b``) on an overlay of a cached debootstrap root, in
its own network namespace with ``eth0`` on the lab's bridge; the real tailscaled a deploy
installs makes its own ``tailscale0`` and logs in to the lab's Tailscale control server. The lab
serves, on its bridge address, the apt repository of the root's packages and the artifacts
(k3s mirror, signed Tailscale repository), writes known_hosts for strict host-key checking, and
keeps its state in ``<K3SFLEET_LAB_DIR>/<name>/state.json`` so any process can drive it.
Contract: docs/lab-contract.md. No product code imports this package.

Example::

    lab = Lab.create(servers=1, agents=2)
    lab.ssh(lab.hosts[0], "systemctl is-system-running")   # (0, "running\\n", "")
    lab.write_inventory(Path("lab_inventory.py"))           # pyinfra lab_inventory.py deploys/..
    lab.down()
"""

from __future__ import annotations

import ctypes
import functools
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from k3sfleet.errors import K3sfleetError
from k3sfleet.lab import hosts as hostproc
from k3sfleet.lab import network, rootfs, supervise
from k3sfleet.lab.network import LabNet
from k3sfleet.lab.standins.k3s.audit import writes
from k3sfleet.secret import Secret
from k3sfleet.tailnet import POD_NETWORK

T = TypeVar("T")
R = TypeVar("R")

AUDIT_LOG = "var/lib/rancher/k3s/server/logs/audit.log"
#: The operator's tailnet member (real Tailscale): "host 0" of the lab's address plan.
OPERATOR = "lab-operator"
#: The tag the lab tailnet's policy lets nodes advertise (tscontrol "tag_owners").
LAB_TAG = "tag:k3s"
#: The lab tailnet policy's autoApprovers.routes (tscontrol "auto_approve_routes"): K3s's pod
#: network, as the README's tailnet policy asks (k3sfleet.tailnet.policy).
LAB_AUTO_APPROVED_ROUTES = (POD_NETWORK,)
_CLONE_NEWNET = 0x40000000  # <sched.h>


class LabError(K3sfleetError):
    """The lab cannot run here, or a lab operation failed."""


def unavailable_reason() -> str | None:
    """Why the lab cannot run on this machine (``None`` if it can)."""
    if os.geteuid() != 0:
        return "the lab needs root (systemd-nspawn, network namespaces, overlay mounts)"
    for tool in ("systemd-nspawn", "debootstrap", "lxcfs", "zstd", "ip", "dpkg-scanpackages",
                 "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"the lab needs `{tool}` (run scripts/setup.sh)"
    probe = subprocess.run(  # noqa: S603
        ["unshare", "--mount", "--net", "--pid", "--fork", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return ("the lab needs mount, network and PID namespaces (unshare failed: "
                f"{probe.stderr.strip() or probe.returncode})")
    return None


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the control server's admin API)."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


@dataclass
class LabHost:
    """One lab host as the tests see it."""

    name: str
    role: str
    number: int
    public_ip: str
    tailnet_ip: str
    netns: str
    ssh_port: int = 22
    user: str = rootfs.LAB_USER
    supervisor_pid: int | None = None
    host_key: str = ""


def _parallel(func: Callable[[T], R], items: Iterable[T]) -> list[R]:
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return list(pool.map(func, items))


def _lab_root(lab_dir: str | Path | None) -> Path:
    if lab_dir is None:
        from k3sfleet.settings import Settings

        lab_dir = Settings.load(".", use_vault=False).k3sfleet_lab_dir
    return Path(lab_dir).expanduser()


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is None:
        from k3sfleet.settings import Settings

        cache_dir = Settings.load(".", use_vault=False).k3sfleet_lab_cache_dir
    return Path(cache_dir).expanduser()


def _lab_auth_keys(name: str) -> list[str]:
    try:
        from k3sfleet.lab.artifacts import lab_auth_key
    except ImportError:
        return [f"tskey-auth-{name}-{secrets.token_hex(16)}"]
    return [lab_auth_key(name)]


@dataclass
class Lab:
    """A running lab (see the module docstring)."""

    name: str
    index: int
    directory: Path
    cache: Path
    hosts: list[LabHost] = field(default_factory=list)
    lxcfs_pid: int | None = None
    server_pid: int | None = None
    artifact_port: int | None = None
    auth_keys: list[str] = field(default_factory=list)
    k3s_versions: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    built: dict[str, Any] = field(default_factory=dict)
    uid: str = ""
    control_pid: int | None = None
    control_url: str = ""
    operator_pid: int | None = None
    is_down: bool = False
    _clients: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _ssh_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        servers: int = 1,
        agents: int = 2,
        name: str | None = None,
        *,
        lab_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> Lab:
        """Boot a lab of ``servers`` + ``agents`` hosts (in parallel); tear it down on failure.
        Tailscale is the real one (tailscaled built from tailscale.com, k3sfleet.lab.tailnet)
        with the lab's control server."""
        reason = unavailable_reason()
        if reason:
            raise LabError(f"k3sfleet lab: {reason}")
        if servers < 1 or agents < 0:
            raise LabError("k3sfleet lab: at least one server, and no negative agent count")
        say = log or (lambda _msg: None)
        top = _lab_root(lab_dir)
        top.mkdir(parents=True, exist_ok=True)
        cache = _cache_root(cache_dir)
        start = time.monotonic()
        if name and (top / name / "state.json").exists():
            raise LabError(f"k3sfleet lab: a lab named {name} exists; `k3sfleet lab down {name}`")
        uid = secrets.token_hex(8)
        index, directory = network.claim_index(top, name, uid)
        name = directory.name
        directory.mkdir(parents=True, exist_ok=True)
        lab = cls(name=name, index=index, directory=directory, cache=cache, uid=uid)
        lab.auth_keys = _lab_auth_keys(name)
        lab.save()
        try:
            lab._boot(servers, agents, start, say)
        except BaseException as e:
            kept = lab._keep_logs()
            lab.down()
            e.add_note(f"k3sfleet lab: the failed lab's logs are kept in {kept}")
            raise
        return lab

    def _keep_logs(self) -> Path:
        """Copy the lab's logs (root fs build, services, host consoles) out of its directory."""
        kept = self.directory.parent / ".failed" / f"{self.name}-{self.uid}"
        kept.mkdir(parents=True, exist_ok=True)
        for log in [*self.directory.glob("logs/*.log"), *self.directory.glob("hosts/*/*.log")]:
            name = log.name if log.parent.name == "logs" else f"{log.parent.name}-{log.name}"
            shutil.copy2(log, kept / name)
        return kept

    def _boot(self, servers: int, agents: int, start: float, say: Callable[[str], None]) -> None:
        net = self.net
        (self.directory / "logs").mkdir(exist_ok=True)
        (self.directory / "hosts").mkdir(exist_ok=True)
        t = time.monotonic()
        say(f"lab {self.name}: root filesystem (cache {self.cache})")
        image = rootfs.ensure_root(self.cache, self.directory / "logs/rootfs.log")
        self.timings["rootfs"] = time.monotonic() - t
        t = time.monotonic()
        lower = self.directory / "lower"
        if not (lower / "etc").exists():
            rootfs.extract(image.tarball, lower)
        self.timings["extract"] = time.monotonic() - t
        t = time.monotonic()
        for change in hostproc.raise_inotify_limits():
            say(f"lab {self.name}: raised {change}")
        network.create_bridge(net)
        self._ssh_keypair()
        self._serve(image, say)
        self._start_operator(say)
        self.lxcfs_pid = hostproc.start_lxcfs(self.directory / "lxcfs", self.directory /
                                              "logs/lxcfs.log")
        self.save()
        self.timings["services"] = time.monotonic() - t
        t = time.monotonic()
        roles = ["server"] * servers + ["agent"] * agents
        new = [self._new_host(role) for role in roles]
        self._write_control_config()
        self.save()
        say(f"lab {self.name}: booting {len(new)} hosts")
        _parallel(self._start, new)
        self.save()
        self._write_known_hosts()
        self.timings["boot"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - start
        self.save()

    def _new_host(self, role: str) -> LabHost:
        number = max((h.number for h in self.hosts), default=0) + 1
        count = sum(1 for h in self.hosts if h.role == role) + 1
        name = f"lab-{role}-{count}"
        net = self.net
        host = LabHost(name=name, role=role, number=number, public_ip=net.public_ip(number),
                       tailnet_ip=net.tailnet_ip(number), netns=net.netns(name))
        self.hosts.append(host)
        return host

    def _start(self, host: LabHost) -> None:
        net = self.net
        hdir = self.host_dir(host)
        network.create_host_links(net, host.number, host.name)
        root = hostproc.mount_overlay(self.directory / "lower", hdir)
        if not host.host_key:
            ident = rootfs.HostIdentity(
                name=host.name,
                apt_url=f"{self.artifact_url}/debian",
                authorized_key=(self.directory / "ssh/id_ed25519.pub").read_text(),
            )
            host.host_key = rootfs.prepare_host(root, ident)
            self._tailscale_host_files(root)
        host.supervisor_pid = hostproc.start_host(hdir, host.name, host.netns,
                                                  self.directory / "lxcfs", self._binds)
        hostproc.wait_ssh(host.public_ip)

    @functools.cached_property
    def _binds(self) -> list[tuple[Path, str]]:
        """The control plane's programs, bound read-only into every host; built first (with
        progress on stdout) where the cache lacks them: minutes on a fresh machine, which
        scripts/setup.sh spends ahead."""
        from k3sfleet.lab import controlplane

        return controlplane.host_binds(self.cache)

    def _ssh_keypair(self) -> None:
        key = self.ssh_key
        if key.exists():
            return
        key.parent.mkdir(mode=0o700, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",  # noqa: S603
                        f"k3sfleet-{self.name}", "-f", str(key)], check=True)

    @property
    def control_config(self) -> Path:
        """The lab control server's config (tscontrol -config; no secret, only key hashes)."""
        return self.directory / "tscontrol.json"

    def _write_control_config(self) -> None:
        from k3sfleet.lab.artifacts import auth_key_sha256

        config = {"address": self.net.gateway,
                  "auth_key_sha256": [auth_key_sha256(k) for k in self.auth_keys],
                  "addresses": {OPERATOR: self.net.tailnet_ip(0),
                                **{h.name: h.tailnet_ip for h in self.hosts}},
                  # the lab tailnet's policy: nodes may carry the tag the README advises,
                  # their pod CIDRs are approved as they are advertised
                  "tag_owners": {LAB_TAG: [LAB_TAG]},
                  "auto_approve_routes": list(LAB_AUTO_APPROVED_ROUTES)}
        tmp = self.control_config.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        tmp.rename(self.control_config)

    def _start_control(self, tscontrol: Path) -> None:
        """Start the lab's Tailscale control server (DERP and STUN beside it) on the bridge."""
        self._write_control_config()
        ready = self.directory / "tscontrol.ready"
        ready.unlink(missing_ok=True)
        marker = str(self.control_config)
        log = self.directory / "logs/tscontrol.log"
        self.control_pid = hostproc.detached(
            [str(tscontrol), "-config", marker, "-ready", str(ready),
             "-admin", str(self.control_admin)],
            log,
        )
        hostproc.wait_started(self.control_pid, marker, ready.exists, log, "tscontrol")
        self.control_url = json.loads(ready.read_text())["control_url"]

    @property
    def control_admin(self) -> Path:
        """The control server's admin API socket (tscontrol -admin; root only, mode 0600)."""
        return self.directory / "tscontrol.sock"

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        """One call to the control server's admin API; its JSON answer."""
        conn = _UnixHTTPConnection(str(self.control_admin))
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            res = conn.getresponse()
            text = res.read().decode()
        finally:
            conn.close()
        if res.status != 200:
            raise LabError(f"lab control server: {method} {path}: {res.status} {text.strip()}")
        return json.loads(text)

    def tailnet_routes(self, host: str | LabHost) -> dict[str, list[str]]:
        """The subnet routes ``host``'s node advertises and the ones the tailnet enabled
        (approved), as Tailscale's API answers ``GET /api/v2/device/<id>/routes``
        (tailscale.com v1.102.5 client/tailscale/routes.go); both advertised and enabled are
        the node's primary routes.

        Example::

            lab.tailnet_routes("lab-server-1")
            # {"advertisedRoutes": ["10.42.0.0/24"], "enabledRoutes": ["10.42.0.0/24"]}
        """
        name = self.host(host).name
        return self._admin("GET", f"/api/v2/device/{name}/routes")  # type: ignore[no-any-return]

    def set_tailnet_routes(
        self, host: str | LabHost, routes: Iterable[str]
    ) -> dict[str, list[str]]:
        """Set the routes the tailnet enables for ``host``'s node, as an admin does in the
        console or with the API (``POST /api/v2/device/<id>/routes``); ``[]`` withdraws every
        approval: the control server takes the node's primary routes away and tells its peers.
        While the policy auto-approves a prefix, routes advertised inside it come back."""
        name = self.host(host).name
        return self._admin(  # type: ignore[no-any-return]
            "POST", f"/api/v2/device/{name}/routes", {"routes": list(routes)})

    def set_auto_approved_routes(self, prefixes: Iterable[str]) -> list[str]:
        """Set the lab tailnet policy's ``autoApprovers.routes`` (lab default:
        LAB_AUTO_APPROVED_ROUTES; owners are not modelled). ``[]`` stops auto-approval
        (routes already enabled stay enabled, as the policy approves routes when they are
        advertised); a prefix enables what nodes already advertise inside it. Returns the new
        prefixes.

        Example::

            lab.set_auto_approved_routes([])                 # the policy approves nothing
            lab.set_tailnet_routes("lab-server-1", [])       # and the admin withdrew its route
            lab.set_auto_approved_routes(LAB_AUTO_APPROVED_ROUTES)   # approved again
        """
        answer = self._admin("POST", "/lab/auto-approvers", {"routes": list(prefixes)})
        return list(answer["routes"] or [])

    @property
    def operator_netns(self) -> str:
        """The network namespace of the operator's tailnet member (real Tailscale)."""
        return self.net.netns(OPERATOR)

    @property
    def operator_tailnet_ip(self) -> str:
        return self.net.tailnet_ip(0)

    def _start_operator(self, say: Callable[[str], None]) -> None:
        """Put an operator's machine on the tailnet, as a real operator's is: a tailscaled of
        its own (the real one, with a real TUN ``tailscale0``) in the lab-owned namespace
        ``k3fl<I>-lab-operator`` (eth0 = 10.123.<I>.10 on the public bridge), logged in to the
        lab control server with the lab auth key as ``lab-operator`` (100.64.<I>.10). It takes
        no DNS and no netfilter rules (``tailscale up --accept-dns=false --netfilter-mode=off``)
        and the machine's own namespace is untouched; ``on_tailnet()`` runs client calls there.
        """
        from k3sfleet.lab.tailnet import ensure_tailscale

        binaries = ensure_tailscale(self.cache, say)
        state = self.directory / "operator"
        state.mkdir(mode=0o700, exist_ok=True)
        network.create_host_links(self.net, 0, OPERATOR)
        socket_path = state / "tailscaled.sock"
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               # the same guards as the hosts' drop-in (_tailscale_host_files)
               "TS_PANIC_IF_HIT_MAIN_CONTROL": "1", "TS_NO_LOGS_NO_SUPPORT": "true"}
        log = self.directory / "logs/operator-tailscaled.log"
        self.operator_pid = hostproc.detached(
            ["ip", "netns", "exec", self.operator_netns, str(binaries.tailscaled),
             f"--statedir={state}", f"--socket={socket_path}", "--tun=tailscale0",
             "--port=41641"],
            log, env=env,
        )
        self.save()
        key = state / "auth-key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.auth_key)
        try:
            up = [str(binaries.tailscale), f"--socket={socket_path}", "up",
                  f"--login-server={self.control_url}", f"--auth-key=file:{key}",
                  f"--hostname={OPERATOR}", "--accept-dns=false", "--netfilter-mode=off",
                  "--timeout=60s"]
            # tailscaled is up once it listens on its socket
            hostproc.wait_started(self.operator_pid, str(state), socket_path.exists, log,
                                  "the operator's tailscaled")
            done = subprocess.run(up, capture_output=True, text=True, env=env,  # noqa: S603
                                  check=False, timeout=90)
        finally:
            key.unlink(missing_ok=True)
        if done.returncode != 0:
            raise LabError(f"the operator's tailscale up failed: {done.stderr.strip()[-500:]}")

    @contextmanager
    def on_tailnet(self) -> Iterator[None]:
        """Run the block's network calls from a tailnet member, as an operator's machine is:
        the calling thread enters the operator's namespace (setns(2); only this thread and the
        threads it starts; sockets keep the namespace they were made in).

        Example::

            with lab.on_tailnet():
                urllib.request.urlopen(f"https://{lab.servers[0].tailnet_ip}:6443/version")
        """
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net") as home, \
                open(f"/run/netns/{self.operator_netns}") as there:
            if libc.setns(there.fileno(), _CLONE_NEWNET) != 0:
                raise LabError(f"setns {self.operator_netns}: {os.strerror(ctypes.get_errno())}")
            try:
                yield
            finally:
                if libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                    raise LabError(f"setns back: {os.strerror(ctypes.get_errno())}")

    def _tailscale_host_files(self, root: Path) -> None:
        """Point the host's tailscaled at the lab control server, the way an admin would:
        the system policy file tailscaled reads (tailscale.com v1.102.5
        cmd/tailscaled/syspolicy.go: /etc/tailscale/syspolicy.json; util/syspolicy/pkey:
        ControlURL is the key "LoginURL"), and a drop-in that makes tailscaled panic rather
        than reach Tailscale's own control server (control/controlclient/direct.go
        TS_PANIC_IF_HIT_MAIN_CONTROL) and upload no logs (envknob TS_NO_LOGS_NO_SUPPORT)."""
        policy = root / "etc/tailscale/syspolicy.json"
        policy.parent.mkdir(parents=True, exist_ok=True)
        policy.write_text(json.dumps({"LoginURL": self.control_url}) + "\n")
        dropin = root / "etc/systemd/system/tailscaled.service.d/k3sfleet-lab.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("[Service]\nEnvironment=TS_PANIC_IF_HIT_MAIN_CONTROL=1\n"
                          "Environment=TS_NO_LOGS_NO_SUPPORT=true\n")

    def _serve(self, image: rootfs.RootImage, say: Callable[[str], None]) -> None:
        www = self.directory / "www"
        www.mkdir(exist_ok=True)
        debian = www / "debian"
        if not debian.is_symlink():
            debian.symlink_to(image.apt_repo)
        try:
            from k3sfleet.lab import artifacts
        except ImportError:
            artifacts = None  # type: ignore[assignment]
        if artifacts is not None:
            from k3sfleet.lab.tailnet import ensure_tailscale

            binaries = ensure_tailscale(self.cache, say)
            self._start_control(binaries.tscontrol)
            built = artifacts.build_artifacts(www, self.cache, tailscale=binaries)
            self.k3s_versions = list(built.k3s_versions)
            self.built = {
                "k3s_sha256": dict(built.k3s_sha256),
                "tailscale_version": built.tailscale_version,
                "keyring": str(built.keyring),
                "key_fingerprint": built.key_fingerprint,
            }
        portfile = self.directory / "www.port"
        portfile.unlink(missing_ok=True)
        log = self.directory / "logs/artifacts.log"
        self.server_pid = hostproc.detached(
            [sys.executable, "-m", "k3sfleet.lab.serve", str(www), self.net.gateway,
             str(portfile)],
            log,
        )
        hostproc.wait_started(self.server_pid, str(www), portfile.exists, log,
                              "the artifact server")
        self.artifact_port = int(portfile.read_text())

    def _write_known_hosts(self) -> None:
        lines = [f"{h.name},{h.public_ip},{h.tailnet_ip} {h.host_key}\n" for h in self.hosts
                 if h.host_key]
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.rename(self.known_hosts)

    # -- state --------------------------------------------------------------------------------
    def save(self) -> None:
        """Write state.json (atomically)."""
        state = {
            "name": self.name, "index": self.index, "cache": str(self.cache),
            "hosts": [asdict(h) for h in self.hosts], "lxcfs_pid": self.lxcfs_pid,
            "server_pid": self.server_pid, "artifact_port": self.artifact_port,
            "auth_keys": self.auth_keys, "k3s_versions": self.k3s_versions,
            "timings": self.timings, "built": self.built, "uid": self.uid,
            "control_pid": self.control_pid,
            "control_url": self.control_url, "operator_pid": self.operator_pid,
        }
        path = self.directory / "state.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out, indent=2)
        tmp.rename(path)

    @classmethod
    def load(cls, name: str, lab_dir: str | Path | None = None) -> Lab:
        """The lab ``name`` from its state.json (``LabError`` if there is none)."""
        directory = _lab_root(lab_dir) / name
        try:
            state = json.loads((directory / "state.json").read_text())
        except (OSError, ValueError):
            raise LabError(f"k3sfleet lab: no lab named {name} in {directory.parent}") from None
        return cls(
            name=state["name"], index=state["index"], directory=directory,
            cache=Path(state["cache"]), hosts=[LabHost(**h) for h in state["hosts"]],
            lxcfs_pid=state["lxcfs_pid"], server_pid=state["server_pid"],
            artifact_port=state["artifact_port"], auth_keys=state["auth_keys"],
            k3s_versions=state["k3s_versions"], timings=state.get("timings", {}),
            built=state.get("built", {}), uid=state.get("uid", ""),
            control_pid=state.get("control_pid"),
            control_url=state.get("control_url", ""), operator_pid=state.get("operator_pid"),
        )

    @staticmethod
    def running(lab_dir: str | Path | None = None) -> list[str]:
        """Names of the labs with a state.json under the lab directory."""
        top = _lab_root(lab_dir)
        if not top.exists():
            return []
        return sorted(p.parent.name for p in top.glob("*/state.json"))

    # -- properties ---------------------------------------------------------------------------
    @property
    def net(self) -> LabNet:
        return LabNet(self.index)

    @property
    def ssh_key(self) -> Path:
        """The private key (ed25519) of the ``k3sfleet`` user on every host."""
        return self.directory / "ssh/id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """known_hosts with every host's key under its name, public and tailnet address."""
        return self.directory / "ssh/known_hosts"

    @property
    def artifact_url(self) -> str:
        return f"http://{self.net.gateway}:{self.artifact_port}"

    @property
    def www(self) -> Path:
        """The directory the artifact server serves (debian/, k3s/, tailscale/)."""
        return self.directory / "www"

    @property
    def artifacts(self) -> Any:
        """The stand-ins' ``artifacts.Artifacts`` this lab serves (fault injection:
        ``lab.artifacts.corrupt_checksum(version)``); ``None`` without the stand-ins."""
        if not self.built:
            return None
        from k3sfleet.lab.artifacts import Artifacts

        return Artifacts(self.www, tuple(self.k3s_versions), dict(self.built["k3s_sha256"]),
                         self.built["tailscale_version"], Path(self.built["keyring"]),
                         self.built["key_fingerprint"])

    @property
    def servers(self) -> list[LabHost]:
        return [h for h in self.hosts if h.role == "server"]

    @property
    def agents(self) -> list[LabHost]:
        return [h for h in self.hosts if h.role == "agent"]

    def host(self, name: str | LabHost) -> LabHost:
        """The host called ``name``."""
        wanted = name.name if isinstance(name, LabHost) else name
        for h in self.hosts:
            if h.name == wanted:
                return h
        raise LabError(f"lab {self.name} has no host {wanted}")

    def host_dir(self, host: str | LabHost) -> Path:
        return self.directory / "hosts" / (host.name if isinstance(host, LabHost) else host)

    @property
    def auth_key(self) -> str:
        """A valid auth key for the lab's Tailscale control server."""
        return self.auth_keys[0]

    @property
    def settings_overrides(self) -> dict[str, Any]:
        """Host data the lab inventory sets over the settings (download sources, keys)."""
        data: dict[str, Any] = {
            "k3s_release_url": f"{self.artifact_url}/k3s",
            "tailscale_apt_url": f"{self.artifact_url}/tailscale",
            "tailscale_auth_key": Secret(self.auth_key),
            "k3sfleet_known_hosts": str(self.known_hosts),
            "k3sfleet_ssh_key": str(self.ssh_key),
            "ssh_key": str(self.ssh_key),
            "ssh_known_hosts_file": str(self.known_hosts),
            "ssh_strict_host_key_checking": "yes",
        }
        if self.k3s_versions:
            data["k3s_version"] = self.k3s_versions[-1]
        return data

    # -- operations ---------------------------------------------------------------------------
    def add_host(self, role: str = "agent") -> LabHost:
        """Boot one more host (for "adding a third agent")."""
        if role not in ("server", "agent"):
            raise LabError(f"role must be server or agent, not {role!r}")
        t = time.monotonic()
        host = self._new_host(role)
        self._write_control_config()
        self.save()
        self._start(host)
        self._write_known_hosts()
        self.timings[f"add_{host.name}"] = time.monotonic() - t
        self.save()
        return host

    def ssh_client(self, host: str | LabHost, timeout: float = 10) -> Any:
        """A new connected paramiko client through k3sfleet's own SSH transport
        (``k3sfleet.kube.ssh_client``: strict host keys against ``known_hosts``, TCP_NODELAY);
        the caller closes it."""
        from k3sfleet.kube import HostInfo, ssh_client

        h = self.host(host)
        info = HostInfo(h.name, h.public_ip, h.user, h.ssh_port, str(self.ssh_key),
                        str(self.known_hosts))
        return ssh_client(info, timeout)

    def _session(self, h: LabHost) -> Any:
        """A new channel on this lab's cached connection to ``h`` (reconnecting if it died)."""
        with self._ssh_lock:
            client = self._clients.get(h.name)
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                try:
                    return transport.open_session(timeout=10)
                except Exception:  # noqa: BLE001 - a dead connection: open a new one below
                    pass
            if client is not None:
                client.close()
            client = self.ssh_client(h)
            self._clients[h.name] = client
            return client.get_transport().open_session(timeout=10)

    def close_ssh(self, host: str | LabHost | None = None) -> None:
        """Close the cached SSH connection(s) (``lab.reboot`` and ``lab.down`` do)."""
        with self._ssh_lock:
            names = [self.host(host).name] if host is not None else list(self._clients)
            for name in names:
                client = self._clients.pop(name, None)
                if client is not None:
                    client.close()

    def ssh(self, host: str | LabHost, command: str, timeout: float = 120) -> tuple[int, str, str]:
        """Run ``command`` on ``host`` as the lab user; return (exit code, stdout, stderr).

        One cached connection per host (strict host keys); stdout and stderr are drained
        together, so large outputs cannot stall the command. ``timeout``: seconds without
        output before ``socket.timeout``.
        """
        chan = self._session(self.host(host))
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            errors: list[bytes] = []
            stderr = chan.makefile_stderr("rb")
            reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
            reader.start()
            out = chan.makefile("rb").read()
            reader.join(timeout)
            rc = chan.recv_exit_status()
            return rc, out.decode(errors="replace"), b"".join(errors).decode(errors="replace")
        finally:
            chan.close()

    def pings(self, host: str | LabHost, address: str, count: int = 3) -> bool:
        """Whether ``host`` gets ``count`` echo replies from ``address`` within ``3 * count`` s
        (a ping every 0.5 s: the first may be lost while WireGuard shakes hands or a peer's
        netmap update is still on its way).

        Example::

            assert lab.pings("lab-agent-1", lab.servers[0].tailnet_ip)
            assert not lab.pings("lab-agent-1", "100.64.1.99", count=1)
        """
        rc, _, _ = self.ssh(host, f"ping -c {count} -i 0.5 -W 2 -w {count * 3} {address}",
                            timeout=count * 3 + 30)
        return rc == 0

    def wait_running(self, host: str | LabHost, timeout: float = 60) -> str:
        """Wait for ``systemctl is-system-running`` to settle; return its final state."""
        rc, out, _ = self.ssh(host, f"timeout {int(timeout)} systemctl is-system-running --wait",
                              timeout=timeout + 10)
        return out.strip()

    def is_running(self, host: str | LabHost) -> bool:
        """Whether ``host``'s supervisor (and so the host) is running."""
        h = self.host(host)
        return hostproc.alive(h.supervisor_pid, str(self.host_dir(h) / "nspawn.pid"))

    def stop_host(self, host: str | LabHost) -> None:
        """Power ``host`` off (it keeps its disk; ``start_host`` boots it again)."""
        h = self.host(host)
        self.close_ssh(h)
        hostproc.stop_host(h.supervisor_pid, self.host_dir(h))
        supervise.remove_cgroup(h.netns)
        h.supervisor_pid = None
        self.save()

    def start_host(self, host: str | LabHost) -> None:
        """Boot a stopped ``host`` again."""
        h = self.host(host)
        if self.is_running(h):
            return
        self._start(h)
        self.save()

    def reboot(self, host: str | LabHost, timeout: float = 120) -> float:
        """Reboot ``host`` from inside (``systemctl reboot``); return seconds until SSH is back."""
        h = self.host(host)
        hdir = self.host_dir(h)
        before = hostproc.nspawn_pid(hdir)
        start = time.monotonic()
        try:
            self.ssh(h, "sudo systemctl reboot", timeout=10)
        except Exception:  # noqa: BLE001 - the connection may drop as the host goes down
            pass
        self.close_ssh(h)
        deadline = start + timeout
        while time.monotonic() < deadline:
            now = hostproc.nspawn_pid(hdir)
            if now and now != before and hostproc.alive(now, str(hdir / "root")):
                break
            time.sleep(0.1)
        else:
            raise LabError(f"{h.name} did not reboot within {timeout:.0f} s")
        hostproc.wait_ssh(h.public_ip, timeout=max(1.0, deadline - time.monotonic()))
        return time.monotonic() - start

    def api_writes(self, host: str | LabHost) -> list[dict[str, Any]]:
        """The Kubernetes API's write log on ``host``, from kube-apiserver's audit log
        (standins.k3s.audit); empty where that server runs no kube-apiserver."""
        log = self.host_dir(host) / "root" / AUDIT_LOG
        return writes(log.read_text(errors="replace")) if log.exists() else []

    def write_inventory(
        self,
        path: str | Path,
        data: Mapping[str, Any] | None = None,
        hosts: Iterable[str | LabHost] | None = None,
    ) -> Path:
        """Write a pyinfra inventory file for this lab (``data``: extra host data for all).

        The file builds its groups with ``k3sfleet.inventory.groups()`` from the settings of the
        directory pyinfra runs in, with the lab's overrides applied, so
        ``pyinfra <path> deploys/bootstrap.py`` runs against the lab with host keys checked.
        """
        from k3sfleet.lab.inventory_file import render

        chosen = self.hosts if hosts is None else [self.host(h) for h in hosts]
        overrides = dict(self.settings_overrides)
        overrides.update(data or {})
        text = render(self.name, chosen, overrides)
        out = Path(path)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return out

    # -- teardown -----------------------------------------------------------------------------
    def replaced(self) -> bool:
        """Whether this lab's index or directory now belongs to another lab (it went down and
        its index was reused): then ``down`` must not touch anything."""
        claim = network.claim_owner(self.index)
        if claim and claim.get("uid", "") != self.uid:
            return True
        try:
            state = json.loads((self.directory / "state.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(state.get("uid", "") != self.uid)

    def down(self) -> None:
        """Stop every host and service of the lab and remove its mounts, links and files.

        Safe to call twice, and from another process (``Lab.load(name).down()``); a lab whose
        index was already reused by a newer lab is left alone.
        """
        self.close_ssh()
        if self.is_down or self.replaced():
            self.is_down = True
            return
        net = self.net
        hosts = list(self.hosts)
        _parallel(lambda h: hostproc.stop_host(h.supervisor_pid, self.host_dir(h)), hosts)
        for h in hosts:
            hostproc.umount(self.host_dir(h) / "root")
            supervise.remove_cgroup(h.netns)
        www = str(self.directory / "www")
        if self.server_pid and hostproc.alive(self.server_pid, www):
            os.kill(self.server_pid, 15)
            hostproc.wait_gone(self.server_pid, www, 5)
        control = str(self.control_config)
        if self.control_pid and hostproc.alive(self.control_pid, control):
            os.kill(self.control_pid, 15)
            if not hostproc.wait_gone(self.control_pid, control, 5):
                os.kill(self.control_pid, 9)
                hostproc.wait_gone(self.control_pid, control, 5)
        operator = f"{self.directory}/operator"
        if self.operator_pid and hostproc.alive(self.operator_pid, operator):
            os.kill(self.operator_pid, 15)
            if not hostproc.wait_gone(self.operator_pid, operator, 10):
                os.kill(self.operator_pid, 9)
                hostproc.wait_gone(self.operator_pid, operator, 5)
        hostproc.stop_lxcfs(self.lxcfs_pid, self.directory / "lxcfs")
        for h in hosts:
            network.delete_host_links(net, h.number, h.name)
        # hosts that never made it into state.json (a failed create) still leave namespaces
        for ns in network.lab_netns(net):
            network.ip("netns", "del", ns, check=False)
        for link in network.lab_links(net):
            network.ip("link", "del", link, check=False)
        network.delete_bridge(net)
        for point in sorted(hostproc.mounts_under(self.directory), reverse=True):
            hostproc.umount(Path(point))
        if not hostproc.mounts_under(self.directory):
            shutil.rmtree(self.directory, ignore_errors=True)
        network.release_index(self.index, self.uid)
        self.is_down = True

    def leftovers(self) -> dict[str, list[str]]:
        """What of this lab still exists on the machine (all empty after ``down``)."""
        marker = f"{self.directory}/"  # not lab1 for lab10
        procs = [f"{pid}: {cmd[:120]}" for pid, cmd in hostproc.processes(marker).items()]
        cgroups = [str(p) for h in self.hosts for p in supervise.cgroup_dirs(h.netns)
                   if p.exists()]
        return {
            "processes": procs,
            "cgroups": cgroups,
            "mounts": hostproc.mounts_under(self.directory),
            "netns": network.lab_netns(self.net),
            "links": network.lab_links(self.net),
            "nftables": [network.guard_table(self.net)] if network.guard_exists(self.net) else [],
            "routes": [self.net.tailnet_subnet] if network.tailnet_blocked(self.net) else [],
        }
