"""A node's kubelet, played by kwok: register the Node, then keep it and its pods alive.

K3s runs a real kubelet inside ``k3s server``/``k3s agent``; the lab has no container runtime,
so kwok (``sigs.k8s.io/kwok``, built by k3sfleet.lab.controlplane) plays it for one node
(``--manage-single-node``): the Node's status and Lease, and simulated pods' lifecycle with the
project's own "fast" stages.

Example::

    run_kubelet(config, programs(), client, own, kubeconfig, logfile)   # until SIGTERM
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from . import log, node, podnet, vpn
from .kubeclient import KubeClient


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


def run_kubelet(config: dict[str, Any], binaries: dict[str, Path], client: KubeClient,
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


def bind_kwok_role(admin: KubeClient) -> None:
    for path, body in KWOK_RBAC:
        code, found = admin.request("POST", path, body)
        if code not in (201, 409):
            log.fatal(f"granting kwok its reads ({path}): {code} {found}")
