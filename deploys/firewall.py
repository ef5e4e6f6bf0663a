"""ufw on every node: deny incoming by default, SSH open, k3s ports only on the tailnet.

The wanted rules are rendered in ufw's own canonical form (what ``ufw show added`` prints), so
comparing them with the ``UfwStatus`` fact gives exactly the rules to add and to delete: rules
converge, a rule no longer wanted is removed. SSH is allowed before ufw is enabled, and the SSH
rule is always wanted, so the running session is never cut. ``--dry --diff`` lists each rule
change (``+ allow 80/tcp`` / ``- allow 7777/tcp``).

Every user rule on the node is managed: a rule added by hand and not declared in the data is
deleted on the next run (declare it in ``firewall_extra_rules`` instead).

Example::

    from k3sfleet.deploys.firewall import firewall

    firewall()
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from k3sfleet.deploys.ops import packages
from k3sfleet.deploys.readmodel import record, section, watch
from k3sfleet.errors import refuse_host_problems
from k3sfleet.facts.snapshot import SnapshotData
from k3sfleet.settings import Default, data_value, default_values
from k3sfleet.versions import TAILNET_INTERFACE

DEFAULTS: dict[str, Default] = {
    "firewall_ssh_ports": Default(
        [], "SSH ports to keep open; empty: the ports sshd listens on (`sshd -T`), else 22 (never "
            "the port pyinfra connects to, which differs behind a port forward)"),
    "firewall_trust_tailnet": Default(
        True, "allow everything arriving on `tailscale0` (the tailnet's own ACLs then decide)"),
    "firewall_k3s_ports": Default(["6443/tcp", "10250/tcp"], "opened on `tailscale0` only"),
    # With K3S_VPN_AUTH, K3s replaces flannel's backend by Tailscale (pkg/executor/embed/embed.go:
    # "It does not make sense to use VPN without its flannel backend"), an "extension" backend
    # that only runs `tailscale set ...` (pkg/agent/flannel/setup.go): no VXLAN at all.
    "firewall_vxlan_ports": Default(
        None, "8472/udp on `tailscale0` (flannel's VXLAN backend); `null`: only without vpn-auth"),
    "firewall_ha_ports": Default(
        None, "2379:2380/tcp on `tailscale0`; `null`: when the inventory has several servers"),
    "firewall_wireguard_ports": Default(
        False, "51820:51821/udp on `tailscale0` (flannel wireguard-native)"),
    "firewall_cluster_cidrs": Default(
        ["10.42.0.0/16", "10.43.0.0/16"], "pod and service networks allowed to the node"),
    "firewall_ingress_label": Default(
        "k3sfleet/ingress", 'label (value `"true"`) that opens the ingress ports'),
    "firewall_ingress_ports": Default(["80/tcp", "443/tcp"], "public on ingress nodes"),
    "firewall_extra_rules": Default(
        [], '`[{"port": 5432, "proto": "tcp", "from": "203.0.113.0/24", "interface": "eth0", '
            '"action": "allow"}]` (all but `port` optional)'),
    "firewall_default_incoming": Default("deny", "default incoming policy"),
    "firewall_default_outgoing": Default("allow", "default outgoing policy"),
}

#: What ``firewall`` consults in the host's snapshot (``deploys.readmodel.watch``).
EXTRAS: tuple[str, ...] = ("system", "packages", "ufw")

ACTIONS = ("allow", "deny", "reject", "limit")
PROTOS = ("tcp", "udp", "any")
PORT_RE = re.compile(r"^[0-9]{1,5}(:[0-9]{1,5})?$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def rule(
    *,
    action: str = "allow",
    port: str | None = None,
    proto: str = "any",
    source: str = "any",
    interface: str | None = None,
) -> str:
    """One ufw rule in the canonical form ``ufw show added`` prints (without ``ufw``).

    ufw uses its short form (``allow 22/tcp``) only for a port open from anywhere on any
    interface; everything else takes the long form.

    Example::

        rule(port="22", proto="tcp")                              # "allow 22/tcp"
        rule(interface="tailscale0")                              # "allow in on tailscale0"
        rule(port="6443", proto="tcp", interface="tailscale0")
        # "allow in on tailscale0 to any port 6443 proto tcp"
        rule(source="10.42.0.0/16")                               # "allow from 10.42.0.0/16"
    """
    if port and source == "any" and not interface:
        return f"{action} {port}" + (f"/{proto}" if proto != "any" else "")
    text = action
    if interface:
        text += f" in on {interface}"
    if source != "any":
        text += f" from {source}"
    if port:
        text += f" to any port {port}"
    if " to " not in text and " from " not in text and not interface:
        text += " to any"
    if proto != "any":
        text += f" proto {proto}"
    return text


def _port_proto(spec: str) -> tuple[str, str]:
    port, _, proto = str(spec).partition("/")
    return port.replace("-", ":"), proto or "any"


def rule_problems(rules: Any) -> list[str]:
    """What is wrong with ``firewall_extra_rules``, as text."""
    if not isinstance(rules, list):
        return ["firewall_extra_rules must be a list of {port, proto, from, interface, action}"]
    found = []
    for r in rules:
        if not isinstance(r, Mapping):
            found.append(f"firewall_extra_rules: {r!r} is not a mapping")
            continue
        unknown = set(r) - {"port", "proto", "from", "interface", "action"}
        if unknown:
            found.append(f"firewall_extra_rules: {dict(r)!r}: unknown keys {sorted(unknown)}")
        port = str(r.get("port", "")).replace("-", ":")
        if r.get("port") is not None and not PORT_RE.match(port):
            found.append(f"firewall_extra_rules: port {r.get('port')!r} is not a port or range")
        if r.get("proto", "any") not in PROTOS:
            found.append(f"firewall_extra_rules: proto must be one of {', '.join(PROTOS)}")
        if ":" in port and r.get("proto", "any") == "any":
            found.append(f"firewall_extra_rules: port range {port} needs proto tcp or udp")
        if r.get("action", "allow") not in ACTIONS:
            found.append(f"firewall_extra_rules: action must be one of {', '.join(ACTIONS)}")
        if r.get("interface") is not None and not IFACE_RE.match(str(r["interface"])):
            found.append(f"firewall_extra_rules: interface {r['interface']!r} is not a name")
        source = r.get("from", "any")
        if source != "any":
            try:
                ipaddress.ip_network(str(source), strict=False)
            except ValueError:
                found.append(f"firewall_extra_rules: from {source!r} is not an address/network")
        if r.get("port") is None and r.get("interface") is None and source == "any":
            found.append(f"firewall_extra_rules: {dict(r)!r} would match all traffic")
    return found


def _ports(data: Mapping[str, Any], servers: int) -> list[str]:
    ports = list(data.get("firewall_k3s_ports") or [])
    vxlan = data.get("firewall_vxlan_ports")
    if vxlan or (vxlan is None and not data_value(data, "k3s_vpn_auth")):
        ports.append("8472/udp")
    ha = data.get("firewall_ha_ports")
    if ha or (ha is None and servers > 1):
        ports.append("2379:2380/tcp")
    if data.get("firewall_wireguard_ports"):
        ports.append("51820:51821/udp")
    return ports


def ssh_ports(data: Mapping[str, Any], sshd_ports: Sequence[str] | None = None) -> list[str]:
    """The ports to keep open for SSH: ``firewall_ssh_ports`` when set, else the ports sshd
    listens on (``SystemInfo``'s ``sshd_ports``), else 22.

    Never the port pyinfra connects to (``ssh_port``): behind a port forward or a jump host
    that is not the port sshd listens on, and opening it instead would lock everyone out.
    """
    chosen = data.get("firewall_ssh_ports") or sshd_ports or ["22"]
    return [str(p) for p in chosen]


def wanted_rules(
    data: Mapping[str, Any], servers: int = 1, sshd_ports: Sequence[str] | None = None
) -> list[str]:
    """Every rule the node should have, SSH first, in ufw's canonical form.

    ``servers`` is the number of k3s servers in the inventory (HA opens etcd's ports);
    ``sshd_ports`` the ports sshd listens on (see ``ssh_ports``).
    """
    rules = [rule(port=port, proto="tcp") for port in ssh_ports(data, sshd_ports)]
    if data_value(data, "firewall_trust_tailnet", DEFAULTS):
        rules.append(rule(interface=TAILNET_INTERFACE))
    for spec in _ports(data, servers):
        port, proto = _port_proto(spec)
        rules.append(rule(port=port, proto=proto, interface=TAILNET_INTERFACE))
    for cidr in data.get("firewall_cluster_cidrs") or []:
        rules.append(rule(source=str(ipaddress.ip_network(str(cidr), strict=False))))
    labels = data.get("k3s_node_labels") or {}
    if str(labels.get(data_value(data, "firewall_ingress_label", DEFAULTS), "")) == "true":
        for spec in data.get("firewall_ingress_ports") or []:
            port, proto = _port_proto(spec)
            rules.append(rule(port=port, proto=proto))
    for extra in data.get("firewall_extra_rules") or []:
        source = str(extra.get("from", "any"))
        if source != "any":
            source = str(ipaddress.ip_network(source, strict=False))
        port = extra.get("port")
        rules.append(
            rule(
                action=str(extra.get("action", "allow")),
                port=None if port is None else str(port).replace("-", ":"),
                proto=str(extra.get("proto", "any")),
                source=source,
                interface=extra.get("interface"),
            )
        )
    unique: list[str] = []
    for r in rules:
        if r not in unique:
            unique.append(r)
    return unique


def _ufw(*words: str) -> StringCommand:
    return StringCommand("ufw", *[QuoteString(w) for w in words])


@operation()
def ufw_policy(
    rules: Sequence[str],
    incoming: str = "deny",
    outgoing: str = "allow",
) -> Generator[Any, None, None]:
    """ufw holds exactly ``rules``, has the default policies, and is enabled.

    Order: missing rules are added (SSH first), unwanted ones deleted, defaults set, and only
    then ufw enabled.

    Example::

        ufw_policy(rules=["allow 22/tcp", "allow in on tailscale0"])
    """
    status = section("ufw")
    current = list(status.get("rules") or [])
    add = [r for r in rules if r not in current]
    delete = [r for r in current if r not in rules]
    if (add or delete) and not host.state.is_executing:
        # Printed while pyinfra prepares, so `--dry` (and `--diff`) show the rule changes.
        host.log("ufw rules will change:", logger.info)
        for r in add:
            host.log(f"  + ufw {r}", logger.info)
        for r in delete:
            host.log(f"  - ufw {r}", logger.info)

    def effect(snap: SnapshotData) -> None:
        snap["ufw"] = {**snap["ufw"], "active": True, "incoming": incoming,
                       "outgoing": outgoing, "rules": list(rules)}

    record(effect)
    for r in add:
        yield _ufw(*shlex.split(r))
    for r in delete:
        yield _ufw("delete", *shlex.split(r))
    if status.get("incoming") != incoming:
        yield _ufw("default", incoming, "incoming")
    if status.get("outgoing") != outgoing:
        yield _ufw("default", outgoing, "outgoing")
    if not status.get("active"):
        yield _ufw("--force", "enable")
    if (
        not (add or delete)
        and status.get("active")
        and status.get("incoming") == incoming
        and (status.get("outgoing") == outgoing)
    ):
        host.noop(f"ufw is enabled with its {len(rules)} rules")


@deploy("k3sfleet firewall", data_defaults=default_values(DEFAULTS))
def firewall() -> None:
    """ufw with default deny incoming, SSH (the ports sshd listens on, read as root), the
    tailnet, k3s ports on tailscale0 only.

    Example::

        firewall()
    """
    data = host.data
    found = rule_problems(data.firewall_extra_rules or [])
    for key in ("firewall_default_incoming", "firewall_default_outgoing"):
        if data.get(key) not in ("allow", "deny", "reject"):
            found.append(f"{key} must be allow, deny or reject")
    refuse_host_problems(host.name, found)
    servers = len(host.state.inventory.get_group("k3s_servers", []))
    watch(extras=EXTRAS)
    sshd_ports = section("system")["sshd_ports"]
    packages(name="ufw installed", packages=["ufw"])
    ufw_policy(
        name="ufw rules and policy",
        rules=wanted_rules(data.dict(), servers=servers, sshd_ports=sshd_ports),
        incoming=str(data.firewall_default_incoming),
        outgoing=str(data.firewall_default_outgoing),
    )
