"""The pod network as the lab needs it: pod CIDRs for Nodes, flannel's Tailscale backend.

Real sources this imitates:

* k3s-io/k3s v1.34.2+k3s1 ``pkg/daemons/control/server.go``: kube-controller-manager runs with
  ``allocate-node-cidrs=true`` and ``cluster-cidr`` (default 10.42.0.0/16); its range allocator
  (the real one runs here, :mod:`.controlplane`) gives each Node one /24 in ``spec.podCIDR``.
* ``pkg/agent/flannel/setup.go``: flannel waits for the Node's podCIDR (``waitForPodCIDR``);
  with vpn-auth its backend is Tailscale, an "extension" backend whose PostStartupCommand is
  ``tailscale set --accept-routes --advertise-routes=$SUBNET[,<routes already advertised>]``
  (the routes already advertised come from ``tailscale debug prefs``, ``pkg/vpn/vpn.go``
  ``GetAdvertisedRoutes``).
* flannel-io/flannel v0.27.4 ``pkg/backend/extension/extension.go`` runs that command with
  ``sh -c`` and ``SUBNET=<the node's lease>``; ``pkg/subnet/subnet.go`` ``WriteSubnetFile``
  writes ``/run/flannel/subnet.env`` (FLANNEL_NETWORK, FLANNEL_SUBNET = first address of the
  lease, FLANNEL_MTU, FLANNEL_IPMASQ). The MTU 1280 (tailscale0's) and IPMASQ true are the
  stand-in's values, not read from flannel.
* The "flannel exited: ..." fatal lines follow K3s's flannel goroutine
  (pkg/agent/flannel/flannel.go), whose exact wording was not checked at the pinned tag.

Example::

    advertise_pod_cidr(client, "lab-agent-1", "10.42.0.0/16")   # "10.42.1.0/24"
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from . import log
from .kubeclient import KubeClient

CLUSTER_CIDR = "10.42.0.0/16"
SUBNET_FILE = Path("/run/flannel/subnet.env")


def cluster_cidr(config: dict[str, Any]) -> str:
    """``cluster-cidr`` from the k3s config (IPv4 only in the lab), else K3s's default."""
    return str(config.get("cluster-cidr") or CLUSTER_CIDR).split(",")[0]


def _advertised_routes() -> list[str]:
    """``tailscale debug prefs`` AdvertiseRoutes (as K3s's GetAdvertisedRoutes reads them)."""
    try:
        out = subprocess.run(["tailscale", "debug", "prefs"], capture_output=True, text=True,
                             timeout=15).stdout
        return [str(r) for r in json.loads(out or "{}").get("AdvertiseRoutes") or []]
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []


def advertise_pod_cidr(api: KubeClient, name: str, network: str, timeout: float = 120) -> str:
    """Wait for this Node's pod CIDR, write flannel's subnet file, advertise it on Tailscale.

    Returns the pod CIDR. Ends k3s (like flannel's failure does) when none comes or
    ``tailscale set`` fails.
    """
    deadline = time.monotonic() + timeout
    cidr = ""
    while not cidr:
        code, found = api.request("GET", f"/api/v1/nodes/{name}")
        if code == 200 and isinstance(found, dict):
            cidr = str((found.get("spec") or {}).get("podCIDR") or "")
        if not cidr:
            if time.monotonic() > deadline:
                log.fatal("flannel exited: failed to wait for PodCIDR assignment")
            time.sleep(1)
    log.info(f"Flannel found PodCIDR assigned for node {name}")
    subnet = ipaddress.ip_network(cidr)
    SUBNET_FILE.parent.mkdir(parents=True, exist_ok=True)
    SUBNET_FILE.write_text(
        f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={subnet.network_address + 1}/"
        f"{subnet.prefixlen}\nFLANNEL_MTU=1280\nFLANNEL_IPMASQ=true\n"
    )
    command = "tailscale set --accept-routes --advertise-routes=" + ",".join(
        ["$SUBNET", *_advertised_routes()]
    )
    done = subprocess.run(["sh", "-c", command], env={**os.environ, "SUBNET": cidr},
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        log.fatal(f"flannel exited: failed to run command: {command} Err: exit status "
                  f"{done.returncode} Output: {(done.stdout + done.stderr).strip()}")
    log.info(f"Ran command: {command}")
    return cidr
