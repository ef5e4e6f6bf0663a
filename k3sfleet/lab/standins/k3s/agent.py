"""``k3s agent``: join a cluster with the token, register the Node, keep it Ready.

A wrong token ends the process with k3s's messages (the CA hash pinned in a K10 token must match
the server's /cacerts; the password must be accepted), so the systemd unit fails and the journal
says why. An unreachable server is waited for, as real agents do.

Example::

    k3s agent --server https://100.64.1.11:6443 --token-file /etc/rancher/k3s/token
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
from typing import Any

from . import log, node, pki, podnet, realapi, vpn
from .kubeclient import KubeClient, fetch_cacerts
from .server import _read_token, data_dir


def run(config: dict[str, Any], version: str) -> int:
    url = str(config.get("server") or "").rstrip("/")
    if not url:
        log.fatal("--server is required")
    token = pki.parse_token(_read_token(config, "token", "token-file") or "")
    if not token.password:
        log.fatal("--token is required")
    # k3s v1.34.2+k3s1 pkg/cli/agent/agent.go `Run`: flannel-iface's address is resolved (when
    # node-ip is unset) BEFORE the VPN is started, so an interface the VPN brings up fails here.
    if config.get("flannel-iface") and not config.get("node-ip"):
        config = {**config, "node-ip": node.flannel_iface_ip(str(config["flannel-iface"]))}
    log.info(f"Starting k3s agent {version}")
    vpn_auth = vpn.vpn_settings(config)
    if vpn_auth:
        config = vpn.with_vpn_node_ip(config, vpn.require_tailscale_up(vpn_auth))
    while True:
        try:
            cacerts = fetch_cacerts(url)
            break
        except (urllib.error.URLError, OSError) as error:
            log.info(f"Waiting to retrieve agent configuration; server is not ready: {error}")
            time.sleep(5)
    ca_hash = hashlib.sha256(cacerts).hexdigest()
    if token.ca_hash and token.ca_hash != ca_hash:
        log.fatal(
            "failed to validate token: token CA hash does not match the Cluster CA "
            f"certificate hash: {token.ca_hash} != {ca_hash}"
        )
    binaries = realapi.real_api_binaries()
    if binaries is not None:  # the real control plane (issue 16)
        agent_dir = data_dir(config) / "agent"
        agent_dir.mkdir(parents=True, exist_ok=True)
        pki.write_private(agent_dir / "server-ca.crt", cacerts, 0o644)
        own = node.node_object(node.node_name(config), version, config, server=False)
        return realapi.agent(config, version, binaries, url=url, cacerts=cacerts,
                             password=token.password, agent_dir=agent_dir, own=own)
    client = KubeClient(url, cacerts, "node", token.password)
    code, _ = client.request("GET", "/api/v1/nodes?limit=1")
    if code == 401:
        log.fatal(f"failed to get CA certs: {url}/cacerts: token is not valid: 401 Unauthorized")
    agent_dir = data_dir(config) / "agent"
    agent_dir.mkdir(parents=True, exist_ok=True)
    pki.write_private(agent_dir / "server-ca.crt", cacerts, 0o644)
    own = node.node_object(node.node_name(config), version, config, server=False)
    for _attempt in range(30):
        try:
            node.register(client, own)
            break
        except (OSError, RuntimeError) as error:
            log.info(f"Waiting to register node: {error}")
            time.sleep(2)
    else:
        log.fatal("failed to register node")
    if vpn_auth:  # flannel's backend is Tailscale with vpn-auth (pkg/executor/embed/embed.go)
        podnet.advertise_pod_cidr(client, own["metadata"]["name"], podnet.cluster_cidr(config))
    log.info(f"k3s agent {version} is up and running")
    log.notify_ready()
    node.keep_alive(client, own)
    return 0
