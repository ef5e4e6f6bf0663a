"""Inventory: addresses from the vault maps, the tailnet switch, aliases, host data, checks."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path
from typing import Any

import pytest

from k3sfleet.errors import ConfigError
from k3sfleet.inventory import (
    Node,
    entries_being_run,
    groups,
    host_data,
    nodes_from_groups,
    running,
    validate,
)
from k3sfleet.secret import Secret
from k3sfleet.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VAULT: dict[str, Any] = {
    "vault_ansible_hosts": {"vps-aws-1": "203.0.113.10", "vps-hetzner-1": "203.0.113.20"},
    "vault_ansible_users": {"vps-aws-1": "admin", "vps-hetzner-1": "root"},
}
NODES = [
    Node("vps-aws-1", role="server", provider="aws"),
    Node("vps-hetzner-1", role="agent", provider="hetzner", labels={"k3sfleet/ingress": "true"},
         taints=["dedicated=ingress:NoSchedule"]),
]


def settings(vault: dict[str, Any] | None = None, **values: Any) -> Settings:
    return Settings(**values, vault=VAULT if vault is None else vault)


def test_public_addresses_and_users_come_from_the_vault() -> None:
    servers, agents = groups(NODES, settings(), entry_files=())
    assert [name for name, _ in servers] == ["vps-aws-1"]
    assert [name for name, _ in agents] == ["vps-hetzner-1"]
    server, agent = servers[0][1], agents[0][1]
    assert (server["ssh_hostname"], server["ssh_user"]) == ("203.0.113.10", "admin")
    assert (agent["ssh_hostname"], agent["ssh_user"]) == ("203.0.113.20", "root")
    assert agent["k3s_role"] == "agent" and agent["k3sfleet_provider"] == "hetzner"
    assert agent["k3s_node_labels"] == {"k3sfleet/ingress": "true"}
    assert agent["k3s_node_taints"] == ["dedicated=ingress:NoSchedule"]
    assert agent["k3s_node_name"] == "vps-hetzner-1"


def test_sudo_is_host_data_set_where_the_login_user_is_not_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one sudo rule: ``_sudo`` in the host data where the SSH user is not root, which
    pyinfra applies to every operation and fact (pyinfra/api/arguments.py
    ``pop_global_arguments``); a node's own data wins; an unnamed user is the local one."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.arguments import pop_global_arguments

    monkeypatch.setattr("getpass.getuser", lambda: "operator")
    nodes = [*NODES, Node("own", role="agent", address="10.0.0.9"),
             Node("pinned", role="agent", address="10.0.0.8", ssh_user="admin",
                  data={"_sudo": False})]
    servers, agents = groups(nodes, settings(), entry_files=())
    inventory = Inventory(([*servers, *agents], {}))
    state = State(inventory, Config())
    used = {h.name: pop_global_arguments(state, h, {})[0]["_sudo"] for h in inventory}
    assert used == {"vps-aws-1": True, "vps-hetzner-1": False, "own": True, "pinned": False}
    assert "_sudo" not in agents[0][1]  # root: nothing set, pyinfra's default (no sudo)


def test_ssh_data_uses_the_keys_the_pyinfra_ssh_connector_reads() -> None:
    from pyinfra.connectors.ssh import ConnectorData

    data = host_data(NODES[0], settings(k3sfleet_ssh_key="~/.ssh/fleet",
                                        k3sfleet_known_hosts="~/.ssh/fleet_known_hosts"))
    ssh_keys = {k for k in data if k.startswith("ssh_")}
    assert ssh_keys <= set(ConnectorData.__annotations__), ssh_keys - set(
        ConnectorData.__annotations__
    )
    assert data["ssh_strict_host_key_checking"] == "yes"  # StrictPolicy: unknown keys refused
    assert data["ssh_known_hosts_file"] == str(Path("~/.ssh/fleet_known_hosts").expanduser())
    assert data["ssh_key"] == str(Path("~/.ssh/fleet").expanduser())


def test_every_setting_reaches_the_host_data() -> None:
    s = settings(k3s_token=Secret("K10-token"), rolling_agent_batch=2)
    data = host_data(NODES[0], s)
    for f in dataclasses.fields(Settings):
        if "doc" in f.metadata:
            assert data[f.name] == getattr(s, f.name), f.name
    assert isinstance(data["k3s_token"], Secret) and str(data["k3s_token"]) == "*MASKED*"


def test_tailnet_switch_uses_tailscale_map_then_magicdns() -> None:
    vault = {**VAULT, "vault_tailscale_hosts": {"vps-aws-1": "100.64.0.10"}}
    s = settings(vault, k3sfleet_connect="tailnet", k3sfleet_tailnet_domain="tail1234.ts.net")
    servers, agents = groups(NODES, s, entry_files=())
    assert servers[0][1]["ssh_hostname"] == "100.64.0.10"
    assert agents[0][1]["ssh_hostname"] == "vps-hetzner-1.tail1234.ts.net"
    assert agents[0][1]["ssh_user"] == "root"  # users still come from the vault
    # without a domain, the bare MagicDNS name
    s = settings(VAULT, k3sfleet_connect="tailnet")
    assert host_data(NODES[1], s)["ssh_hostname"] == "vps-hetzner-1"
    # tailnet mode does not need vault_ansible_hosts, except for ingress nodes (their public
    # address is their node-external-ip, published in DNS)
    no_public = {"vault_ansible_users": VAULT["vault_ansible_users"]}
    plain = [dataclasses.replace(n, labels={}) for n in NODES]
    assert validate(plain, settings(no_public, k3sfleet_connect="tailnet")) == []
    assert validate(NODES, settings(no_public)) == [
        "vault has no vault_ansible_hosts map (needed for 2 node(s))"
    ]


def test_node_addresses_override_the_vault_per_mode() -> None:
    node = Node("lab-server-1", role="server", address="10.123.0.11",
                tailnet_address="100.64.0.11", ssh_user="k3sfleet", ssh_port=2222)
    public = host_data(node, settings({}))
    assert (public["ssh_hostname"], public["ssh_user"], public["ssh_port"]) == (
        "10.123.0.11", "k3sfleet", 2222)
    assert host_data(node, settings({}, k3sfleet_connect="tailnet"))["ssh_hostname"] == (
        "100.64.0.11")
    assert validate([node], settings({})) == []


def test_validation_names_every_problem() -> None:
    vault = {
        "vault_ansible_hosts": {"vps-aws-1": "203.0.113.10", "vps-gone-1": "203.0.113.99"},
        "vault_ansible_users": ["not", "a", "map"],
        "vault_tailscale_hosts": {"vps-gone-2": "100.64.0.2"},
    }
    nodes = [Node("vps-aws-1", role="agent"), Node("vps-aws-1", role="agent"),
             Node("Bad_Name", role="agent", address="198.51.100.1", ssh_user="x"),
             Node("vps-x-1", role="agent", taints=["nocolon"])]
    problems = validate(nodes, settings(vault))
    assert problems == [
        "node vps-aws-1 is declared 2 times",
        "node 'Bad_Name': a name must be a lower-case DNS label (a-z, 0-9, -), as it is the "
        "hostname and the Kubernetes node name",
        "node vps-x-1: taint 'nocolon' is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute",
        "the inventory has no server (role='server')",
        "vault vault_ansible_users must be a map of node name to value",
        "node vps-x-1 has no address in vault vault_ansible_hosts",
        "vault vault_ansible_hosts names vps-gone-1, which the inventory lacks",
        "vault vault_tailscale_hosts names vps-gone-2, which the inventory lacks",
    ]
    with pytest.raises(ConfigError) as err:
        groups(nodes, settings(vault), entry_files=())
    assert err.value.problems == problems


def test_entry_file_requirements(tmp_path: Path) -> None:
    problems = validate(NODES, settings(), ["bootstrap"])
    assert problems == ["TAILSCALE_AUTH_KEY is not set (needed by deploys/bootstrap.py)"]
    assert validate(NODES, settings(tailscale_auth_key=Secret("tskey-x")), ["bootstrap"]) == []
    # a copy of the entry file anywhere declares the same checks (no folder name involved)
    copy = tmp_path / "mine" / "first_run.py"
    copy.parent.mkdir()
    copy.write_text((Path(__file__).resolve().parents[2] / "deploys" / "bootstrap.py").read_text())
    assert validate(NODES, settings(), [str(copy)]) == [
        "TAILSCALE_AUTH_KEY is not set (needed by mine/first_run.py)"]
    with running(["deploys/cluster.py", "/x/mine/bootstrap.py"]):
        assert entries_being_run() == ["deploys/cluster.py", "/x/mine/bootstrap.py"]
    assert entries_being_run() == []  # outside pyinfra's CLI and running(): none


def test_ansible_aliases_work_with_a_deprecation(capsys: pytest.CaptureFixture[str]) -> None:
    nodes = nodes_from_groups(
        k3s_masters=["vps-aws-1"], k3s_workers=[("vps-hetzner-1", {"firewall_extra": 1})]
    )
    assert [(n.name, n.role) for n in nodes] == [("vps-aws-1", "server"),
                                                 ("vps-hetzner-1", "agent")]
    assert nodes[1].data == {"firewall_extra": 1}
    err = capsys.readouterr().err
    assert "k3sfleet: group k3s_masters is deprecated, use k3s_servers" in err
    assert "k3sfleet: group k3s_workers is deprecated, use k3s_agents" in err

    node = Node("vps-old-1", role="master")
    assert node.role == "server"
    assert "role 'master' is deprecated, use 'server'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown group"):
        nodes_from_groups(k3s_nodes=["x"])


def test_groups_loads_settings_from_the_callers_project(tmp_path: Path) -> None:
    (tmp_path / "vault.yml").write_text(
        "vault_ansible_hosts:\n  vps-aws-1: 203.0.113.10\n"
        "vault_ansible_users:\n  vps-aws-1: admin\n"
    )
    (tmp_path / ".envrc").write_text("export K3S_VERSION=v1.33.6+k3s1\n")
    (tmp_path / "inventory.py").write_text(
        "from k3sfleet.inventory import Node, groups\n"
        "k3s_servers, k3s_agents = groups([Node('vps-aws-1', role='server')], entry_files=())\n"
    )
    found = runpy.run_path(str(tmp_path / "inventory.py"))
    [(name, data)] = found["k3s_servers"]
    assert (name, data["ssh_hostname"], data["k3s_version"]) == (
        "vps-aws-1", "203.0.113.10", "v1.33.6+k3s1")
    assert found["k3s_agents"] == []


def test_the_projects_inventory_file_declares_valid_nodes() -> None:
    source = (ROOT / "inventory.py").read_text()
    namespace: dict[str, Any] = {}
    exec(compile(source.split("k3s_servers, k3s_agents")[0], "inventory.py", "exec"), namespace)
    nodes = namespace["_NODES"]
    vault = {
        "vault_ansible_hosts": {n.name: "192.0.2.1" for n in nodes},
        "vault_ansible_users": {n.name: "admin" for n in nodes},
    }
    assert validate(nodes, settings(vault)) == []


def test_pyinfra_inventory_for_the_python_api() -> None:
    from pyinfra.api import Config, State

    from k3sfleet.inventory import pyinfra_inventory

    inventory = pyinfra_inventory(NODES, settings(), entry_files=())
    State(inventory, Config())
    assert [h.name for h in inventory.get_group("k3s_servers")] == ["vps-aws-1"]
    agent = inventory.get_host("vps-hetzner-1")
    assert agent.data.ssh_hostname == "203.0.113.20"
    assert agent.data.k3s_role == "agent"
    with pytest.raises(ConfigError, match="no server"):
        pyinfra_inventory(NODES[1:], settings(), entry_files=())


@pytest.mark.parametrize("key", ["tskey-auth-abc,def", "tskey-auth-abc=", "tskey=a,b"])
def test_vpn_auth_refuses_a_key_k3s_would_cut(key: str) -> None:
    # K3s's vpn-auth parser (k3s-io/k3s pkg/vpn/vpn.go getVPNAuthInfo, v1.34.2+k3s1) splits the
    # value on "," and each item on "=", keeping only what follows the first "=".
    s = settings(tailscale_auth_key=Secret(key))
    problems = validate(NODES, s, ["bootstrap", "cluster"])
    assert len(problems) == 2 and all("K3s's vpn-auth parser" in p for p in problems)
    assert not any(key in p for p in problems)  # the key itself is never printed
    # Without vpn-auth the key only goes to `tailscale up --auth-key=file:...`: accepted.
    assert validate(NODES, settings(tailscale_auth_key=Secret(key), k3s_vpn_auth=False),
                    ["bootstrap", "cluster"]) == []


def test_labels_are_checked_with_kubernetes_syntax_and_string_values() -> None:
    """k8s.io/apimachinery pkg/util/validation/validation.go: IsQualifiedName for keys,
    IsValidLabelValue for values. ``True`` would reach K3s as ``True`` and keep the firewall's
    ingress ports closed (it compares with ``"true"``)."""
    nodes = [
        Node("vps-aws-1", role="server", labels={
            "k3sfleet/ingress": True, "bad key": "x", "a/b/c": "x", "Example.com/x": "y",
            "ok.example.com/zone": "eu-1", "tier": "-edge", "long": "v" * 64, "empty": "",
        }),
    ]
    problems = "\n".join(validate(nodes, settings(), check_vault=False))
    assert """label 'k3sfleet/ingress': the value must be a string, write "true" not True""" \
        in problems
    for bad in ("'bad key': a key", "'a/b/c': a key", "'Example.com/x': a key",
                "'tier': value '-edge'", f"'long': value '{'v' * 64}'"):
        assert bad in problems, bad
    for good in ("'ok.example.com/zone'", "'empty'"):
        assert good not in problems, good


def test_addresses_must_be_an_ip_or_a_host_name() -> None:
    vault = {
        "vault_ansible_hosts": {"vps-aws-1": "192.0.2.300", "vps-hetzner-1": "ssh://root@h"},
        "vault_ansible_users": {"vps-aws-1": "admin", "vps-hetzner-1": "root"},
        "vault_tailscale_hosts": {"vps-aws-1": "100.64.0.1", "vps-hetzner-1": "my host"},
    }
    problems = validate(NODES, settings(vault))
    assert problems == [
        "vault vault_ansible_hosts: node vps-aws-1: '192.0.2.300' is not an IPv4 address",
        "vault vault_ansible_hosts: node vps-hetzner-1: 'ssh://root@h' is neither an IP address "
        "nor a host name (no scheme, user, port or space)",
        "vault vault_tailscale_hosts: node vps-hetzner-1: 'my host' is neither an IP address "
        "nor a host name (no scheme, user, port or space)",
    ]
    own = [Node("a", role="server", address="10.0.0.1 "), Node("b", role="agent",
                                                               address="node-b.example.org")]
    assert validate(own, settings(), check_vault=False) == [
        "node a: address '10.0.0.1 ' is neither an IP address nor a host name "
        "(no scheme, user, port or space)"
    ]


def test_unknown_host_data_keys_say_what_was_meant() -> None:
    nodes = [Node("vps-aws-1", role="server", data={
        "firewal_extra_rules": [], "common_sshd_option": {}, "k3s_whatever": 1,
        "team": "blue", "_sudo": True, "ssh_connect_retries": 2, "firewall_extra_rules": [],
    })]
    assert validate(nodes, settings(), check_vault=False) == [
        "node vps-aws-1: unknown host data key 'firewal_extra_rules' "
        "(did you mean firewall_extra_rules?)",
        "node vps-aws-1: unknown host data key 'common_sshd_option' "
        "(did you mean common_sshd_options?)",
        "node vps-aws-1: unknown host data key 'k3s_whatever'",
    ]


def test_argocd_namespace_is_not_a_knob() -> None:
    # Argo CD's namespace is fixed (settings.ARGOCD_NAMESPACE): the secrets deploy, the
    # infrastructure chart's route, `k3sfleet dr` and the verify suite all address it there, so
    # a node asking for another one is refused before any host is contacted
    nodes = [Node("vps-aws-1", role="server", data={"argocd_namespace": "gitops"})]
    assert validate(nodes, settings(), check_vault=False) == [
        "node vps-aws-1: unknown host data key 'argocd_namespace'"]


def test_data_keys_are_in_step_with_the_deploys() -> None:
    """Every key a deploy declares in its DEFAULTS block (found without importing it) or reads
    from host data is known, and no key listed by hand is stale."""
    import importlib
    import re

    from k3sfleet.inventory import READ_DATA_KEYS, declared_data_keys
    from k3sfleet.settings import setting_fields

    declared: set[str] = set()
    for path in (ROOT / "deploys").glob("*.py"):
        module = importlib.import_module(f"k3sfleet.deploys.{path.stem}")
        declared |= set(getattr(module, "DEFAULTS", {}))
    assert declared and declared_data_keys() == declared
    known = declared | READ_DATA_KEYS | {f.name for f in setting_fields()}
    read, sources = set(), ""
    for path in [*(ROOT / "deploys").glob("*.py"), *(ROOT / "k3sfleet").glob("*.py")]:
        sources += path.read_text()
        read |= set(re.findall(r"\bdata\.get\(\s*\"([a-z0-9_]+)\"", path.read_text()))
    read -= {"ssh_hostname", "ssh_port", "ssh_user", "ssh_key", "ssh_known_hosts_file",
             "vault_ansible_hosts", "_sudo", "_sudo_user"}  # (pyinfra's own keys)
    assert read <= known, read - known
    # no key listed by hand that nothing reads or sets any more (READ_DATA_KEYS names it once)
    stale = {k for k in READ_DATA_KEYS - declared - read
             if len(re.findall(rf"\b{k}\b", sources)) <= 1}
    assert stale == set(), stale


def test_misspelt_setting_in_a_project_file_is_named(tmp_path: Path) -> None:
    (tmp_path / ".envrc").write_text('export K3S_VERISON="v1.34.2+k3s1"\nexport MY_TOOL=1\n')
    with pytest.raises(ConfigError) as err:
        Settings.load(tmp_path, environ={"K3S_VERISONX_FROM_SHELL": "ignored"})
    assert err.value.problems == [
        "K3S_VERISON in .envrc is not a setting (did you mean K3S_VERSION?)"
    ]


def test_the_public_address_reaches_the_host_data_in_both_connect_modes() -> None:
    for connect in ("public", "tailnet"):
        servers, agents = groups(NODES, settings(k3sfleet_connect=connect), entry_files=())
        assert agents[0][1]["k3sfleet_public_address"] == "203.0.113.20"
        assert servers[0][1]["k3sfleet_public_address"] == "203.0.113.10"


def test_an_ingress_node_needs_a_public_ip_address() -> None:
    no_entry = {**VAULT, "vault_ansible_hosts": {"vps-aws-1": "203.0.113.10"}}
    problems = validate(NODES, settings(vault=no_entry, k3sfleet_connect="tailnet"))
    assert any("ingress node vps-hetzner-1 has no public address" in p for p in problems)
    named = {**VAULT, "vault_ansible_hosts": {**VAULT["vault_ansible_hosts"],
                                              "vps-hetzner-1": "vps1.example.net"}}
    problems = validate(NODES, settings(vault=named))
    assert any("public address 'vps1.example.net'" in p and "IP address" in p for p in problems)
    # a node that is not an ingress node needs no public IP for DNS
    plain = [dataclasses.replace(n, labels={}) for n in NODES]
    assert not [p for p in validate(plain, settings(vault=named)) if "public address" in p]
