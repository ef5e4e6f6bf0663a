"""deploys/firewall.py: ufw's canonical rule form, converging add/delete commands, safe order."""

from __future__ import annotations

from typing import Any

import pytest
from bootstrap_harness import changed, generate

from k3sfleet.deploys import firewall as fw
from k3sfleet.errors import ConfigError
from k3sfleet.facts.ufw import UfwStatus
from k3sfleet.settings import default_values

OP = "k3sfleet firewall | ufw rules and policy"


def facts(status: dict[str, Any] | None = None, ufw_installed: bool = False) -> dict[str, Any]:
    return {
        "DebPackages": {"ufw": ["0.36.2-1"]} if ufw_installed else {},
        "UfwStatus": status if status is not None else UfwStatus.default(),
    }


def listening(ports: list[str], table: dict[str, Any] | None = None) -> dict[str, Any]:
    """``table`` (default: a fresh node) where sshd listens on ``ports`` (``sshd -T``)."""
    return {**(table or facts()), "SystemInfo": {"sshd_ports": ports}}


def converged(data: dict[str, Any], servers: int = 1, extra: list[str] | None = None
              ) -> dict[str, Any]:
    rules = fw.wanted_rules({**default_values(fw.DEFAULTS), **data}, servers=servers)
    return facts({"active": True, "incoming": "deny", "outgoing": "allow", "routed": "deny",
                  "rules": rules + (extra or [])}, ufw_installed=True)


@pytest.mark.parametrize(
    ("kwargs", "canonical"),
    [
        ({"port": "22", "proto": "tcp"}, "allow 22/tcp"),
        ({"port": "7777"}, "allow 7777"),
        ({"action": "limit", "port": "22", "proto": "tcp"}, "limit 22/tcp"),
        ({"interface": "tailscale0"}, "allow in on tailscale0"),
        ({"port": "6443", "proto": "tcp", "interface": "tailscale0"},
         "allow in on tailscale0 to any port 6443 proto tcp"),
        ({"port": "2379:2380", "proto": "tcp", "interface": "tailscale0"},
         "allow in on tailscale0 to any port 2379:2380 proto tcp"),
        ({"source": "10.42.0.0/16"}, "allow from 10.42.0.0/16"),
        ({"source": "203.0.113.0/24", "port": "5432", "proto": "tcp"},
         "allow from 203.0.113.0/24 to any port 5432 proto tcp"),
        ({"source": "203.0.113.7/32", "interface": "eth0"}, "allow in on eth0 from 203.0.113.7/32"),
        ({"action": "deny", "proto": "udp"}, "deny to any proto udp"),
    ],
)
def test_rules_render_as_ufw_show_added_prints_them(kwargs: dict[str, Any], canonical: str) -> None:
    assert fw.rule(**kwargs) == canonical


def test_fresh_node_allows_ssh_first_and_enables_last() -> None:
    ops = generate(fw.firewall, facts())
    assert ops["k3sfleet firewall | ufw installed"][0].endswith("install ufw")
    cmds = ops[OP]
    assert cmds[0] == "ufw allow 22/tcp"
    assert cmds[-1] == "ufw --force enable"
    assert cmds[-3:-1] == ["ufw default deny incoming", "ufw default allow outgoing"]
    assert "ufw allow in on tailscale0" in cmds
    for port in ("6443 proto tcp", "10250 proto tcp"):
        assert f"ufw allow in on tailscale0 to any port {port}" in cmds
    # vpn-auth (the default): flannel's tailscale backend has no VXLAN, 8472/udp stays shut.
    assert not any("8472" in c for c in cmds)
    # k3s ports never on the public side, no etcd ports with one server, no ingress ports.
    assert not any(c.startswith(("ufw allow 6443", "ufw allow 10250", "ufw allow 8472"))
                   for c in cmds)
    assert not any("2379" in c or "80/tcp" in c or "443/tcp" in c for c in cmds)


def test_converged_node_gets_no_command() -> None:
    data = {"k3s_node_labels": {"k3sfleet/ingress": "true"},
            "firewall_extra_rules": [{"port": 7777, "proto": "tcp", "from": "203.0.113.0/24"}]}
    ops = generate(fw.firewall, converged(data), data)
    assert OP in ops
    assert changed(ops) == {}


def test_removed_extra_rule_is_deleted_and_nothing_else_changes() -> None:
    extra = [{"port": "7777", "proto": "tcp"}]
    ops = changed(generate(fw.firewall, converged({"firewall_extra_rules": extra}), {}))
    assert ops == {OP: ["ufw delete allow 7777/tcp"]}


def test_hand_made_rule_with_comment_is_deleted_with_its_quoting() -> None:
    ops = changed(generate(fw.firewall, converged({}, extra=["allow 9000/tcp comment 'by hand'"])))
    assert ops == {OP: ["ufw delete allow 9000/tcp comment 'by hand'"]}


def test_new_extra_rule_is_added() -> None:
    data = {"firewall_extra_rules": [{"port": "8000-8010", "proto": "udp", "interface": "eth1"}]}
    ops = changed(generate(fw.firewall, converged({}), data))
    assert ops == {OP: ["ufw allow in on eth1 to any port 8000:8010 proto udp"]}


def test_ingress_label_opens_80_and_443_publicly() -> None:
    data = {"k3s_node_labels": {"k3sfleet/ingress": "true"}}
    ops = changed(generate(fw.firewall, converged({}), data))
    assert ops == {OP: ["ufw allow 80/tcp", "ufw allow 443/tcp"]}
    # The label taken away: the ports close again.
    ops = changed(generate(fw.firewall, converged(data), {"k3s_node_labels": {}}))
    assert ops == {OP: ["ufw delete allow 80/tcp", "ufw delete allow 443/tcp"]}


def test_ha_inventory_opens_etcd_on_the_tailnet_only() -> None:
    ops = changed(generate(fw.firewall, converged({}), servers=3))
    assert ops == {OP: ["ufw allow in on tailscale0 to any port 2379:2380 proto tcp"]}


def test_ssh_rule_is_the_port_sshd_listens_on_first() -> None:
    cmds = generate(fw.firewall, listening(["2222"]))[OP]
    assert cmds[0] == "ufw allow 2222/tcp"
    assert "ufw allow 22/tcp" not in cmds


def test_ssh_rule_ignores_the_port_pyinfra_connects_to() -> None:
    # Reached through a port forward (ssh_port 35000) while sshd listens on 22: opening 35000
    # instead of 22 would lock everyone out once ufw is enabled.
    cmds = generate(fw.firewall, listening(["22"]), {"ssh_port": 35000})[OP]
    assert cmds[0] == "ufw allow 22/tcp"
    assert not any("35000" in c for c in cmds)


def test_explicit_ssh_ports_win() -> None:
    cmds = generate(fw.firewall, listening(["22"]), {"firewall_ssh_ports": [22, 2222]})
    assert cmds[OP][:2] == ["ufw allow 22/tcp", "ufw allow 2222/tcp"]


def test_inactive_ufw_with_the_rules_is_only_enabled() -> None:
    state = converged({})["UfwStatus"]
    ops = changed(generate(fw.firewall, facts({**state, "active": False}, ufw_installed=True)))
    assert ops == {OP: ["ufw --force enable"]}


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"port": "http"}, "not a port"),
        ({"port": 22, "proto": "icmp"}, "proto must be"),
        ({"port": 22, "action": "accept"}, "action must be"),
        ({"port": 22, "from": "10.0.0.300"}, "not an address"),
        ({"port": 22, "interface": "eth0; reboot"}, "not a name"),
        ({"proto": "tcp"}, "would match all traffic"),
        ({"port": 22, "to": "x"}, "unknown keys"),
        ({"port": "1000:2000"}, "needs proto"),
    ],
)
def test_bad_extra_rules_are_config_errors(rule: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        generate(fw.firewall, facts(), {"firewall_extra_rules": [rule]})


def test_the_rule_change_is_printed_while_preparing_so_dry_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = {"k3s_node_labels": {"k3sfleet/ingress": "true"}}
    with caplog.at_level("INFO", logger="pyinfra"):
        generate(fw.firewall, converged({}, extra=["allow 7777/tcp"]), data)
    lines = [r.getMessage() for r in caplog.records]
    assert any("ufw rules will change" in line for line in lines)
    changes = [line for line in lines if "+ ufw" in line or "- ufw" in line]
    # (the harness evaluates each operation twice, as pyinfra's prepare and execute do)
    assert changes[:3] == ["[node-1]   + ufw allow 80/tcp", "[node-1]   + ufw allow 443/tcp",
                           "[node-1]   - ufw allow 7777/tcp"]


def test_nothing_is_printed_when_rules_match(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="pyinfra"):
        generate(fw.firewall, converged({}))
    assert not any("ufw rules will change" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("data", "vxlan"),
    [({}, False), ({"k3s_vpn_auth": True}, False), ({"k3s_vpn_auth": False}, True),
     ({"k3s_vpn_auth": True, "firewall_vxlan_ports": True}, True),
     ({"k3s_vpn_auth": False, "firewall_vxlan_ports": False}, False)],
)
def test_vxlan_port_only_without_vpn_auth(data: dict[str, Any], vxlan: bool) -> None:
    # k3s-io/k3s v1.34.2+k3s1 pkg/executor/embed/embed.go: with vpn-auth the flannel backend is
    # the VPN's ("tailscale"), pkg/agent/flannel/setup.go: an "extension" backend (no VXLAN).
    rules = fw.wanted_rules({**default_values(fw.DEFAULTS), **data})
    assert ("allow in on tailscale0 to any port 8472 proto udp" in rules) is vxlan
