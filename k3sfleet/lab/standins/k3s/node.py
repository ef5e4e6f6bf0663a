"""The Node object a k3s server or agent registers for its host, and keeping it current.

Upstream (k3s-io/k3s v1.34.2+k3s1; nearby revisions in the search index):

* ``pkg/agent/run.go`` ``configureNode``: node-label labels; annotations ``k3s.io/internal-ip``
  (node IPs joined by ``,``), ``k3s.io/hostname`` (``getHostname``: ``os.Hostname()``, or the
  node name when that fails or contains "localhost") and ``k3s.io/external-ip``.
* ``pkg/cloudprovider/instances.go`` (K3s's embedded cloud provider): ``InstanceMetadata``
  gives providerID ``k3s://<node name>`` and instance type ``k3s`` (the
  ``node.kubernetes.io/instance-type`` label); the Node's addresses are InternalIP (each
  internal-ip), ExternalIP (each external-ip) and Hostname (the ``k3s.io/hostname`` value).
* ``pkg/server/server.go`` ``setNodeLabelsAndAnnotations``: a server's Node gets
  ``node-role.kubernetes.io/control-plane=true`` and ``node-role.kubernetes.io/master=true``;
  ``pkg/etcd/etcd.go`` adds ``node-role.kubernetes.io/etcd=true`` on etcd members.
* The Ready condition's reasons are Kubernetes's (kubelet ``KubeletReady`` "kubelet is posting
  ready status"; node lifecycle controller ``NodeStatusUnknown`` "Kubelet stopped posting node
  status."). Capacity, nodeInfo's containerRuntimeVersion and the arch labels are the lab's
  own values (kwok reports the node afterwards).

Example::

    node = node_object("lab-agent-1", "v1.34.2+k3s1", {"node-ip": "100.64.1.12"}, server=False)
    register(api, node)                   # create, or patch labels + status of an existing Node
"""

from __future__ import annotations

import datetime
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from . import log
from .config import as_list
from .kubeclient import KubeClient

MERGE = "application/merge-patch+json"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hostname(name: str) -> str:
    """``k3s.io/hostname``: the host name, else the node name (pkg/agent/run.go getHostname)."""
    try:
        host = socket.gethostname()
    except OSError:
        host = ""
    return name if not host or "localhost" in host else host


def interface_ipv4(interface: str) -> str | None:
    """The first IPv4 address of ``interface`` (``ip -4 -o addr show``), or None."""
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", interface],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


def flannel_iface_ip(interface: str) -> str:
    """The node IP k3s takes from ``flannel-iface`` when ``node-ip`` is unset, or a fatal error.

    As k3s v1.34.2+k3s1 ``pkg/util/net.go`` ``GetIPFromInterface``: the interface must exist and
    be up and have exactly one global unicast IPv4 (the stand-in knows no IPv6 here); otherwise
    ``interface X does not have a correct global unicast ip: <why>``.
    """
    try:
        link = subprocess.run(
            ["ip", "-o", "link", "show", "dev", interface],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        link = None
    prefix = f"interface {interface} does not have a correct global unicast ip"
    if link is None or link.returncode != 0:
        log.fatal(f"{prefix}: route ip+net: no such network interface")
    flags = link.stdout.split("<", 1)[-1].split(">", 1)[0].split(",")
    if "UP" not in flags:
        log.fatal(f"{prefix}: the interface {interface} is not up")
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", interface, "scope", "global"],
            capture_output=True, text=True, timeout=5,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found = [
        line.split()[line.split().index("inet") + 1].split("/")[0]
        for line in out.splitlines()
        if "inet" in line.split()
    ]
    if len(found) > 1:
        log.fatal(
            f"{prefix}: multiple global unicast addresses defined for {interface}, "
            f"please set ip from one of {found}"
        )
    if not found:
        log.fatal(f"{prefix}: can't find ip for interface {interface}")
    log.info(f"Found ip {found[0]} from iface {interface}")
    return found[0]


def node_name(config: dict[str, Any]) -> str:
    return str(config.get("node-name") or socket.gethostname())


def node_addresses(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(internal, external) IPs: node-ip (else eth0's address) and node-external-ip.

    Without node-ip real k3s takes the address of the default route's interface
    (pkg/util ``GetHostnameAndIPs``, apimachinery ``ChooseHostInterface``); the lab's hosts
    route by eth0, so the stand-in reads eth0."""
    internal = as_list(config.get("node-ip")) or [ip for ip in [interface_ipv4("eth0")] if ip]
    return internal or ["127.0.0.1"], as_list(config.get("node-external-ip"))


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"


def _taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` or ``key:Effect`` -> a taint (kubelet ``--register-with-taints``
    syntax, which K3s passes node-taint to; the NoSchedule default for a missing effect is the
    stand-in's, the kubelet refuses such a taint)."""
    key_value, _, effect = text.partition(":")
    key, _, value = key_value.partition("=")
    taint = {"key": key, "effect": effect or "NoSchedule"}
    if value:
        taint["value"] = value
    return taint


def ready_condition(status: str = "True") -> dict[str, str]:
    reason, message = (
        ("KubeletReady", "kubelet is posting ready status")
        if status == "True"
        else ("NodeStatusUnknown", "Kubelet stopped posting node status.")
    )
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": _now(),
        "lastTransitionTime": _now(),
    }


def node_object(
    name: str, version: str, config: dict[str, Any], *, server: bool, etcd: bool = False
) -> dict[str, Any]:
    """The Node as k3s registers it (labels, taints, addresses, nodeInfo, Ready)."""
    internal, external = node_addresses(config)
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
    }
    if server:
        labels["node-role.kubernetes.io/control-plane"] = "true"
        labels["node-role.kubernetes.io/master"] = "true"
    if etcd:
        labels["node-role.kubernetes.io/etcd"] = "true"
    for entry in as_list(config.get("node-label")):
        key, _, value = entry.partition("=")
        labels[key] = value
    addresses = [{"type": "InternalIP", "address": ip} for ip in internal]
    addresses += [{"type": "ExternalIP", "address": ip} for ip in external]
    host = hostname(name)
    addresses.append({"type": "Hostname", "address": host})
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine_id = ""
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "k3s.io/internal-ip": ",".join(internal),
                "k3s.io/hostname": host,
                **({"k3s.io/external-ip": ",".join(external)} if external else {}),
            },
        },
        "spec": {"providerID": f"k3s://{name}"},
        "status": {
            "conditions": [ready_condition()],
            "addresses": addresses,
            "nodeInfo": {
                "kubeletVersion": version,
                "kubeProxyVersion": version,
                "containerRuntimeVersion": "containerd://2.1.5-k3s1",
                "osImage": _os_image(),
                "kernelVersion": platform.release(),
                "operatingSystem": "linux",
                "architecture": "amd64",
                "machineID": machine_id,
                "systemUUID": machine_id,
                "bootID": "",
            },
            "capacity": {"cpu": "2", "memory": "2Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "2Gi", "pods": "110"},
        },
    }
    taints = [_taint(t) for t in as_list(config.get("node-taint"))]
    if taints:
        node["spec"]["taints"] = taints
    return node


def register(api: KubeClient, node: dict[str, Any]) -> None:
    """Create the Node, or update an existing one's labels, annotations and status.

    Like the kubelet (and K3s's ``configureNode`` patch), an existing Node keeps what others set
    on it (a cordon, extra labels).
    """
    name = node["metadata"]["name"]
    code, found = api.request("GET", f"/api/v1/nodes/{name}")
    if code == 404:
        body = {k: v for k, v in node.items() if k != "status"}
        code, found = api.request("POST", "/api/v1/nodes", body)
        if code not in (201, 409):
            raise RuntimeError(f"registering node {name}: {code} {found}")
    elif code != 200:
        raise RuntimeError(f"reading node {name}: {code} {found}")
    else:
        meta = {
            "metadata": {
                "labels": node["metadata"]["labels"],
                "annotations": node["metadata"]["annotations"],
            }
        }
        api.request("PATCH", f"/api/v1/nodes/{name}", meta, MERGE)
    code, found = api.request(
        "PATCH", f"/api/v1/nodes/{name}/status", {"status": node["status"]}, MERGE
    )
    if code != 200:
        raise RuntimeError(f"updating node status {name}: {code} {found}")
    log.info(
        f"Node {name} registered (kubeletVersion {node['status']['nodeInfo']['kubeletVersion']})"
    )
