"""``k3s server``/``k3s agent`` on the real Kubernetes control plane (issue 16).

Chosen per host by the lab: the marker ``/etc/k3sfleet-lab/real-api`` (its text, when not
empty, is the directory of the built programs, else ``/opt/k3sfleet-standin/go``), or
``K3SFLEET_LAB_REAL_API=<directory>`` in the environment (tests on the machine). The
directory holds ``kube/``, ``kine/`` and ``kwok/`` as the lab binds them.

Server: kine + kube-apiserver (127.0.0.1, https-listen-port + 1, K3s's 6444) +
kube-controller-manager + kube-scheduler (:class:`.controlplane.ControlPlane`), K3s's 6443
before them (:class:`.front.Front`), its own Node registered with the admin certificate (so the
``node-role.kubernetes.io/*`` labels that NodeRestriction keeps from kubelets are set, as K3s's
server sets them) and kept Ready by kwok as ``system:node:<name>``.

Agent: takes ``system:node:<name>`` from ``/v1-k3s/client-kubelet.crt`` with its token,
registers its Node with it (kubeletVersion = the running K3s version, patched on an upgrade)
and runs kwok (``--manage-single-node``) for status, Lease and simulated pods.

Example::

    binaries = real_api_binaries()        # None: the stand-in's own API
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from . import addons, log, node, pki, podnet, vpn
from .config import as_list
from .controlplane import ControlPlane
from .front import Front
from .kubeclient import KubeClient
from .kubeconfig import write_kubeconfig

MARKER = Path("/etc/k3sfleet-lab/real-api")
HOST_DIR = Path("/opt/k3sfleet-standin/go")
PROGRAM_DIRS = {"kube-apiserver": "kube", "kube-controller-manager": "kube",
                "kube-scheduler": "kube", "kine": "kine", "kwok": "kwok"}


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


def real_api_binaries() -> dict[str, Path] | None:
    """Each program's path when this host runs the real API, else None.

    The default wherever the lab bound the built programs (``/opt/k3sfleet-standin/go``);
    ``K3SFLEET_LAB_REAL_API=<directory>`` or the marker's text (a directory) names another
    place, the marker's text ``standin`` keeps the stand-in's own API.
    """
    chosen = os.environ.get("K3SFLEET_LAB_REAL_API")
    if chosen is None and MARKER.exists():
        chosen = MARKER.read_text().strip() or str(HOST_DIR)
    if chosen is None and (HOST_DIR / "kube").is_dir():
        chosen = str(HOST_DIR)
    if not chosen or chosen == "standin":
        return None
    return {program: Path(chosen) / d / program for program, d in PROGRAM_DIRS.items()}


def _kwok(binaries: dict[str, Path], kubeconfig: Path, name: str, ip: str,
          logfile: Path) -> subprocess.Popen[bytes]:
    stages = sorted((binaries["kwok"].parent / "kustomize").rglob("*.yaml"))
    argv = [str(binaries["kwok"]), f"--kubeconfig={kubeconfig}", f"--manage-single-node={name}",
            # kubelet's default lease; kwok keeps none without it (sigs.k8s.io/kwok
            # pkg/kwok/controllers/controller.go, v0.8.0)
            "--node-lease-duration-seconds=40", f"--node-ip={ip}",
            *(f"--config={stage}" for stage in stages)]
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                stdin=subprocess.DEVNULL)


def _run_kubelet(config: dict[str, Any], binaries: dict[str, Path], client: KubeClient,
                 own: dict[str, Any], kubeconfig: Path, logfile: Path) -> int:
    """Register the Node, then play its kubelet with kwok until SIGTERM."""
    name = own["metadata"]["name"]
    for _attempt in range(60):
        try:
            node.register(client, own)
            break
        except (OSError, RuntimeError) as error:
            log.info(f"Waiting to register node {name}: {error}")
            time.sleep(2)
    else:
        log.fatal(f"failed to register node {name}")
    if vpn.vpn_settings(config):  # flannel's Tailscale backend (pod CIDR from the real IPAM)
        podnet.advertise_pod_cidr(client, name, podnet.cluster_cidr(config))
    internal, _ = node.node_addresses({"node-ip": own["metadata"]["annotations"]
                                       ["k3s.io/internal-ip"]})
    kwok = _kwok(binaries, kubeconfig, name, internal[0] if internal else "127.0.0.1", logfile)
    signal.signal(signal.SIGTERM, lambda *_: kwok.terminate())
    log.notify_ready()
    return kwok.wait()


# kwok reads more than a kubelet may: its start-up check lists every Node
# (sigs.k8s.io/kwok pkg/kwok/cmd/root.go ``waitForReady``, v0.8.0), it lists pods, and its
# lease controller watches Leases to know it holds its node's (node_lease_controller.go; it
# plays no pod of a node whose Lease it does not see held). The Node authorizer refuses those
# reads ("cannot read all nodes, only its own Node object"; "can only get, create, update,
# patch, or delete a node lease"). Kubernetes's own ``system:node`` ClusterRole grants the
# first two and a Role in kube-node-lease the third, bound to ``system:nodes``: the
# stand-in's one deviation for kwok. Writes stay under NodeRestriction.
_RBAC = "/apis/rbac.authorization.k8s.io/v1"
_NODES = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]
KWOK_RBAC: tuple[tuple[str, dict[str, Any]], ...] = (
    (f"{_RBAC}/clusterrolebindings", {
        "metadata": {"name": "k3sfleet-lab:kwok-nodes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:node"},
        "subjects": _NODES}),
    (f"{_RBAC}/namespaces/kube-node-lease/roles", {
        "metadata": {"name": "k3sfleet-lab:kwok-leases"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "list", "watch"]}]}),
    (f"{_RBAC}/namespaces/kube-node-lease/rolebindings", {
        "metadata": {"name": "k3sfleet-lab:kwok-leases"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "k3sfleet-lab:kwok-leases"},
        "subjects": _NODES}),
)


def _bind_kwok_role(admin: KubeClient) -> None:
    for path, body in KWOK_RBAC:
        code, found = admin.request("POST", path, body)
        if code not in (201, 409):
            log.fatal(f"granting kwok its reads ({path}): {code} {found}")


# Embedded etcd's client port, where a server started with cluster-init serves its kine to
# the servers that join it (K3s: 2379 on the node IP, pkg/etcd/etcd.go; here plain HTTP, the
# lab's firewall rules for 2379:2380 between servers still apply).
DATASTORE_PORT = 2379


def datastore_of(server_url: str) -> str:
    """The shared datastore of the server a joining server names in ``server:``."""
    host = urllib.parse.urlparse(server_url).hostname or ""
    return f"http://{host}:{DATASTORE_PORT}"


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
        kubelet = server_dir.parent / "agent" / "kubelet.kubeconfig"
        write_kubeconfig(kubelet, f"https://127.0.0.1:{port}", tls.server_ca.read_bytes(), *cert)
        # K3s's supervisor talks to its kube-apiserver directly (the loopback kubeconfig, 6444)
        supervisor = KubeClient(plane.url, tls.server_ca.read_bytes(), "", "",
                                cert=(tls.directory / "client-supervisor.crt",
                                      tls.directory / "client-supervisor.key"))
        _bind_kwok_role(supervisor)
        api = addons.Api(supervisor)
        log.info(f"Applied CRDs: {', '.join(addons.apply_crds(api, crd_files(binaries)))}")
        # 6443 opens once the CRDs are Established: whoever reaches the API finds the kinds
        # (the lab's stand-in for charts that would have installed Argo CD's and Velero's)
        roles = {password: role.removeprefix("system:") for password, role in passwords.items()}
        front = Front(tls, (bind, port), ("127.0.0.1", port + 1), passwords=roles)
        front.start()
        log.info(f"Running kube-apiserver {version} on https://127.0.0.1:{port + 1}, "
                 f"supervisor on https://{bind}:{port}")
        manifests = server_dir / "manifests"
        manifests.mkdir(parents=True, exist_ok=True)
        threading.Thread(target=addons.Deployer(api, manifests).run_forever, args=(stop,),
                         daemon=True, name="deploy").start()
        log.info(f"k3s {version} is up and running")
        return _run_kubelet(config, binaries, supervisor, own, kubelet,
                            server_dir / "logs" / "kwok.log")
    finally:
        stop.set()
        if front is not None:
            front.stop()
        plane.stop()


def _exit_on_signal(*_: object) -> None:
    raise SystemExit(0)


def agent(config: dict[str, Any], version: str, binaries: dict[str, Path], *, url: str,
          cacerts: bytes, password: str, agent_dir: Path, own: dict[str, Any]) -> int:
    """The agent: a node certificate from the server, its Node, kwok; returns when killed."""
    name = own["metadata"]["name"]
    token = KubeClient(url, cacerts, "node", password)
    code, body = token.request("GET", "/v1-k3s/client-kubelet.crt", timeout=30,
                               content_type="text/plain", headers={"k3s-Node-Name": name})
    if code == 401:  # the stand-in agent's message for a token the server refuses (agent.py)
        log.fatal(f"failed to get CA certs: {url}/cacerts: token is not valid: 401 Unauthorized")
    if code != 200 or not isinstance(body, str):
        log.fatal(f"failed to get client-kubelet.crt from {url}: {code} {body}")
    start = body.index("-----BEGIN PRIVATE KEY-----")
    cert_file, key_file = agent_dir / "client-kubelet.crt", agent_dir / "client-kubelet.key"
    pki.write_private(cert_file, body[:start].encode(), 0o644)
    pki.write_private(key_file, body[start:].encode())
    kubeconfig = agent_dir / "kubelet.kubeconfig"
    write_kubeconfig(kubeconfig, url, cacerts, cert_file.read_bytes(), key_file.read_bytes())
    client = KubeClient(url, cacerts, "", "", cert=(cert_file, key_file))
    log.info(f"k3s agent {version} is up and running")
    return _run_kubelet(config, binaries, client, own, kubeconfig, agent_dir / "logs" / "kwok.log")
