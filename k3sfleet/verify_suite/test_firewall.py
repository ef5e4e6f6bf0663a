"""The ufw policy from deploys/firewall.py: default deny, SSH open, k3s ports only on tailscale0."""

from __future__ import annotations

import re
from typing import Any

K3S_PORTS = ("6443/tcp", "10250/tcp", "8472/udp", "2379:2380/tcp")


def ufw_status(host: Any) -> str:
    out = host.run("ufw status verbose")
    assert out.rc == 0, f"`ufw status` failed: {out.stderr.strip()}"
    return out.stdout  # type: ignore[no-any-return]


def allow_rules(status: str) -> list[str]:
    return [line.strip() for line in status.splitlines() if "ALLOW" in line]


def test_firewall_active_default_deny(node: Any, host: Any) -> None:
    status = ufw_status(host)
    assert "Status: active" in status, f"{node.name}: ufw is not active; run deploys/bootstrap.py"
    assert re.search(r"Default: deny \(incoming\)", status), (
        f"{node.name}: incoming traffic is not denied by default:\n{status}"
    )


def test_ssh_allowed(node: Any, host: Any) -> None:
    rules = allow_rules(ufw_status(host))
    assert any(re.match(r"^(22|22/tcp|OpenSSH)\s", r) for r in rules), (
        f"{node.name}: no ufw rule allows SSH (22/tcp); rules:\n" + "\n".join(rules)
    )


def test_k3s_ports_only_on_tailnet(node: Any, host: Any) -> None:
    rules = allow_rules(ufw_status(host))
    leaks = [
        r
        for r in rules
        if any(
            r.startswith(port.replace(":", ":") + " ") or r.split()[0] == port.split("/")[0]
            for port in K3S_PORTS
        )
        and " on tailscale0" not in r
    ]
    assert not leaks, (
        f"{node.name}: k3s ports are open beyond tailscale0 (they must be reachable only over the "
        "tailnet); offending ufw rules:\n  "
        + "\n  ".join(leaks)
        + "\nremove them (`ufw delete allow ...`) or re-run deploys/bootstrap.py"
    )
