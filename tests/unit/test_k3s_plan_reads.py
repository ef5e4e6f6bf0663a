"""The cluster plan reads a server's token and address once, however many hosts ask at once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gevent
import pytest
from pyinfra.context import ctx_state

import k3sfleet.deploys.k3s_node as k3s_node
from k3sfleet.deploys.k3s_node import ClusterPlan
from k3sfleet.secret import Secret


def plan() -> ClusterPlan:
    return ClusterPlan(
        servers=["s1"], agents=[f"a{i}" for i in range(8)], joins={"s1": None},
        states={}, addresses={}, joining=set(),
    )  # fmt: skip


def fake_inventory(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> list[str]:
    reads: list[str] = []

    class Host:
        data: dict[str, Any] = {"ssh_user": "k3sfleet"}

        def __init__(self, name: str) -> None:
            self.name = name

        def get_fact(self, fact: type, **kwargs: Any) -> Any:
            reads.append(f"{self.name}:{fact.__name__}")
            gevent.sleep(0.01)  # a remote command: other greenlets run meanwhile
            return answers[fact.__name__]

    def node_token(h: Host) -> Any:
        return h.get_fact(type("node_token", (), {}))

    monkeypatch.setattr(k3s_node, "inventory", SimpleNamespace(get_host=Host))
    monkeypatch.setattr(k3s_node, "node_token", node_token)
    return reads


def test_concurrent_agents_read_the_servers_token_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = fake_inventory(monkeypatch, {"node_token": Secret("K10abc::server:pw")})
    p = plan()
    jobs = [gevent.spawn(p.token_of, "s1") for _ in range(8)]
    gevent.joinall(jobs, raise_error=True)
    assert reads == ["s1:node_token"]
    assert {job.value.unmask() for job in jobs} == {"K10abc::server:pw"}


def test_addresses_of_different_hosts_are_read_in_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = fake_inventory(monkeypatch, {"TailscaleStatus": {"ips": ["100.64.0.11", "fd7a::1"]}})
    p = plan()
    jobs = [gevent.spawn(p.address, name) for name in ["a1", "a2", "a1", "a2"]]
    gevent.joinall(jobs, raise_error=True)
    assert sorted(reads) == ["a1:TailscaleStatus", "a2:TailscaleStatus"]
    assert [job.value for job in jobs] == ["100.64.0.11"] * 4


def test_plan_reads_every_node_and_the_token_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One round trip of waiting for the whole plan: the servers' and this run's nodes'
    K3sState and the first server's node-token are read concurrently."""
    running: list[str] = []
    overlap: list[int] = []

    class Host:
        def __init__(self, name: str, role: str) -> None:
            self.name = name
            self.data = {"ssh_user": "k3sfleet", "k3s_role": role}

        def get_fact(self, fact: type, **kwargs: Any) -> Any:
            running.append(f"{self.name}:{fact.__name__}")
            gevent.sleep(0.02)
            overlap.append(len(running))
            if fact.__name__ == "node_token":
                return Secret("K10abc::server:pw")
            k3s = {"datastore": "etcd", "join": "cluster-init", "tailnet_ip": "100.64.0.1"}
            return {"k3s": k3s}

    hosts = [Host("s1", "server"), *(Host(f"a{i}", "agent") for i in range(4))]
    monkeypatch.setattr(k3s_node, "node_token", lambda h: h.get_fact(type("node_token", (), {})))

    class Inventory:
        def __iter__(self) -> Any:
            return iter(hosts)

        def get_active_hosts(self) -> list[Host]:
            return hosts[2:]  # a --limit run: two agents

        def get_host(self, name: str) -> Host:
            return next(h for h in hosts if h.name == name)

    monkeypatch.setattr(k3s_node, "inventory", Inventory())
    with ctx_state.use(SimpleNamespace(is_executing=False)):  # (the read models live on it)
        p = k3s_node._compute_plan()
    assert sorted(running) == ["a1:HostSnapshot", "a2:HostSnapshot", "a3:HostSnapshot",
                               "s1:HostSnapshot", "s1:node_token"]  # fmt: skip
    assert min(overlap) == len(running)  # every read had started before the first one ended
    assert set(p.states) == {"s1", "a1", "a2", "a3"} and p.token_of("s1") is not None
    assert len(running) == 5  # token_of answered from the plan
