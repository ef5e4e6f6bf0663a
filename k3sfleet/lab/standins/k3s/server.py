"""``k3s server``: K3s's server on the real Kubernetes control plane.

kine + kube-apiserver (127.0.0.1, https-listen-port + 1, K3s's 6444) + kube-controller-manager
+ kube-scheduler (:class:`.controlplane.ControlPlane`), K3s's supervisor port before them
(:class:`.front.Front`), the CRDs and the manifests directory (:mod:`.addons`), and the server's
own Node, registered with the supervisor certificate (so the ``node-role.kubernetes.io/*``
labels that NodeRestriction keeps from kubelets are set, as K3s's server sets them) and kept
Ready by kwok as ``system:node:<name>`` (:mod:`.kubelet`).

A first server keeps the cluster in its kine (``server/db/state.db``; ``cluster-init: true``
also creates ``server/db/etcd/``, like embedded etcd, and serves kine to joining servers). A
joining server (``server: https://X:6443`` + token) checks the token against X, takes the
cluster CAs and service-account key from X (as real k3s takes its bootstrap data) and runs its
own components against X's kine.

Example (inside a lab host, via the systemd unit the deploys write)::

    k3s server --cluster-init --node-ip 10.123.1.11 --tls-san 100.64.1.11
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import socket
import threading
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

from . import addons, kubelet, log, node, pki, vpn
from .config import as_list
from .controlplane import ControlPlane, programs
from .front import Front
from .kubeclient import KubeClient, trusted_cacerts
from .kubeconfig import write_kubeconfig


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

    Like real k3s, a datastore made with one token refuses another: k3s-io/k3s v1.34.2+k3s1
    pkg/cluster/storage.go ``getBootstrapKeyFromStorage`` ("bootstrap data already found and
    encrypted with different token"; real k3s wraps it in the start-up error chain, e.g.
    "preparing server: ...", which the stand-in does not). The stand-in compares with
    server/token where k3s finds no bootstrap key made from the new token in the datastore.
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
    """The serving certificate's names: K3s's fixed SANs (localhost, 127.0.0.1, the
    ``kubernetes.default...`` names, the first service IP 10.43.0.1 of the default
    service-cidr), the host name, node IPs and ``tls-san`` (k3s-io/k3s pkg/daemons/control/
    deps/deps.go; K3s's supervisor adds more as it is reached, the stand-in does not)."""
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


def join(config: dict[str, Any], password: str, tls_dir: Path) -> tuple[pki.ClusterTLS, str]:
    """Check the token against the server we join and take the cluster CAs from it.

    k3s-io/k3s v1.34.2+k3s1 pkg/cluster/bootstrap.go (the joining server validates the token
    with pkg/clientaccess ``ParseAndValidateToken``, then GETs ``/v1-k3s/server-bootstrap``
    as user ``server``). The messages below carry the upstream core ("failed to validate
    token", "token CA hash does not match the Cluster CA certificate hash: X != Y", "failed
    to get CA certs") without the whole wrapping chain real k3s prints ("preparing server:
    failed to bootstrap cluster data: ..."); "--token is required when joining" and the
    401 wording "token is not valid" were not found at the pinned tag.
    """
    url = str(config["server"]).rstrip("/")
    token = pki.parse_token(_read_token(config, "token", "token-file") or "")
    if not token.password:
        log.fatal("--token is required when joining a cluster (--server is set)")
    cacerts = trusted_cacerts(
        url, token.ca_hash, waiting=f"Waiting to retrieve cluster bootstrap data from {url}",
        pause=2, give_up=(60, f"failed to get CA certs from {url}: server not reachable"),
        refused="failed to validate token")
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


def crd_files(binaries: dict[str, Path]) -> list[Path]:
    """The CRD manifests bound beside the programs (``crds-*/``), K3s's own first."""
    base = binaries["kine"].parent.parent
    order = ("crds-k3s", "crds-helm")
    return sorted(base.glob("crds-*/**/*.yaml"),
                  key=lambda p: (order.index(p.relative_to(base).parts[0])
                                 if p.relative_to(base).parts[0] in order else len(order), p))


def component_args(config: dict[str, Any]) -> dict[str, list[str]]:
    """``kube-apiserver-arg`` & co. as K3s passes them on: ``--`` + each ``key=value``."""
    return {program: [f"--{arg.lstrip('-')}" for arg in as_list(config.get(f"{program}-arg"))]
            for program in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")}


# Embedded etcd's client port, where a server started with cluster-init serves its kine to
# the servers that join it (K3s: 2379 on the node IP, pkg/etcd/etcd.go; here plain HTTP, the
# lab's firewall rules for 2379:2380 between servers still apply).
DATASTORE_PORT = 2379


def datastore_of(server_url: str) -> str:
    """The shared datastore of the server a joining server names in ``server:``."""
    host = urllib.parse.urlparse(server_url).hostname or ""
    return f"http://{host}:{DATASTORE_PORT}"


def _bootstrap(config: dict[str, Any], server_dir: Path,
               password: str) -> tuple[pki.ClusterTLS, str | None]:
    """The cluster CAs, and the URL of the server this one follows (None for a first server).

    A server whose etcd is initialized starts from its own data whatever server: says
    (k3s-io/k3s pkg/cluster/bootstrap.go shouldBootstrapLoad: "Managed etcd cluster bootstrap
    already complete and initialized"; pkg/etcd/etcd.go Start: "Starting etcd for existing
    cluster member"). Here a member that joined keeps following its cluster's first server
    (db/joined.json); a server made the only member by --cluster-reset no longer does.
    """
    db = server_dir / "db"
    initialized = (db / "etcd").is_dir()
    joining = bool(config.get("server")) and (not initialized or (db / "joined.json").exists())
    db.mkdir(parents=True, exist_ok=True, mode=0o700)
    db.chmod(0o700)
    if joining:
        tls, upstream_url = join(config, password, server_dir / "tls")
        (db / "etcd").mkdir(exist_ok=True, mode=0o700)
        pki.write_private(db / "joined.json", json.dumps({"server": upstream_url}).encode())
        return tls, upstream_url
    if config.get("cluster-init"):
        (db / "etcd").mkdir(parents=True, exist_ok=True, mode=0o700)
    return pki.ensure_ca(server_dir / "tls"), None


def _link(link: Path, target: str) -> None:
    """``link`` -> ``target`` (relative to the link's directory), replacing what was there
    (K3s links the absolute path; a relative link resolves to the same file)."""
    if link.is_symlink() and str(link.readlink()) == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def _write_tokens(config: dict[str, Any], server_dir: Path, tls: pki.ClusterTLS,
                  password: str) -> dict[str, str]:
    """server/token, server/node-token and server/agent-token: password -> the user it proves.

    As k3s-io/k3s v1.34.2+k3s1 pkg/server/server.go ``printTokens``: ``token`` is the file
    (handlers ``WriteToken``, K10 form, 0600); ``node-token`` is a symlink to it ("backwards
    compatibility"); ``agent-token`` is a file of its own when ``agent-token`` is configured,
    else a symlink to ``token``.
    """
    token = pki.format_token(tls.ca_hash, password)
    pki.write_private(server_dir / "token", (token + "\n").encode())
    _link(server_dir / "node-token", "token")
    passwords = {password: "system:k3s:server"}
    agent_token = _read_token(config, "agent-token", "agent-token-file")
    if agent_token:
        agent_password = pki.parse_token(agent_token).password
        passwords[agent_password] = "system:k3s:agent"
        agent_file = server_dir / "agent-token"
        if agent_file.is_symlink():
            agent_file.unlink()
        pki.write_private(
            agent_file,
            (pki.format_token(tls.ca_hash, agent_password, "node") + "\n").encode(),
        )
    else:
        _link(server_dir / "agent-token", "token")
    return passwords


def kubeconfig_server(config: dict[str, Any], port: int) -> str:
    """The ``server:`` of k3s.yaml: ``https://<bind-address or loopback>:<https-listen-port>``
    (pkg/server/server.go ``writeKubeConfig``: ``BindAddressOrLoopback(false, true)``)."""
    bind = str(config.get("bind-address") or "")
    host = bind if bind and bind not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def run(config: dict[str, Any], version: str) -> int:
    """Run the server until killed."""
    binaries = programs()
    server_dir = data_dir(config) / "server"
    # k3s v1.34.2+k3s1 pkg/cli/server/server.go `run`: the VPN is started first, then
    # flannel-iface's address becomes node-ip (when unset); the VPN address then overrides the
    # node IP (pkg/executor/embed/embed.go).
    vpn_auth = vpn.vpn_settings(config)
    vpn_ip = vpn.require_tailscale_up(vpn_auth) if vpn_auth else None
    if config.get("flannel-iface") and not config.get("node-ip"):
        config = {**config, "node-ip": node.flannel_iface_ip(str(config["flannel-iface"]))}
    if vpn_ip:
        config = vpn.with_vpn_node_ip(config, vpn_ip)
    internal, external = node.node_addresses(config)
    password = server_password(config, server_dir)
    tls, upstream_url = _bootstrap(config, server_dir, password)
    passwords = _write_tokens(config, server_dir, tls, password)
    admin = pki.ensure_client(tls, "client-admin", "system:admin", "system:masters")
    port = int(config.get("https-listen-port") or 6443)
    # pkg/server/server.go writeKubeConfig: /etc/rancher/k3s/k3s.yaml (datadir.GlobalConfig) or
    # write-kubeconfig, mode write-kubeconfig-mode else 0600, admin client cert system:admin
    kubeconfig = Path(str(config.get("write-kubeconfig") or "/etc/rancher/k3s/k3s.yaml"))
    mode = int(str(config.get("write-kubeconfig-mode") or "600"), 8)
    write_kubeconfig(
        kubeconfig, kubeconfig_server(config, port), tls.server_ca.read_bytes(), *admin,
        mode=mode,
    )
    own = node.node_object(node.node_name(config), version, config, server=True,
                           etcd=(server_dir / "db" / "etcd").exists())
    return serve(config, version, binaries, server_dir=server_dir, tls=tls,
                 names=serving_names(config, internal, external), port=port,
                 passwords=passwords, own=own,
                 datastore=datastore_of(upstream_url) if upstream_url else None,
                 shared=(server_dir / "db" / "etcd").is_dir())


def serve(config: dict[str, Any], version: str, binaries: dict[str, Path], *,
          server_dir: Path, tls: pki.ClusterTLS, names: list[str], port: int,
          passwords: dict[str, str], own: dict[str, Any], datastore: str | None = None,
          shared: bool = False) -> int:
    """The server on the real control plane; returns when killed.

    A first server keeps the cluster in its kine (SQLite, server/db/state.db), served on
    :data:`DATASTORE_PORT` to other servers when ``shared`` (cluster-init). A joined server
    (``datastore``: the first server's) runs its own kube-apiserver against it, and its own
    kube-controller-manager and kube-scheduler, which elect one leader among the servers by
    their Leases (their default ``--leader-elect``): K3s's HA topology with an external
    datastore (``--datastore-endpoint``), the datastore being the first server's.
    """
    bind = str(config.get("bind-address") or "0.0.0.0")
    internal, _ = node.node_addresses(config)
    listen = bind if bind not in ("0.0.0.0", "::") else "0.0.0.0"
    plane = ControlPlane(binaries, server_dir, bind_address="127.0.0.1", port=port + 1,
                         server_names=tuple(names),
                         advertise_address=internal[0] if internal else None,
                         extra_args=component_args(config), datastore=datastore,
                         kine_listen=(f"{listen}:{DATASTORE_PORT}"
                                      if shared and not datastore else None))
    # until kwok runs, SIGTERM ends start-up through the finally below (the components run in
    # sessions of their own: a plain SIGTERM death would leave them running)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    stop = threading.Event()
    front: Front | None = None
    try:
        plane.start()
        name = own["metadata"]["name"]
        cert = pki.issue(*tls.pair("client-ca"), f"system:node:{name}",
                         organization="system:nodes", client=True)
        tls.store_pair("client-kubelet", *cert)
        kubelet_config = server_dir.parent / "agent" / "kubelet.kubeconfig"
        write_kubeconfig(kubelet_config, f"https://127.0.0.1:{port}", tls.server_ca.read_bytes(),
                         *cert)
        # K3s's supervisor talks to its kube-apiserver directly (the loopback kubeconfig, 6444)
        supervisor = KubeClient(plane.url, tls.server_ca.read_bytes(), "", "",
                                cert=(tls.directory / "client-supervisor.crt",
                                      tls.directory / "client-supervisor.key"))
        kubelet.bind_kwok_role(supervisor)
        api = addons.Api(supervisor)
        log.info(f"Applied CRDs: {', '.join(addons.apply_crds(api, crd_files(binaries)))}")
        # 6443 opens once the CRDs are Established: whoever reaches the API finds the kinds
        # (the lab's stand-in for charts that would have installed Argo CD's and Velero's)
        roles = {password: role.removeprefix("system:") for password, role in passwords.items()}
        front = Front(tls, (bind, port), ("127.0.0.1", port + 1), passwords=roles)
        front.start()
        # (the stand-in's own summary; K3s logs "Running kube-apiserver <its arguments>")
        log.info(f"Running kube-apiserver {version} on https://127.0.0.1:{port + 1}, "
                 f"supervisor on https://{bind}:{port}")
        manifests = server_dir / "manifests"
        manifests.mkdir(parents=True, exist_ok=True)
        threading.Thread(target=addons.Deployer(api, manifests).run_forever, args=(stop,),
                         daemon=True, name="deploy").start()
        log.info("k3s is up and running")  # pkg/cli/server/server.go run
        return kubelet.run_kubelet(config, binaries, supervisor, own, kubelet_config,
                            server_dir / "logs" / "kwok.log")
    finally:
        stop.set()
        if front is not None:
            front.stop()
        plane.stop()


def _exit_on_signal(*_: object) -> None:
    raise SystemExit(0)
