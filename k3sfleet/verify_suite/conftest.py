"""Verification of a live cluster: ``k3sfleet verify``, in a clone also
``pytest k3sfleet/verify_suite --inventory inventory.py``.

The hosts come from the pyinfra inventory file given with ``--inventory`` (the same one the
deploys use), reached over SSH with its user, key and known_hosts (host keys checked). Without
``--inventory`` nothing here is collected, so the project's own test run skips it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3sfleet.facts.tailscale import TailscaleStatus
from k3sfleet.kube import HostInfo, cluster_api, hosts_from_inventory
from k3sfleet.verify import testinfra_host


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--inventory",
        default=None,
        help="pyinfra inventory file of the cluster to verify (for example inventory.py)",
    )


def _inventory(config: pytest.Config) -> str | None:
    try:
        return config.getoption("inventory")  # type: ignore[no-any-return]
    except ValueError:
        return None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name == "conftest.py":
        return None
    return True if not _inventory(config) else None


_NODES: dict[str, list[HostInfo]] = {}


def nodes_of(config: pytest.Config) -> list[HostInfo]:
    path = _inventory(config)
    assert path, "--inventory is required"
    if path not in _NODES:
        _NODES[path] = hosts_from_inventory(path)
    return _NODES[path]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    nodes = nodes_of(metafunc.config)
    for fixture, role in (("node", None), ("server", "server"), ("agent", "agent")):
        if fixture in metafunc.fixturenames:
            chosen = [n for n in nodes if role is None or n.role == role]
            metafunc.parametrize(fixture, chosen, ids=[n.name for n in chosen], scope="session")


@pytest.fixture(scope="session")
def nodes(request: pytest.FixtureRequest) -> list[HostInfo]:
    return nodes_of(request.config)


_HOSTS: dict[str, Any] = {}


def host_for(node: HostInfo) -> Any:
    if node.name not in _HOSTS:
        _HOSTS[node.name] = testinfra_host(node)
    return _HOSTS[node.name]


@pytest.fixture
def host(request: pytest.FixtureRequest) -> Any:
    for name in ("node", "server", "agent"):
        if name in request.fixturenames:
            return host_for(request.getfixturevalue(name))
    raise pytest.UsageError("a verify check needs a node, server or agent parameter")


def tailscale_status(host: Any) -> dict[str, Any]:
    """``tailscale status --json`` read as the deploys read it (``TailscaleStatus``'s command:
    a tailscaled that is still starting is waited for); ``{}`` when it does not answer."""
    out = host.run(TailscaleStatus().command())
    if out.rc != 0 or not out.stdout.strip():
        return {}
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def first_server_tailnet_address(nodes: list[HostInfo]) -> str | None:
    first = next(n for n in nodes if n.role == "server")
    ips = tailscale_status(host_for(first)).get("Self", {}).get("TailscaleIPs") or []
    v4 = [ip for ip in ips if ":" not in ip]
    return v4[0] if v4 else None


@pytest.fixture(scope="module")
def api(nodes: list[HostInfo]) -> Iterator[Any]:
    """A Kubernetes API client (k3sfleet.kube: SSH tunnel to a server)."""
    with cluster_api(nodes) as api_client:
        yield api_client
