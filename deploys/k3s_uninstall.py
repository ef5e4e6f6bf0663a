"""K3s removed from a node, its data and network included (``k3s_absent``).

The entry file ``deploys/reset.py`` runs it once confirmed.

Destroys the cluster's data on the node (the etcd datastore, volumes under /var/lib/rancher).
Cleans the network as ``k3s-killall.sh`` does (k3s-io/k3s v1.34.2+k3s1 ``install.sh``
``create_killall``): the pods' veths on ``cni0`` and K3s's interfaces, the ``cni-*`` network
namespaces (unmounted, then deleted), ``/var/lib/cni``, K3s's iptables rules, and every subnet
route the node advertises on Tailscale (``tailscale set --advertise-routes=``): K3s's flannel
advertises the pod subnet plus whatever is advertised already (``pkg/agent/flannel/setup.go``),
so a route left behind would be advertised again by the next K3s on the node. Tailscale itself
stays up. A node without K3s is left alone, so a re-run changes nothing.

Example::

    k3s_absent(name="Uninstall K3s", state=host.get_fact(K3sState))
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from k3sfleet.facts.k3s import K3sState

PATHS = (
    "/usr/local/bin/k3s",
    "/etc/systemd/system/k3s.service",
    "/etc/systemd/system/k3s-agent.service",
    "/etc/rancher/k3s",
    "/var/lib/rancher/k3s",
    "/var/lib/kubelet",
    "/run/k3s",
    "/run/flannel",
    "/etc/modules-load.d/k3s.conf",
    "/var/lib/cni",
)
LINKS = ("cni0", "flannel.1", "flannel-v6.1", "flannel-wg", "flannel-wg-v6", "kube-ipvs0")

UNINSTALL_SCRIPT = "\n".join(
    [
        "set -u",
        'for svc in k3s k3s-agent; do systemctl disable --now "$svc" 2>/dev/null || true; done',
        # Containers K3s started keep running after the service stops: end them.
        # matched by the shim's path at the start of its argv, never this script's own text
        "for pid in $(pgrep -f '^/var/lib/rancher/k3s/data/[^ ]*/containerd-shim'); do",
        '  kill -9 "$pid" 2>/dev/null || true',
        "done",
        "for m in $(awk '$2 ~ \"^/(run/k3s|var/lib/rancher/k3s|var/lib/kubelet|run/netns/cni-)\" "
        "{print $2}' /proc/self/mounts | sort -r); do umount -l \"$m\" 2>/dev/null || true; done",
        # the pods' network namespaces, then the veths still enslaved to cni0
        "for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do",
        '  ip netns delete "$ns" 2>/dev/null || true',
        "done",
        "for i in $(ip -o link show master cni0 2>/dev/null | awk -F': ' '{print $2}'); do",
        '  ip link delete "${i%%@*}" 2>/dev/null || true',
        "done",
        f'for link in {" ".join(LINKS)}; do ip link delete "$link" 2>/dev/null || true; done',
        "if command -v tailscale >/dev/null; then tailscale set --advertise-routes= || true; fi",
        "if command -v iptables-save >/dev/null; then",
        "  for t in iptables ip6tables; do",
        "    $t-save 2>/dev/null | grep -v -E 'KUBE-|CNI-|FLANNEL|flannel' | $t-restore "
        "2>/dev/null || true",
        "  done",
        "fi",
        "rm -rf " + " ".join(PATHS),
        "systemctl daemon-reload",
    ]
)


@operation()
def k3s_absent(state: dict[str, Any] | None = None) -> Generator[StringCommand, None, None]:
    """K3s (binary, units, config, data, interfaces, iptables rules) removed from this node.

    + state: the node's ``K3sState`` if already read
    """
    now = state if state is not None else host.get_fact(K3sState)
    present = (
        now.get("version")
        or now.get("config_sha256")
        or now.get("datastore")
        or any(now.get("unit_sha256", {}).values())
    )
    if not present:
        host.noop("k3s is not installed")
        return
    yield StringCommand("sh", "-c", QuoteString(UNINSTALL_SCRIPT))

