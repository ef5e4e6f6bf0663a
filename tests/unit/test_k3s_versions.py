"""Known-bad K3s versions (k3sfleet.versions) and the preflight checks of the cluster entries.

k3s#14515 (etcd moved onto the VPN address since k3s#14000) is refused only where etcd was not
on the tailnet address already: with vpn-auth and without ``flannel-iface: tailscale0`` (or
with a ``node-ip``). K3s's server.go takes node-ip, and from it etcd's address, from
flannel-iface when node-ip is unset, so our default config has etcd on the tailnet address
before and after the change (see the comment above ``KNOWN_BAD``).
"""

from __future__ import annotations

import pytest

from k3sfleet.deploys.k3s_node import DEFAULTS as K3S_NODE_DEFAULTS
from k3sfleet.inventory import Node
from k3sfleet.preflight import entry_problems
from k3sfleet.settings import Settings
from k3sfleet.versions import KNOWN_BAD, TAILNET_INTERFACE, etcd_on_tailnet, parse, refusal


@pytest.mark.parametrize(
    "version",
    ["v1.36.1+k3s1", "v1.36.3+k3s1", "v1.35.5+k3s1", "v1.35.6+k3s1", "v1.34.8+k3s1"],
)
def test_etcd_on_vpn_ip_regression_is_refused_where_etcd_moves(version: str) -> None:
    problem = refusal(version, vpn_auth=True, etcd_on_tailnet=False)
    assert problem is not None
    assert "k3s#14515" in problem and "K3S_ALLOW_VERSIONS" in problem and version in problem
    assert "flannel-iface: tailscale0" in problem  # says which configuration is safe


@pytest.mark.parametrize("version", ["v1.36.1+k3s1", "v1.35.5+k3s1", "v1.34.8+k3s1"])
def test_etcd_already_on_the_tailnet_is_not_refused(version: str) -> None:
    assert refusal(version, vpn_auth=True, etcd_on_tailnet=True) is None


def test_which_servers_have_etcd_on_the_tailnet() -> None:
    # a missing key is the deploy's default (DEFAULTS blocks are literals, read without
    # importing the deploy, so the two are kept in step here)
    assert K3S_NODE_DEFAULTS["k3s_flannel_iface"].value == TAILNET_INTERFACE
    assert etcd_on_tailnet({})
    assert etcd_on_tailnet({"k3s_flannel_iface": "tailscale0", "k3s_extra_config": {}})
    assert not etcd_on_tailnet({"k3s_flannel_iface": "eth1"})
    assert not etcd_on_tailnet({"k3s_flannel_iface": ""})
    assert not etcd_on_tailnet({"k3s_extra_config": {"node-ip": "10.0.0.5"}})


@pytest.mark.parametrize(
    "version", ["v1.36.0+k3s1", "v1.35.4+k3s1", "v1.34.7+k3s1", "v1.34.2+k3s1", "v1.33.6+k3s1"]
)
def test_releases_before_the_regression_pass(version: str) -> None:
    assert refusal(version, vpn_auth=True, etcd_on_tailnet=False) is None


def test_regression_only_matters_with_vpn_auth() -> None:
    assert refusal("v1.35.5+k3s1", vpn_auth=False, etcd_on_tailnet=False) is None


def test_allow_list_overrides() -> None:
    allow = "v1.34.8+k3s1, v1.35.5+k3s1"
    assert refusal("v1.35.5+k3s1", allow=allow, vpn_auth=True, etcd_on_tailnet=False) is None
    assert refusal("v1.36.1+k3s1", allow="v1.35.5+k3s1", vpn_auth=True) is not None


def test_not_a_release_name() -> None:
    problem = refusal("latest")
    assert problem is not None and "not a k3s release name" in problem
    assert parse("v1.34.2+k3s1") == (1, 34, 2, 1)
    assert parse("1.34.2") is None


def test_every_entry_names_its_reason() -> None:
    assert KNOWN_BAD and all("k3s#" in bad.reason for bad in KNOWN_BAD)


NODES = [Node("s1", role="server", address="192.0.2.1", ssh_user="root")]


def settings(**env: str) -> Settings:
    base = {"TAILSCALE_AUTH_KEY": "tskey-test"}
    return Settings.load("/nonexistent", {**base, **env}, use_vault=False)


def test_preflight_refuses_bad_version_for_cluster_and_init() -> None:
    s = settings(K3S_VERSION="v1.35.5+k3s1")
    assert not [p for p in entry_problems(["cluster"], s, NODES) if "K3S_" in p]  # defaults
    moved = [
        Node("s1", role="server", address="192.0.2.1", ssh_user="root",
             data={"k3s_flannel_iface": "eth1"}),
        Node("a1", role="agent", address="192.0.2.2", ssh_user="root"),
    ]  # fmt: skip
    problems = [p for p in entry_problems(["cluster", "init_cluster"], s, moved) if "K3S_" in p]
    assert len(problems) == 2
    assert all("known bad" in p for p in problems)
    assert problems[0].endswith("(needed by deploys/cluster.py)")
    assert problems[1].endswith("(needed by deploys/init_cluster.py)")


def test_init_cluster_needs_what_argocd_needs() -> None:
    problems = entry_problems(["init_cluster"], settings(), NODES)
    assert any(p.startswith("DOMAIN is not set") for p in problems)
    assert not any("DOMAIN" in p for p in entry_problems(["cluster"], settings(), NODES))
    assert entry_problems(["cluster"], settings(K3S_VERSION="v1.34.2+k3s1"), NODES) == []


def test_preflight_etcd_s3_needs_r2() -> None:
    problems = entry_problems(["cluster"], settings(K3S_ETCD_S3="true"), NODES)
    text = "\n".join(problems)
    for name in ("K3S_ETCD_S3_BUCKET", "R2_ENDPOINT", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"):
        assert name in text


def test_preflight_reset_needs_confirmation() -> None:
    assert entry_problems(["reset"], settings(), NODES)
    assert entry_problems(["reset"], settings(K3S_RESET_CONFIRM="yes"), NODES)
    assert entry_problems(["reset"], settings(K3S_RESET_CONFIRM="yes-destroy-k3s"), NODES) == []
