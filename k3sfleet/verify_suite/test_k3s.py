"""K3s on each node: the right service at the right version, secrets files private, agents
pointed at the first server's tailnet address."""

from __future__ import annotations

from typing import Any

import yaml

CONFIG = "/etc/rancher/k3s/config.yaml"
SECRET_FILES = {
    "server": (
        CONFIG,
        "/var/lib/rancher/k3s/server/node-token",
        "/var/lib/rancher/k3s/server/token",
    ),
    "agent": (CONFIG,),
}


def service_name(node: Any) -> str:
    return "k3s" if node.role == "server" else "k3s-agent"


def test_service_active(node: Any, host: Any) -> None:
    svc = host.service(service_name(node))
    assert svc.is_running, (
        f"{node.name}: {service_name(node)} is not running; see "
        f"`journalctl -u {service_name(node)}` on the node, then re-run deploys/cluster.py"
    )
    assert svc.is_enabled, f"{node.name}: {service_name(node)} is not enabled at boot"


def test_version(node: Any, host: Any) -> None:
    want = node.data.get("k3s_version")
    out = host.run("/usr/local/bin/k3s --version")
    assert out.rc == 0, f"{node.name}: k3s is not installed ({out.stderr.strip()})"
    assert f"k3s version {want} " in out.stdout, (
        f"{node.name}: {out.stdout.splitlines()[0]!r}, the settings say {want}; "
        "run deploys/upgrade.py"
    )


def test_secret_files_private(node: Any, host: Any) -> None:
    problems = []
    for path in SECRET_FILES[node.role]:
        f = host.file(path)
        if not f.exists:
            problems.append(f"{path} is missing")
            continue
        if f.user != "root" or f.mode & 0o077:
            problems.append(f"{path} is {oct(f.mode)} {f.user}:{f.group}, must be 0600 root")
    assert not problems, f"{node.name}: " + "; ".join(problems)


def test_agent_points_at_server_tailnet(
    agent: Any, host: Any, first_server_tailnet_address: str | None
) -> None:
    assert first_server_tailnet_address, "the first server has no tailnet address"
    config = yaml.safe_load(host.file(CONFIG).content_string) or {}
    want = f"https://{first_server_tailnet_address}:6443"
    assert config.get("server") == want, (
        f"{agent.name}: k3s-agent joins {config.get('server')!r}, expected {want} "
        "(the first server's tailnet address); re-run deploys/cluster.py"
    )
