"""TCP_NODELAY on pyinfra's SSH connections (k3sfleet.connect), on real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State

from k3sfleet.connect import TcpNoDelay, enable_tcp_nodelay, set_host_tcp_nodelay, set_tcp_nodelay


def nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    yield client, peer
    for s in (client, peer, server):
        s.close()


def fake_host(sock: Any, connected: bool = True) -> Any:
    transport = SimpleNamespace(sock=sock)
    client = SimpleNamespace(get_transport=lambda: transport)
    return SimpleNamespace(connected=connected, connector=SimpleNamespace(client=client))


def test_set_on_a_tcp_socket_only(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    assert nodelay(client) == 0  # the kernel's default, which paramiko keeps
    assert set_tcp_nodelay(client) is True
    assert nodelay(client) != 0
    a, b = socket.socketpair()  # AF_UNIX: no such option, left alone
    assert set_tcp_nodelay(a) is False
    a.close()
    b.close()


def test_host_connection_gets_it(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    assert set_host_tcp_nodelay(fake_host(client, connected=False)) is False
    assert nodelay(client) == 0
    assert set_host_tcp_nodelay(fake_host(client)) is True
    assert nodelay(client) != 0


def test_state_callback_registered_once_and_sets_it_on_connect(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    state = State(Inventory((["node-1"], {})), Config())
    enable_tcp_nodelay(state)
    enable_tcp_nodelay(state)
    handlers = [h for h in state.callback_handlers if isinstance(h, TcpNoDelay)]
    assert len(handlers) == 1
    client, _ = tcp_pair
    state.trigger_callbacks("host_connect", fake_host(client))
    assert nodelay(client) != 0


def test_entry_files_set_it_for_their_host(
    monkeypatch: pytest.MonkeyPatch, tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    from pyinfra.context import ctx_host, ctx_state

    from k3sfleet import entry

    client, _ = tcp_pair
    assert entry.under_pyinfra() is False  # no pyinfra state: importing an entry file is inert
    assert nodelay(client) == 0
    state = State(Inventory((["node-1"], {})), Config())
    with ctx_state.use(state), ctx_host.use(fake_host(client)):
        assert entry.under_pyinfra() is True
    assert nodelay(client) != 0
