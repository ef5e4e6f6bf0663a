"""``k3s agent``: join a cluster with the token, register the Node, play its kubelet with kwok.

Upstream (k3s-io/k3s v1.34.2+k3s1): ``pkg/cli/agent/agent.go`` ``Run`` ("--token is required",
"--server is required", flannel-iface's address as node-ip, then "Starting k3s agent <version>");
``pkg/clientaccess/token.go`` (the CA hash a K10 token pins is checked against ``/cacerts``:
"token CA hash does not match the Cluster CA certificate hash: X != Y").

DISAGREES with upstream, kept (too large to change here): real k3s does not exit on a bad token.
``pkg/agent/run.go`` ``createProxyAndValidateToken`` logs ``level=error msg="Failed to validate
connection to cluster at <url>: <error>"`` and retries every 2 s for ever. The stand-in ends the
process (exit 1, ``level=fatal``) so that the unit fails and the journal says why; the lab's
tests and the deploys' wrong-token checks rely on that failed start. The wording "token is not
valid" (a refused password) was not found in k3s v1.34.2+k3s1. An unreachable server is waited
for, as real agents do.

Example::

    k3s agent --server https://100.64.1.11:6443 --token-file /etc/rancher/k3s/token
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import kubelet, log, node, pki, vpn
from .controlplane import programs
from .kubeclient import KubeClient, trusted_cacerts
from .kubeconfig import write_kubeconfig
from .server import _read_token, data_dir


def run(config: dict[str, Any], version: str, commit: str = "") -> int:
    """Run the agent until killed."""
    binaries = programs()
    url = str(config.get("server") or "").rstrip("/")
    token = pki.parse_token(_read_token(config, "token", "token-file") or "")
    if not token.password:  # pkg/cli/agent/agent.go Run: the token is checked first
        log.fatal("--token is required")
    if not url:
        log.fatal("--server is required")
    # k3s v1.34.2+k3s1 pkg/cli/agent/agent.go `Run`: flannel-iface's address is resolved (when
    # node-ip is unset) BEFORE the VPN is started, so an interface the VPN brings up fails here.
    if config.get("flannel-iface") and not config.get("node-ip"):
        config = {**config, "node-ip": node.flannel_iface_ip(str(config["flannel-iface"]))}
    log.info(f"Starting k3s agent {version} ({commit})" if commit else
             f"Starting k3s agent {version}")
    vpn_auth = vpn.vpn_settings(config)
    if vpn_auth:
        config = vpn.with_vpn_node_ip(config, vpn.require_tailscale_up(vpn_auth))
    # The waiting line was not found verbatim in k3s v1.34.2+k3s1 (pkg/agent/run.go retries
    # with "Failed to validate connection to cluster at ..."); kept: only the waiting matters.
    # A CA mismatch is the error line of run.go createProxyAndValidateToken around token.go's
    # validateCAHash message (fatal here, see the module docstring).
    cacerts = trusted_cacerts(
        url, token.ca_hash, waiting="Waiting to retrieve agent configuration; server is not ready",
        pause=5, give_up=None,
        refused=f"Failed to validate connection to cluster at {url}")
    agent_dir = data_dir(config) / "agent"
    agent_dir.mkdir(parents=True, exist_ok=True)
    pki.write_private(agent_dir / "server-ca.crt", cacerts, 0o644)
    own = node.node_object(node.node_name(config), version, config, server=False)
    return _serve(config, version, binaries, url=url, cacerts=cacerts, password=token.password,
                  agent_dir=agent_dir, own=own)


def _serve(config: dict[str, Any], version: str, binaries: dict[str, Path], *, url: str,
          cacerts: bytes, password: str, agent_dir: Path, own: dict[str, Any]) -> int:
    """The agent: a node certificate from the server, its Node, kwok; returns when killed."""
    name = own["metadata"]["name"]
    token = KubeClient(url, cacerts, "node", password)
    code, body = token.request("GET", "/v1-k3s/client-kubelet.crt", timeout=30,
                               content_type="text/plain", headers={"k3s-Node-Name": name})
    if code == 401:  # a refused password: see the module docstring (wording not upstream's)
        log.fatal(f"Failed to validate connection to cluster at {url}: failed to get CA certs: "
                  f"{url}/cacerts: token is not valid: 401 Unauthorized")
    if code != 200 or not isinstance(body, str):
        log.fatal(f"failed to get client-kubelet.crt from {url}: {code} {body}")
    start = body.index("-----BEGIN PRIVATE KEY-----")
    cert_file, key_file = agent_dir / "client-kubelet.crt", agent_dir / "client-kubelet.key"
    pki.write_private(cert_file, body[:start].encode(), 0o644)
    pki.write_private(key_file, body[start:].encode())
    kubeconfig = agent_dir / "kubelet.kubeconfig"
    write_kubeconfig(kubeconfig, url, cacerts, cert_file.read_bytes(), key_file.read_bytes())
    client = KubeClient(url, cacerts, "", "", cert=(cert_file, key_file))
    log.info(f"k3s agent {version} is up and running")  # (the stand-in's own line)
    return kubelet.run_kubelet(config, binaries, client, own, kubeconfig,
                               agent_dir / "logs" / "kwok.log")
