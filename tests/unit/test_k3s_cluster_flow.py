"""deploys/cluster.py (and reset.py) run as the pyinfra CLI runs them, against simulated nodes
(tests/unit/k3s_harness.py): the run-time token flow, order, idempotence, HA, roll-back."""

from __future__ import annotations

import logging

import pytest
import yaml
from k3s_harness import AUTH_KEY, CONFIG, UNITS, VPN_AUTH, SimCluster, all_commands

from k3sfleet.secret import Secret

K3S_OPS = ("K3s server", "K3s agent")


def k3s_changes(result, sim: SimCluster) -> dict[str, list[str]]:
    return {
        name: [op for op in result.changed_ops(name) if op.startswith(K3S_OPS)]
        for name in sim.nodes
    }


def config_of(sim: SimCluster, name: str) -> dict:
    return yaml.safe_load(sim.nodes[name].files[CONFIG])


@pytest.fixture
def converged() -> SimCluster:
    sim = SimCluster.fresh(servers=1, agents=2)
    result = sim.run("deploys/cluster.py")
    assert result.ok, (result.error, sim.stderr)
    return sim


def test_one_run_brings_up_a_fresh_cluster_with_the_servers_token(converged: SimCluster) -> None:
    sim = converged
    server = sim.nodes["server-1"]
    assert sim.clusters_started == 1
    assert config_of(sim, "server-1")["cluster-init"] is True
    for agent in ("agent-1", "agent-2"):
        node = sim.nodes[agent]
        assert node.active["k3s-agent"] and node.joined == "server-1"
        cfg = config_of(sim, agent)
        assert cfg["server"] == server.url  # the tailnet URL
        assert cfg["token"] == server.token  # read from the server at run time
        assert "node-external-ip" not in cfg  # not an ingress node
        assert cfg["flannel-iface"] == "tailscale0"  # Tailscale is up before k3s (deploy)
        assert cfg["vpn-auth-file"] == VPN_AUTH
    assert config_of(sim, "server-1")["flannel-iface"] == "tailscale0"


def test_second_run_changes_nothing_and_restarts_nothing(converged: SimCluster) -> None:
    sim = converged
    started = {n.name: dict(n.started_at) for n in sim.nodes.values()}
    result = sim.run("deploys/cluster.py")
    assert result.ok, result.error
    assert k3s_changes(result, sim) == {name: [] for name in sim.nodes}
    assert {n.name: dict(n.started_at) for n in sim.nodes.values()} == started


def test_third_agent_joins_without_restarting_the_others(converged: SimCluster) -> None:
    sim = converged
    started = {n.name: dict(n.started_at) for n in sim.nodes.values()}
    sim.add("agent")
    result = sim.run("deploys/cluster.py")
    assert result.ok, result.error
    assert sim.nodes["agent-3"].joined == "server-1" and sim.nodes["agent-3"].active["k3s-agent"]
    assert {n: dict(sim.nodes[n].started_at) for n in started} == started
    changes = k3s_changes(result, sim)
    assert changes["agent-3"] and not any(changes[n] for n in started)


def test_bad_passthrough_setting_is_rolled_back_and_fails_clearly(converged: SimCluster) -> None:
    sim = converged
    good = sim.nodes["agent-1"].files[CONFIG]
    result = sim.run(
        "deploys/cluster.py", per_host={"agent-1": {"k3s_extra_config": {"bad-setting": True}}}
    )
    assert not result.ok
    assert any(
        "previous config is restored" in line and "healthy again" in line for line in sim.stderr
    )
    node = sim.nodes["agent-1"]
    assert node.files[CONFIG] == good
    assert "bad-setting" in node.files[f"{CONFIG}.failed"]
    assert node.active["k3s-agent"]
    assert sim.nodes["agent-2"].active["k3s-agent"]


def test_passthrough_cannot_replace_managed_keys() -> None:
    sim = SimCluster.fresh(servers=1, agents=0)
    result = sim.run("deploys/cluster.py", data={"k3s_extra_config": {"token": "x"}})
    assert not result.ok and "k3s_extra_config sets token" in (result.error or "")


def test_secrets_are_in_private_files_only(converged: SimCluster) -> None:
    sim = converged
    token = sim.nodes["server-1"].token
    assert token
    commands = all_commands(sim)
    assert token not in commands and AUTH_KEY not in commands
    for node in sim.nodes.values():
        assert node.files[VPN_AUTH].strip() == (
            f"name=tailscale,joinKey={AUTH_KEY},extraArgs=--hostname=@fake/{node.name} "
            "--accept-routes"
        )
        unit = node.files[UNITS[node.service]]
        assert token not in unit and AUTH_KEY not in unit and "Type=notify" in unit
    # Written through a 0600 staging file (install -m 600) and renamed into place.
    assert "install -m 600 -o root /dev/null /etc/rancher/k3s/config.yaml.k3sfleet-new" in commands


def test_dry_run_on_a_fresh_cluster_says_the_token_comes_at_run_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = SimCluster.fresh(servers=1, agents=1)
    with caplog.at_level(logging.INFO):
        result = sim.run("deploys/cluster.py", dry=True)
    assert result.ok
    assert "will come from @fake/server-1 at run time" in caplog.text
    assert sim.nodes["server-1"].version is None  # nothing executed
    # the token is kept nowhere yet: the run says so and names the command that keeps it
    assert "K3S_TOKEN is not set" in caplog.text and "`k3sfleet token save`" in caplog.text


def test_dry_run_on_a_converged_cluster_shows_no_change(
    converged: SimCluster, caplog: pytest.LogCaptureFixture
) -> None:
    sim = converged
    with caplog.at_level(logging.INFO):
        result = sim.run("deploys/cluster.py", dry=True)
    assert "at run time" not in caplog.text
    for op_hash in result.state.get_op_order():
        meta = result.state.get_op_meta(op_hash)
        if not any(n.startswith(K3S_OPS) for n in meta.names):
            continue
        for host in result.state.inventory:
            if op_hash in result.state.ops[host]:
                data = result.state.get_op_data_for_host(host, op_hash)
                assert data.operation_meta.will_change is False, (meta.names, host.name)


def test_vault_token_is_used_everywhere_and_known_up_front(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = SimCluster.fresh(servers=1, agents=1)
    token = Secret("K10vault-supplied-token::server:abc")
    with caplog.at_level(logging.INFO):
        result = sim.run("deploys/cluster.py", data={"k3s_token": token})
    assert result.ok, (result.error, sim.stderr)
    assert "at run time" not in caplog.text and "k3sfleet token save" not in caplog.text
    assert config_of(sim, "server-1")["token"] == token.unmask()
    assert config_of(sim, "agent-1")["token"] == token.unmask()
    assert token.unmask() not in all_commands(sim)


def test_the_saved_token_changes_no_joined_node(converged: SimCluster) -> None:
    """``k3sfleet token save`` stores the node-token the joined nodes already use: with it in
    the vault only the first server's config changes (it gains ``token:``), once."""
    sim = converged
    token = Secret(sim.nodes["server-1"].token)
    agents = {n: sim.nodes[n].files[CONFIG] for n in ("agent-1", "agent-2")}
    result = sim.run("deploys/cluster.py", data={"k3s_token": token})
    assert result.ok, (result.error, sim.stderr)
    assert {n: sim.nodes[n].files[CONFIG] for n in agents} == agents
    assert k3s_changes(result, sim)["agent-1"] == []
    assert config_of(sim, "server-1")["token"] == token.unmask()
    again = sim.run("deploys/cluster.py", data={"k3s_token": token})
    assert again.ok and k3s_changes(again, sim) == {name: [] for name in sim.nodes}


def test_ha_one_cluster_init_and_a_wiped_first_server_rejoins() -> None:
    sim = SimCluster.fresh(servers=3, agents=1)
    result = sim.run("deploys/cluster.py")
    assert result.ok, (result.error, sim.stderr)
    assert sim.clusters_started == 1
    inits = [
        n for n in ("server-1", "server-2", "server-3") if config_of(sim, n).get("cluster-init")
    ]
    assert inits == ["server-1"]
    assert {sim.nodes[n].joined for n in ("server-2", "server-3", "agent-1")} == {"server-1"}

    sim.nodes["server-1"].wipe()
    result = sim.run("deploys/cluster.py")
    assert result.ok, (result.error, sim.stderr)
    assert sim.clusters_started == 1  # no second cluster
    assert sim.nodes["server-1"].joined == "server-2"
    assert sim.nodes["server-1"].cluster_id == sim.nodes["server-2"].cluster_id == "cluster-1"

    started = {n.name: dict(n.started_at) for n in sim.nodes.values()}
    result = sim.run("deploys/cluster.py")
    assert result.ok and k3s_changes(result, sim) == {name: [] for name in sim.nodes}
    assert {n.name: dict(n.started_at) for n in sim.nodes.values()} == started


def test_known_bad_version_is_refused_before_anything_runs() -> None:
    """k3s#14515 moves etcd onto the VPN address: refused for servers whose etcd is not on the
    tailnet already (no ``flannel-iface: tailscale0``), allowed with our default config."""
    sim = SimCluster.fresh(servers=1, agents=0)
    off_tailnet = {"k3s_version": "v1.35.5+k3s1", "k3s_flannel_iface": ""}
    result = sim.run("deploys/cluster.py", data=off_tailnet)
    assert not result.ok and "k3s#14515" in (result.error or "")
    assert sim.nodes["server-1"].version is None
    ok = sim.run(
        "deploys/cluster.py", data={**off_tailnet, "k3s_allow_versions": "v1.35.5+k3s1"}
    )
    assert ok.ok and sim.nodes["server-1"].version == "v1.35.5+k3s1"
    fresh = SimCluster.fresh(servers=1, agents=0)
    ours = fresh.run("deploys/cluster.py", data={"k3s_version": "v1.35.5+k3s1"})
    assert ours.ok and fresh.nodes["server-1"].version == "v1.35.5+k3s1"


def test_upgrade_of_the_pinned_version_reinstalls_and_restarts(converged: SimCluster) -> None:
    sim = converged
    before = sim.nodes["agent-1"].started_at["k3s-agent"]
    result = sim.run("deploys/cluster.py", data={"k3s_version": "v1.34.3+k3s1"})
    assert result.ok, result.error
    assert sim.nodes["agent-1"].version == "v1.34.3+k3s1"
    assert sim.nodes["agent-1"].started_at["k3s-agent"] > before


def test_reset_needs_confirmation_then_removes_k3s(converged: SimCluster) -> None:
    sim = converged
    refused = sim.run("deploys/reset.py")
    assert not refused.ok and "K3S_RESET_CONFIRM" in (refused.error or "")
    assert sim.nodes["server-1"].version
    done = sim.run("deploys/reset.py", data={"k3s_reset_confirm": "yes-destroy-k3s"})
    assert done.ok, done.error
    assert all(n.version is None and not n.files for n in sim.nodes.values())
    again = sim.run("deploys/reset.py", data={"k3s_reset_confirm": "yes-destroy-k3s"})
    assert again.ok and all(again.changed_ops(n) == [] for n in sim.nodes)


def test_tailnet_address_known_only_at_run_time_is_still_written_once() -> None:
    sim = SimCluster.fresh(servers=1, agents=1)
    sim.tailnet_late = True
    result = sim.run("deploys/cluster.py")
    assert result.ok, (result.error, sim.stderr)
    server = config_of(sim, "server-1")
    assert server["tls-san"][0] == sim.nodes["server-1"].tailnet_ip
    sim.tailnet_late = False
    again = sim.run("deploys/cluster.py")
    assert again.ok and k3s_changes(again, sim) == {name: [] for name in sim.nodes}


def test_k3s_directories_are_created_root_owned_then_left_alone(converged: SimCluster) -> None:
    sim = converged
    for node in sim.nodes.values():
        assert node.dirs == {
            "/etc/rancher/k3s": "root root 755",
            "/var/lib/rancher/k3s": "root root 755",
        }
    sim.nodes["agent-1"].dirs["/var/lib/rancher/k3s"] = "root root 777"
    for node in sim.nodes.values():
        node.commands.clear()
    result = sim.run("deploys/cluster.py")
    assert result.ok, result.error
    fixed = [c for c in sim.nodes["agent-1"].commands if c.startswith("install -d")]
    assert fixed == ["install -d -o root -g root -m 755 /var/lib/rancher/k3s"]
    assert sim.nodes["agent-1"].dirs["/var/lib/rancher/k3s"] == "root root 755"
    assert result.changed_ops("agent-1") == ["K3s prerequisites | K3s directories"]
    assert all(result.changed_ops(n) == [] for n in ("server-1", "agent-2"))


def test_no_op_run_reads_each_node_in_one_command(converged: SimCluster) -> None:
    """A converged agent is read with one remote command; the first server with two (its state
    and, for the agents, its node-token). With the tailnet addresses in the inventory nobody
    asks tailscale, and nothing changes."""
    sim = converged
    for node in sim.nodes.values():
        node.commands.clear()
    known = {n: {"k3sfleet_tailnet_address": node.tailnet_ip} for n, node in sim.nodes.items()}
    result = sim.run("deploys/cluster.py", per_host=known)
    assert result.ok, result.error
    assert all(result.changed_ops(n) == [] for n in sim.nodes)
    assert {n: len(node.commands) for n, node in sim.nodes.items()} == {
        "server-1": 2,
        "agent-1": 1,
        "agent-2": 1,
    }
    assert not any("tailscale" in c for node in sim.nodes.values() for c in node.commands)
