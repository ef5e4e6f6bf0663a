"""deploys/cluster.py on real Debian hosts (the lab, stand-in k3s), through the real pyinfra CLI.

One lab of 1 server + 2 agents is bootstrapped, then clustered once with ``-vv``; the tests in
file order then prove: both agents registered as Nodes in the server's API in that one run
(the stand-in agent registers only with the server's token at its tailnet URL); a second run
changes nothing and restarts nothing; ``--dry`` shows no change; no secret in the output, the
units or any process's argv, and the secret files are 0600; a bad passthrough setting is rolled
back with a clear failure; a third agent joins without restarting the others; ``k3sfleet
kubeconfig`` merges a working context and keeps an unrelated one. A second lab of 3 servers + 1
agent proves a single ``cluster-init`` and that a wiped first server rejoins the cluster.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3sfleet.lab.standins.k3s.main import FAULT_MARKER

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.lab

CONFIG = "/etc/rancher/k3s/config.yaml"
SECRET_FILES = {
    "server": [CONFIG, "/etc/rancher/k3s/vpn-auth", "/var/lib/rancher/k3s/server/node-token"],
    "agent": [CONFIG, "/etc/rancher/k3s/vpn-auth"],
}


def pyinfra(inventory: Path, entry: str, *args: str, timeout: float = 900) -> Any:
    """The real pyinfra CLI from the project directory; stderr merged into ``stdout``."""
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pyinfra", *args, str(inventory), entry],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def sudo(lab: Any, host: Any, command: str) -> str:
    rc, out, err = lab.ssh(host, "sudo sh -c " + "'" + command.replace("'", "'\"'\"'") + "'")
    assert rc == 0, f"{command} on {host}: {err}"
    return str(out)


def service(host: Any) -> str:
    return "k3s" if host.role == "server" else "k3s-agent"


def started_at(lab: Any) -> dict[str, str]:
    """Each host's K3s unit: when it last became active (changes on every restart)."""
    return {
        h.name: sudo(lab, h, f"systemctl show -p ActiveEnterTimestampMonotonic {service(h)}")
        for h in lab.hosts
    }


def grand_total(output: str) -> dict[str, int]:
    for line in output.splitlines():
        if line.strip().startswith("Grand total"):
            cells = re.split(r"\s{2,}", line.strip())[2:]
            nums = [int(c) if c.isdigit() else 0 for c in cells] + [0, 0, 0]
            return {"success": nums[0], "error": nums[1], "no_change": nums[2]}
    raise AssertionError(f"no results table:\n{output[-3000:]}")


def registered_nodes(lab: Any) -> set[str]:
    """Nodes created through any server's API (each kube-apiserver audits its own requests:
    a joined server registers its Node with its own)."""
    writes = [w for server in lab.servers for w in lab.api_writes(server)]
    return {w["name"] for w in writes if w["kind"] == "Node" and w["verb"] == "create"}


@pytest.fixture(scope="module")
def cluster(lab_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    lab = lab_factory(servers=1, agents=2)
    work = tmp_path_factory.mktemp("cluster")
    inventory = lab.write_inventory(work / "inventory.py")
    boot = pyinfra(inventory, "deploys/bootstrap.py", "-y")
    assert boot.returncode == 0, boot.stdout[-4000:]
    dry = pyinfra(inventory, "deploys/cluster.py", "--dry")
    first = pyinfra(inventory, "deploys/cluster.py", "-y", "-vv")
    yield {"lab": lab, "inventory": inventory, "first": first, "work": work, "dry": dry}


def test_dry_run_on_fresh_hosts_says_the_token_comes_at_run_time(cluster: dict[str, Any]) -> None:
    dry = cluster["dry"]
    assert dry.returncode == 0, dry.stdout[-4000:]
    for agent in ("lab-agent-1", "lab-agent-2"):
        assert re.search(
            rf"\[{agent}\].*token and server URL will come from lab-server-1 at run time",
            dry.stdout,
        ), dry.stdout[-4000:]


def test_one_run_registers_both_agents_with_the_servers_token(cluster: dict[str, Any]) -> None:
    lab, first = cluster["lab"], cluster["first"]
    assert first.returncode == 0, first.stdout[-4000:]
    assert {"lab-server-1", "lab-agent-1", "lab-agent-2"} <= registered_nodes(lab)
    server = lab.servers[0]
    token = sudo(lab, server, "cat /var/lib/rancher/k3s/server/node-token").strip()
    for agent in lab.agents:
        config = yaml.safe_load(sudo(lab, agent, f"cat {CONFIG}"))
        assert config["server"] == f"https://{server.tailnet_ip}:6443"
        assert config["token"] == token
        # not an ingress node: no external address (and never the tailnet one)
        assert "node-external-ip" not in config and config["flannel-iface"] == "tailscale0"
        assert "svccontroller.k3s.cattle.io/enablelb=false" in config["node-label"]
    server_config = yaml.safe_load(sudo(lab, server, f"cat {CONFIG}"))
    assert server_config["cluster-init"] is True and "server" not in server_config


def test_second_run_changes_nothing_and_restarts_nothing(cluster: dict[str, Any]) -> None:
    lab = cluster["lab"]
    before = started_at(lab)
    again = pyinfra(cluster["inventory"], "deploys/cluster.py", "-y")
    assert again.returncode == 0, again.stdout[-4000:]
    assert grand_total(again.stdout)["success"] == 0, again.stdout[-4000:]
    assert started_at(lab) == before


def test_dry_run_on_the_converged_cluster_shows_no_change(cluster: dict[str, Any]) -> None:
    dry = pyinfra(cluster["inventory"], "deploys/cluster.py", "--dry")
    assert dry.returncode == 0, dry.stdout[-4000:]
    assert "at run time" not in dry.stdout
    rows = [line for line in dry.stdout.splitlines() if re.match(r"\s+K3s", line)]
    assert rows, dry.stdout[-3000:]
    for row in rows:
        cells = re.split(r"\s{2,}", row.strip())
        assert cells[1:3] == ["-", "-"], row


def test_secrets_in_no_output_unit_or_argv_and_files_are_0600(cluster: dict[str, Any]) -> None:
    lab, output = cluster["lab"], cluster["first"].stdout
    token = sudo(lab, lab.servers[0], "cat /var/lib/rancher/k3s/server/node-token").strip()
    password = token.rsplit(":", 1)[-1]
    key = lab.auth_key
    assert "sudo" in output and "mv -f" in output  # -vv printed the commands
    for secret in (token, password, key):
        assert secret not in output
    for host in lab.hosts:
        unit = sudo(lab, host, f"cat /etc/systemd/system/{service(host)}.service")
        argv = sudo(lab, host, "ps -eo args")
        for secret in (password, key):
            assert secret not in unit and secret not in argv
        for path in SECRET_FILES[host.role]:
            mode, owner = sudo(lab, host, f"stat -L -c '%a %U' {path}").split()
            assert (mode, owner) == ("600", "root"), f"{host.name}:{path} is {mode} {owner}"


def test_bad_passthrough_setting_is_rolled_back_and_fails_clearly(
    cluster: dict[str, Any],
) -> None:
    lab, work = cluster["lab"], cluster["work"]
    server = lab.servers[0]
    good = sudo(lab, server, f"sha256sum {CONFIG}").split()[0]
    bad_inventory = lab.write_inventory(
        work / "bad.py", {"k3s_extra_config": {"data-dir": "/proc/k3sfleet-not-writable"}}
    )
    bad = pyinfra(bad_inventory, "deploys/cluster.py", "-y")
    assert bad.returncode != 0
    assert "did not become healthy with the new /etc/rancher/k3s/config.yaml" in bad.stdout
    assert "the previous config is restored" in bad.stdout and "healthy again" in bad.stdout
    assert sudo(lab, server, f"sha256sum {CONFIG}").split()[0] == good
    assert "k3sfleet-not-writable" in sudo(lab, server, f"cat {CONFIG}.failed")
    assert sudo(lab, server, "systemctl is-active k3s").strip() == "active"
    # The good settings converge again with nothing left to change.
    fixed = pyinfra(cluster["inventory"], "deploys/cluster.py", "-y")
    assert fixed.returncode == 0, fixed.stdout[-3000:]
    assert sudo(lab, server, f"sha256sum {CONFIG}").split()[0] == good


def test_a_start_that_fails_once_is_restarted_by_the_unit_not_rolled_back(
    cluster: dict[str, Any],
) -> None:
    """K3s's unit restarts a K3s that failed to start (Restart=always, RestartSec=5s); the
    deploy waits for that run instead of taking one failed start for a bad config."""
    lab, work = cluster["lab"], cluster["work"]
    server = lab.servers[0]
    sudo(lab, server, f"echo once > {FAULT_MARKER}")
    changed = lab.write_inventory(work / "debug.py", {"k3s_extra_config": {"debug": True}})
    run = pyinfra(changed, "deploys/cluster.py", "-y")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "restored" not in run.stdout
    assert yaml.safe_load(sudo(lab, server, f"cat {CONFIG}"))["debug"] is True
    assert sudo(lab, server, f"test -e {FAULT_MARKER} || echo gone").strip() == "gone"
    # real systemd restarted the unit once after the injected failure
    assert sudo(lab, server, "systemctl show -p NRestarts --value k3s").strip() == "1"
    assert "lab fault injected" in sudo(lab, server, "journalctl -u k3s -o cat --no-pager")
    back = pyinfra(cluster["inventory"], "deploys/cluster.py", "-y")
    assert back.returncode == 0, back.stdout[-3000:]
    assert "debug" not in yaml.safe_load(sudo(lab, server, f"cat {CONFIG}"))


def test_third_agent_joins_without_restarting_the_others(cluster: dict[str, Any]) -> None:
    lab, work = cluster["lab"], cluster["work"]
    before = started_at(lab)
    new = lab.add_host("agent")
    inventory = lab.write_inventory(work / "inventory3.py")
    boot = pyinfra(inventory, "deploys/bootstrap.py", "-y")
    assert boot.returncode == 0, boot.stdout[-3000:]
    run = pyinfra(inventory, "deploys/cluster.py", "-y")
    assert run.returncode == 0, run.stdout[-3000:]
    assert new.name in registered_nodes(lab)
    after = started_at(lab)
    assert {name: after[name] for name in before} == before
    assert sudo(lab, new, "systemctl is-active k3s-agent").strip() == "active"


def test_kubeconfig_merges_a_working_context_and_keeps_others(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    from kubernetes import client, config

    from k3sfleet.cli import main

    lab = cluster["lab"]
    kubeconfig = tmp_path / "config"
    unrelated = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "work", "cluster": {"server": "https://work.invalid:443"}}],
        "users": [{"name": "work", "user": {"token": "unrelated"}}],
        "contexts": [{"name": "work", "context": {"cluster": "work", "user": "work"}}],
        "current-context": "work",
    }
    kubeconfig.write_text(yaml.safe_dump(unrelated))
    rc = main(
        [
            "--project-dir",
            str(ROOT),
            "kubeconfig",
            "--inventory",
            str(cluster["inventory"]),
            "--context",
            "lab",
            "--kubeconfig",
            str(kubeconfig),
        ]
    )
    assert rc == 0
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    doc = yaml.safe_load(kubeconfig.read_text())
    assert doc["current-context"] == "work"
    sections = ("clusters", "users", "contexts")
    work = {k: [e for e in doc[k] if e["name"] == "work"] for k in sections}
    assert work == {k: unrelated[k] for k in sections}
    lab_cluster = next(c for c in doc["clusters"] if c["name"] == "lab")
    assert lab_cluster["cluster"]["server"] == f"https://{lab.servers[0].tailnet_ip}:6443"
    api = config.new_client_from_config(config_file=str(kubeconfig), context="lab")
    with lab.on_tailnet():  # as from an operator's machine on the tailnet
        names = {n.metadata.name for n in client.CoreV1Api(api).list_node().items}
    assert {"lab-server-1", "lab-agent-1", "lab-agent-2"} <= names


def pod_routes(lab: Any, host: Any) -> tuple[list[str] | None, list[str], bool]:
    """(advertised routes, primary routes, accept-routes) as the node's Tailscale reports them."""
    prefs = json.loads(sudo(lab, host, "tailscale debug prefs"))
    status = json.loads(sudo(lab, host, "tailscale status --json"))
    return prefs["AdvertiseRoutes"], status["Self"].get("PrimaryRoutes") or [], prefs["RouteAll"]


def test_k3s_advertises_each_pod_cidr_and_a_new_tailscale_up_keeps_it(
    cluster: dict[str, Any],
) -> None:
    """Each node advertises its own pod CIDR (stand-in k3s as pkg/agent/flannel/setup.go), the
    lab's policy makes it primary; `tailscale logout` (the README's way to change tags) drops
    it (tailscale v1.102.5 deletes the profile) and re-running bootstrap's `tailscale up
    --reset` brings it back, with accept-routes, without restarting K3s."""
    lab = cluster["lab"]
    cidrs = {}
    for host in lab.hosts:
        advertised, primary, accept = pod_routes(lab, host)
        assert advertised and len(advertised) == 1 and advertised == primary and accept, (
            host.name, advertised, primary, accept)
        cidrs[host.name] = advertised[0]
    assert len(set(cidrs.values())) == len(cidrs), cidrs  # one /24 per node
    agent = lab.agents[0]
    before = started_at(lab)[agent.name]
    sudo(lab, agent, "tailscale logout")
    assert pod_routes(lab, agent)[0] is None
    again = pyinfra(cluster["inventory"], "deploys/bootstrap.py", "-y", "--limit", agent.name)
    assert again.returncode == 0, again.stdout[-4000:]
    assert pod_routes(lab, agent) == ([cidrs[agent.name]], [cidrs[agent.name]], True)
    assert started_at(lab)[agent.name] == before


def test_reset_is_refused_without_confirmation_then_uninstalls(cluster: dict[str, Any]) -> None:
    """Last test of the module: it takes K3s away from the lab's hosts."""
    lab, work = cluster["lab"], cluster["work"]
    refused = pyinfra(cluster["inventory"], "deploys/reset.py", "-y")
    assert refused.returncode != 0 and "K3S_RESET_CONFIRM" in refused.stdout
    assert sudo(lab, lab.servers[0], "systemctl is-active k3s").strip() == "active"
    confirmed = lab.write_inventory(work / "reset.py", {"k3s_reset_confirm": "yes-destroy-k3s"})
    for host in lab.hosts:  # what pods leave behind on a real node (k3s-killall.sh's targets)
        sudo(lab, host, "ip netns add cni-k3sfleet-test && mkdir -p /var/lib/cni/networks/cbr0")
    done = pyinfra(confirmed, "deploys/reset.py", "-y")
    assert done.returncode == 0, done.stdout[-4000:]
    for host in lab.hosts:
        left = sudo(
            lab, host,
            "ls -d /usr/local/bin/k3s /etc/rancher/k3s /var/lib/rancher/k3s /var/lib/cni "
            f"/run/netns/cni-k3sfleet-test /etc/systemd/system/{service(host)}.service "
            "2>/dev/null || true",
        )
        assert left.strip() == "", f"{host.name} still has {left}"
        assert "cni-" not in sudo(lab, host, "ip netns list")
        assert sudo(lab, host, "tailscale ip -4").strip() == host.tailnet_ip
        assert pod_routes(lab, host)[:2] == (None, [])  # no route left to re-advertise
    again = pyinfra(confirmed, "deploys/reset.py", "-y")
    assert again.returncode == 0 and grand_total(again.stdout)["success"] == 0


@pytest.fixture(scope="module")
def ha(lab_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    lab = lab_factory(servers=3, agents=1)
    inventory = lab.write_inventory(tmp_path_factory.mktemp("ha") / "inventory.py")
    boot = pyinfra(inventory, "deploys/bootstrap.py", "-y")
    assert boot.returncode == 0, boot.stdout[-4000:]
    first = pyinfra(inventory, "deploys/cluster.py", "-y")
    return {"lab": lab, "inventory": inventory, "first": first}


def test_ha_exactly_one_cluster_init(ha: dict[str, Any]) -> None:
    lab, first = ha["lab"], ha["first"]
    assert first.returncode == 0, first.stdout[-4000:]
    assert "does not support embedded etcd across servers that are not on one LAN" in first.stdout
    s1 = lab.servers[0]
    configs = {h.name: yaml.safe_load(sudo(lab, h, f"cat {CONFIG}")) for h in lab.hosts}
    inits = [name for name, c in configs.items() if c.get("cluster-init")]
    assert inits == [s1.name]
    for h in lab.hosts[1:]:
        assert configs[h.name]["server"] == f"https://{s1.tailnet_ip}:6443"
    assert {h.name for h in lab.hosts} <= registered_nodes(lab)
    tokens = {sudo(lab, h, "cat /var/lib/rancher/k3s/server/node-token") for h in lab.servers}
    assert len(tokens) == 1  # one cluster CA and token


def test_ha_wiped_first_server_rejoins_never_a_second_cluster(ha: dict[str, Any]) -> None:
    """The first server loses its data (rebuilt); the others still hold the cluster.

    The deploy must make it join them, never run cluster-init again. What proves it on the
    stand-in: ``--dry`` plans the join, the written config joins lab-server-2, and the server
    took the cluster's token and CA from lab-server-2 (``db/joined.json``) instead of making a
    datastore of its own (kine's ``db/state.db``). The stand-in keeps the cluster's objects only on
    the server that started it, so it cannot serve the cluster after that server was wiped;
    whether the rejoined server becomes healthy is therefore not asserted here.
    """
    lab = ha["lab"]
    s1, s2 = lab.servers[0], lab.servers[1]
    token = sudo(lab, s2, "cat /var/lib/rancher/k3s/server/node-token")
    sudo(lab, s1, f"systemctl stop k3s; rm -rf /var/lib/rancher/k3s {CONFIG} {CONFIG}.previous")
    dry = pyinfra(ha["inventory"], "deploys/cluster.py", "--dry")
    assert dry.returncode == 0, dry.stdout[-4000:]
    assert "K3s server config (joins lab-server-2)" in dry.stdout
    assert "(cluster-init)" not in dry.stdout
    pyinfra(ha["inventory"], "deploys/cluster.py", "-y")
    config = yaml.safe_load(sudo(lab, s1, f"cat {CONFIG}"))
    assert "cluster-init" not in config
    assert config["server"] == f"https://{s2.tailnet_ip}:6443"
    db = "/var/lib/rancher/k3s/server/db"
    assert sudo(lab, s1, f"test ! -e {db}/state.db && cat {db}/joined.json") == (
        f'{{"server": "https://{s2.tailnet_ip}:6443"}}'
    )
    assert sudo(lab, s1, "cat /var/lib/rancher/k3s/server/node-token") == token


GITOPS_ENV = {
    "GITOPS_REPO_URL": "https://git.example.org/fleet.git",
    "DOMAIN": "fleet.example.org",
    "VELERO_BUCKET": "fleet-velero",
    "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com",
}


def test_init_cluster_one_command_from_fresh_hosts(
    lab_factory: Any, tmp_path: Path
) -> None:
    """deploys/init_cluster.py: bootstrap, cluster and Argo CD in one run; a re-run is a no-op."""
    import os

    lab = lab_factory(servers=1, agents=1)
    inventory = lab.write_inventory(tmp_path / "inventory.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGOCD_", "GITOPS_"))}
    env.update(GITOPS_ENV)

    def init() -> Any:
        return subprocess.run(  # noqa: S603
            [sys.executable, "-m", "pyinfra", "-y", str(inventory), "deploys/init_cluster.py"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
            stdin=subprocess.DEVNULL, env=env,
        )

    first = init()
    assert first.returncode == 0, first.stdout[-4000:]
    assert {h.name for h in lab.hosts} <= registered_nodes(lab)
    manifests = sudo(lab, lab.servers[0], "ls /var/lib/rancher/k3s/server/manifests")
    assert "argocd" in manifests
    before = started_at(lab)
    again = init()
    assert again.returncode == 0, again.stdout[-4000:]
    assert grand_total(again.stdout)["success"] == 0, again.stdout[-4000:]
    assert started_at(lab) == before
