"""Who runs cluster-init and whom each server joins (k3sfleet.k3s_plan)."""

from __future__ import annotations

import pytest

from k3sfleet.k3s_plan import ClusterPlanError, joining_servers, plan_servers

S = ["s1", "s2", "s3"]
URL = {"s1": "https://100.64.0.11:6443", "s2": "https://100.64.0.12:6443", "s3": None}


def test_fresh_cluster_one_cluster_init_on_the_first_server() -> None:
    plan = plan_servers(S, {}, {}, URL)
    assert plan == {"s1": None, "s2": "s1", "s3": "s1"}
    assert joining_servers(plan, {}) == {"s2", "s3"}


def test_single_fresh_server_starts_the_cluster() -> None:
    assert plan_servers(["s1"], {"s1": None}, {}, {}) == {"s1": None}


def test_converged_cluster_keeps_every_join_setting() -> None:
    data = {s: "etcd" for s in S}
    joins = {"s1": "cluster-init", "s2": URL["s1"], "s3": URL["s1"]}
    plan = plan_servers(S, data, joins, URL)
    assert plan == {"s1": None, "s2": "s1", "s3": "s1"}
    assert joining_servers(plan, data) == set()


def test_rebuilt_first_server_joins_the_others_never_cluster_init() -> None:
    data = {"s1": None, "s2": "etcd", "s3": "etcd"}
    joins = {"s1": None, "s2": URL["s1"], "s3": URL["s1"]}
    plan = plan_servers(S, data, joins, URL)
    assert plan["s1"] == "s2"
    assert None not in plan.values()  # nobody runs cluster-init
    assert joining_servers(plan, data) == {"s1"}


def test_after_the_rebuild_the_first_server_keeps_joining_the_same_server() -> None:
    data = {s: "etcd" for s in S}
    joins = {"s1": URL["s2"], "s2": URL["s1"], "s3": URL["s1"]}
    assert plan_servers(S, data, joins, URL) == {"s1": "s2", "s2": "s1", "s3": "s1"}


def test_order_independent_new_server_listed_first_joins_existing_cluster() -> None:
    # A new server put at the top of the inventory must not start a second cluster.
    servers = ["new", "s1"]
    plan = plan_servers(servers, {"new": None, "s1": "etcd"}, {"s1": "cluster-init"}, URL)
    assert plan == {"new": "s1", "s1": None}


def test_sqlite_server_cannot_take_more_servers() -> None:
    with pytest.raises(ClusterPlanError, match="SQLite"):
        plan_servers(["s1", "s2"], {"s1": "sqlite", "s2": None}, {}, URL)


def test_no_server() -> None:
    with pytest.raises(ClusterPlanError):
        plan_servers([], {}, {}, {})
