"""``TAILSCALE_UP_BY=k3s`` on real Debian hosts (the lab, stand-in k3s and Tailscale): bootstrap
leaves Tailscale logged out, and ``deploys/cluster.py`` brings every node onto the tailnet
through k3s's own vpn-auth ``tailscale up``.

The stand-in k3s follows the real order (k3s v1.34.2+k3s1): an agent resolves ``flannel-iface``
before it starts the VPN (``pkg/cli/agent/agent.go``), so an agent config with
``flannel-iface: tailscale0`` fails there while Tailscale is down; k3s's ``tailscale up --reset``
passes only vpn-auth ``extraArgs`` (``pkg/vpn/vpn.go``), so the hostname and tags must be there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.lab

CONFIG = "/etc/rancher/k3s/config.yaml"
DATA = {"tailscale_up_by": "k3s", "tailscale_tags": "tag:k3s"}


def sudo(lab: Any, host: Any, command: str) -> tuple[int, str]:
    rc, out, _ = lab.ssh(host, "sudo sh -c " + "'" + command.replace("'", "'\"'\"'") + "'")
    return rc, str(out)


def ts_status(lab: Any, host: Any) -> dict[str, Any]:
    rc, out = sudo(lab, host, "tailscale status --json")
    return json.loads(out) if rc == 0 and out.strip() else {}  # type: ignore[no-any-return]


def started_at(lab: Any) -> dict[str, str]:
    unit = {"server": "k3s", "agent": "k3s-agent"}
    return {
        h.name: sudo(lab, h, f"systemctl show -p ActiveEnterTimestampMonotonic {unit[h.role]}")[1]
        for h in lab.hosts
    }


def test_agents_join_when_k3s_brings_tailscale_up(
    lab_factory: Callable[..., Any],
    run_pyinfra: Callable[..., Any],
    pyinfra_counts: Callable[[str], dict[str, int]],
) -> None:
    lab = lab_factory(servers=1, agents=1)
    boot = run_pyinfra(lab, "deploys/bootstrap.py", data=DATA)
    assert boot.returncode == 0, boot.stdout[-4000:]
    for host in lab.hosts:  # nobody ran `tailscale up`: the nodes are off the tailnet
        assert ts_status(lab, host).get("BackendState") != "Running", host.name

    first = run_pyinfra(lab, "deploys/cluster.py", data=DATA)
    assert first.returncode == 0, first.stdout[-4000:]
    server = lab.servers[0]
    nodes = {w["name"] for w in lab.api_writes(server) if w["kind"] == "Node"}
    assert {h.name for h in lab.hosts} <= nodes
    for host in lab.hosts:
        status = ts_status(lab, host)
        assert status.get("BackendState") == "Running", host.name
        # k3s's `tailscale up --reset` kept our hostname and tags (vpn-auth extraArgs)
        assert status["Self"]["HostName"] == host.name
        assert status["Self"].get("Tags") == ["tag:k3s"], status["Self"]
    agent = lab.agents[0]
    config = yaml.safe_load(sudo(lab, agent, f"cat {CONFIG}")[1])
    assert "flannel-iface" not in config  # k3s would resolve it before its own `tailscale up`
    # the real tailscaled's prefs carry what k3s's `tailscale up --reset` passed, and the login
    # server came from the host's system policy (no lab-only vpn-auth key)
    prefs = json.loads(sudo(lab, agent, "tailscale debug prefs")[1])
    assert (prefs["Hostname"], prefs["AdvertiseTags"], prefs["RouteAll"]) == (
        agent.name, ["tag:k3s"], True), prefs
    assert prefs["ControlURL"] == lab.control_url
    assert "controlServerURL" not in sudo(lab, agent, f"cat {CONFIG}")[1]
    rc, journal = sudo(lab, agent, "journalctl -u k3s-agent --no-pager -o cat")
    # k3s's own line before its `tailscale up` (pkg/vpn/vpn.go StartVPN)
    ups = [line for line in journal.splitlines() if "Starting VPN: tailscale" in line]
    assert rc == 0 and len(ups) == 1, "k3s ran `tailscale up` once on the agent"

    before = started_at(lab)
    again = run_pyinfra(lab, "deploys/cluster.py", data=DATA)
    assert again.returncode == 0, again.stdout[-4000:]
    assert pyinfra_counts(again.stdout)["success"] == 0, again.stdout[-4000:]
    assert started_at(lab) == before
    lab.down()
