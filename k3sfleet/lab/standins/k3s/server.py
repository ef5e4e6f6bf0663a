"""``k3s server``: the control plane of the stand-in.

A first server (no ``server:`` in its config) keeps the cluster's objects in its own datastore
under server/db/ (``cluster-init: true`` also creates server/db/etcd/, like embedded etcd). A
joining server (``server: https://X:6443`` + token) checks the token against X, takes the cluster
CAs from X (as real k3s takes its bootstrap data), registers its Node there and proxies its own
API on 6443 to X.

Example (inside a lab host, via the systemd unit the deploys write)::

    k3s server --cluster-init --node-ip 10.123.1.11 --tls-san 100.64.1.11
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import ssl
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

from . import log, node, pki, podnet, realapi, vpn
from .apiserver import ApiServer, Upstream
from .config import as_list
from .kubeclient import KubeClient, fetch_cacerts
from .kubeconfig import write_kubeconfig
from .manifests import Deployer
from .store import Store

NODE_GRACE = 40.0  # seconds without a heartbeat before a Node is marked NotReady (as k8s does)
CONTROLLER = "system:serviceaccount:kube-system:node-controller"


def data_dir(config: dict[str, Any]) -> Path:
    return Path(str(config.get("data-dir") or "/var/lib/rancher/k3s"))


def _read_token(config: dict[str, Any], key: str, file_key: str) -> str | None:
    if config.get(file_key):
        try:
            return Path(str(config[file_key])).read_text().strip() or None
        except OSError as error:
            log.fatal(f"failed to read {file_key} {config[file_key]}: {error.strerror}")
    value = config.get(key)
    return str(value).strip() if value else None


def server_password(config: dict[str, Any], server_dir: Path) -> str:
    """The cluster token's password: configured, else the one kept in server/token, else new.

    Like real k3s, a datastore made with one token refuses another.
    """
    configured = _read_token(config, "token", "token-file")
    stored_file = server_dir / "token"
    stored = pki.parse_token(stored_file.read_text()).password if stored_file.exists() else None
    if configured is not None:
        password = pki.parse_token(configured).password
        if stored is not None and stored != password:
            log.fatal("bootstrap data already found and encrypted with different token")
        return password
    return stored or secrets.token_hex(16)


def serving_names(config: dict[str, Any], internal: list[str], external: list[str]) -> list[str]:
    names = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.43.0.1",
        socket.gethostname(),
    ]
    for name in internal + external + as_list(config.get("tls-san")):
        if name not in names:
            names.append(name)
    return names


class Leases:
    """Node heartbeats (in memory, like Lease objects the stand-in does not write)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def beat(self, name: str) -> None:
        with self.lock:
            self.seen[name] = time.monotonic()

    def stale(self, names: list[str], grace: float) -> list[str]:
        now = time.monotonic()
        with self.lock:
            for name in names:
                self.seen.setdefault(name, now)
            return [n for n in names if now - self.seen[n] > grace]


def grace_period(config: dict[str, Any]) -> float:
    """``kube-controller-manager-arg: [node-monitor-grace-period=20s]`` (default 40 s)."""
    for arg in as_list(config.get("kube-controller-manager-arg")):
        key, _, value = arg.lstrip("-").partition("=")
        if key == "node-monitor-grace-period" and value:
            units = {"ms": 0.001, "s": 1.0, "m": 60.0}
            for suffix in ("ms", "s", "m"):
                if value.endswith(suffix) and value[: -len(suffix)].replace(".", "").isdigit():
                    return float(value[: -len(suffix)]) * units[suffix]
    return NODE_GRACE


def node_lifecycle(
    store: Store, leases: Leases, stop: threading.Event, grace: float = NODE_GRACE
) -> None:
    """Mark Nodes whose kubelet stopped posting status NotReady (Ready=Unknown)."""
    nodes = store.registry.by_path("", "v1", "nodes")
    assert nodes is not None
    while not stop.wait(min(5.0, grace / 2)):
        listed = store.list(nodes)["items"]
        for name in leases.stale([n["metadata"]["name"] for n in listed], grace):
            found = next(n for n in listed if n["metadata"]["name"] == name)
            ready = [
                c
                for c in (found.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready"
            ]
            if ready and ready[0].get("status") == "True":
                store.patch(
                    nodes,
                    "",
                    name,
                    {"status": {"conditions": [node.ready_condition("Unknown")]}},
                    "application/merge-patch+json",
                    CONTROLLER,
                    subresource="status",
                )
                log.info(f"Node {name} is NotReady: kubelet stopped posting node status")


def join(config: dict[str, Any], password: str, tls_dir: Path) -> tuple[pki.ClusterTLS, str]:
    """Check the token against the server we join and take the cluster CAs from it."""
    url = str(config["server"]).rstrip("/")
    token = pki.parse_token(_read_token(config, "token", "token-file") or "")
    if not token.password:
        log.fatal("--token is required when joining a cluster (--server is set)")
    for attempt in range(60):
        try:
            cacerts = fetch_cacerts(url)
            break
        except (urllib.error.URLError, OSError) as error:
            log.info(f"Waiting to retrieve cluster bootstrap data from {url}: {error}")
            time.sleep(2 if attempt < 59 else 0)
    else:
        log.fatal(f"failed to get CA certs from {url}: server not reachable")
    import hashlib

    ca_hash = hashlib.sha256(cacerts).hexdigest()
    if token.ca_hash and token.ca_hash != ca_hash:
        log.fatal(
            "failed to validate token: token CA hash does not match the Cluster CA "
            f"certificate hash: {token.ca_hash} != {ca_hash}"
        )
    client = KubeClient(url, cacerts, "server", token.password)
    code, bundle = client.request("GET", "/v1-k3s/server-bootstrap")
    if code == 401:
        log.fatal(
            f"failed to get CA certs: {url}/v1-k3s/server-bootstrap: 401 Unauthorized: "
            "token is not valid"
        )
    if code != 200 or not isinstance(bundle, dict):
        log.fatal(f"failed to get bootstrap data from {url}: {code}")
    files = {k: base64.b64decode(v) for k, v in bundle.items()}
    tls = pki.ensure_ca(tls_dir, files)
    if "service.key" in files:  # K3s's bootstrap data carries ServiceKey too
        pki.write_private(tls_dir / "service.key", files["service.key"])
    return tls, url


def run(config: dict[str, Any], version: str) -> int:
    """Run the server until killed."""
    base = data_dir(config)
    server_dir = base / "server"
    # k3s v1.34.2+k3s1 pkg/cli/server/server.go `run`: the VPN is started first, then
    # flannel-iface's address becomes node-ip (when unset); the VPN address then overrides the
    # node IP (pkg/executor/embed/embed.go).
    vpn_auth = vpn.vpn_settings(config)
    vpn_ip = vpn.require_tailscale_up(vpn_auth) if vpn_auth else None
    if config.get("flannel-iface") and not config.get("node-ip"):
        config = {**config, "node-ip": node.flannel_iface_ip(str(config["flannel-iface"]))}
    if vpn_ip:
        config = vpn.with_vpn_node_ip(config, vpn_ip)
    name = node.node_name(config)
    internal, external = node.node_addresses(config)
    password = server_password(config, server_dir)
    db = server_dir / "db"
    # A server whose etcd is initialized starts from its own data whatever server: says
    # (k3s-io/k3s pkg/cluster/bootstrap.go shouldBootstrapLoad: "Managed etcd cluster bootstrap
    # already complete and initialized"; pkg/etcd/etcd.go Start: "Starting etcd for existing
    # cluster member"). Here a member that joined keeps following its cluster's first server
    # (joined.json); a server made the only member by --cluster-reset no longer does.
    initialized = (db / "etcd").is_dir()
    joining = bool(config.get("server")) and (not initialized or (db / "joined.json").exists())
    db.mkdir(parents=True, exist_ok=True, mode=0o700)
    db.chmod(0o700)
    if joining:
        tls, upstream_url = join(config, password, server_dir / "tls")
        db.mkdir(parents=True, exist_ok=True, mode=0o700)
        (db / "etcd").mkdir(exist_ok=True, mode=0o700)
        pki.write_private(db / "joined.json", json.dumps({"server": upstream_url}).encode())
    else:
        tls = pki.ensure_ca(server_dir / "tls")
        if config.get("cluster-init"):
            (db / "etcd").mkdir(parents=True, exist_ok=True, mode=0o700)
    token = pki.format_token(tls.ca_hash, password)
    for file in ("token", "node-token"):
        pki.write_private(server_dir / file, (token + "\n").encode())
    passwords = {password: "system:k3s:server"}
    agent_token = _read_token(config, "agent-token", "agent-token-file")
    if agent_token:
        agent_password = pki.parse_token(agent_token).password
        passwords[agent_password] = "system:k3s:agent"
        pki.write_private(
            server_dir / "agent-token",
            (pki.format_token(tls.ca_hash, agent_password, "node") + "\n").encode(),
        )
    cert, key = pki.ensure_serving(tls, serving_names(config, internal, external))
    admin = pki.ensure_client(tls, "client-admin", "system:admin", "system:masters")
    port = int(config.get("https-listen-port") or 6443)
    kubeconfig = Path(str(config.get("write-kubeconfig") or "/etc/rancher/k3s/k3s.yaml"))
    mode = int(str(config.get("write-kubeconfig-mode") or "600"), 8)
    write_kubeconfig(
        kubeconfig, f"https://127.0.0.1:{port}", tls.server_ca.read_bytes(), *admin, mode=mode
    )

    binaries = realapi.real_api_binaries()
    if binaries is not None:  # the real control plane (issue 16)
        own = node.node_object(name, version, config, server=True,
                               etcd=bool(config.get("cluster-init")) or (db / "etcd").exists())
        return realapi.serve(config, version, binaries, server_dir=server_dir, tls=tls,
                             names=serving_names(config, internal, external), port=port,
                             passwords=passwords, own=own,
                             datastore=realapi.datastore_of(upstream_url) if joining else None,
                             shared=(db / "etcd").is_dir())
    store = Store(
        state_file=None if joining else db / "state.json",
        write_log=server_dir / "logs" / "api-writes.jsonl",
    )
    upstream = Upstream(upstream_url, tls.server_ca, "server", password) if joining else None
    api = ApiServer(
        store,
        (str(config.get("bind-address") or "0.0.0.0"), port),
        tls=(cert, key, tls.client_ca),
        passwords=passwords,
        version=version,
        cacerts=tls.server_ca.read_bytes(),
        upstream=upstream,
    )
    leases = Leases()

    def bootstrap(request: Any, user: str, body: Any) -> tuple[int, Any]:
        if user != "system:k3s:server":
            return 401, {
                "kind": "Status",
                "status": "Failure",
                "code": 401,
                "reason": "Unauthorized",
                "message": "Unauthorized",
            }
        files = ("server-ca.crt", "server-ca.key", "client-ca.crt", "client-ca.key")
        return 200, {f: base64.b64encode((tls.directory / f).read_bytes()).decode() for f in files}

    def beat(request: Any, user: str, body: Any) -> tuple[int, Any]:
        if isinstance(body, dict) and body.get("node"):
            leases.beat(str(body["node"]))
        return 200, {"status": "ok"}

    api.route("GET", "/v1-k3s/server-bootstrap", bootstrap)
    if not joining:  # a joined server forwards heartbeats to the datastore's server
        api.route("POST", "/v1-k3s/heartbeat", beat)
    api.start()
    bind = str(config.get("bind-address") or "0.0.0.0")
    log.info(f"Running kube-apiserver (stand-in) on https://{bind}:{port}")

    own = node.node_object(
        name,
        version,
        config,
        server=True,
        etcd=bool(config.get("cluster-init")) or joining or (db / "etcd").exists(),
    )
    client = KubeClient(
        upstream_url if joining else f"https://127.0.0.1:{port}",
        tls.server_ca.read_bytes(),
        "server",
        password,
    )
    for _attempt in range(30):
        try:
            node.register(client, own)
            break
        except (OSError, RuntimeError, ssl.SSLError) as error:
            log.info(f"Waiting to register node {name}: {error}")
            time.sleep(2)
    else:
        log.fatal(f"failed to register node {name}")
    stop = threading.Event()
    if not joining:
        manifests = server_dir / "manifests"
        manifests.mkdir(parents=True, exist_ok=True)
        threading.Thread(
            target=Deployer(store, manifests).run_forever,
            kwargs={"stop": stop},
            daemon=True,
            name="deploy",
        ).start()
        threading.Thread(
            target=node_lifecycle,
            args=(store, leases, stop, grace_period(config)),
            daemon=True,
            name="node-lifecycle",
        ).start()
        threading.Thread(
            target=podnet.allocate_pod_cidrs,
            args=(store, podnet.cluster_cidr(config), stop),
            daemon=True,
            name="node-ipam",
        ).start()
    if vpn_auth:  # flannel's backend is Tailscale with vpn-auth (pkg/executor/embed/embed.go)
        podnet.advertise_pod_cidr(client, name, podnet.cluster_cidr(config))
    log.info(f"k3s {version} is up and running")
    log.notify_ready()
    node.keep_alive(client, own)
    return 0
