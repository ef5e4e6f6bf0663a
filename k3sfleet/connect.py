"""TCP_NODELAY on pyinfra's SSH connections, through pyinfra's public state callbacks.

paramiko leaves Nagle's algorithm on, so every small request/response exchange of a remote
command waits for a delayed ACK: about 48 ms per command even on loopback. Turning TCP_NODELAY
on removes that wait. Under the pyinfra CLI each entry file turns it on for its host before any
fact is read (``k3sfleet.entry.under_pyinfra``); Python API users call
``enable_tcp_nodelay(state)`` after creating the state and before ``connect_all``.

Example::

    state = State(inventory, Config())
    enable_tcp_nodelay(state)
    connect_all(state)
"""

from __future__ import annotations

import socket
from typing import Any

from pyinfra.api.state import BaseStateCallback, State


def set_tcp_nodelay(sock: Any) -> bool:
    """Turn TCP_NODELAY on for ``sock`` if it is a TCP socket; return whether it was set."""
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


def connection_socket(host: Any) -> socket.socket | None:
    """The TCP socket under a connected pyinfra host's SSH connection, if it has one."""
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    sock = getattr(transport, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


class TcpNoDelay(BaseStateCallback):
    """A pyinfra state callback that sets TCP_NODELAY on each SSH connection as it opens."""

    @staticmethod
    def host_connect(state: State, host: Any) -> None:
        sock = connection_socket(host)
        if sock is not None:
            set_tcp_nodelay(sock)


def enable_tcp_nodelay(state: State) -> None:
    """Register ``TcpNoDelay`` on ``state`` once."""
    if not any(isinstance(h, TcpNoDelay) for h in state.callback_handlers):
        state.add_callback_handler(TcpNoDelay())


def set_host_tcp_nodelay(host: Any) -> bool:
    """Turn TCP_NODELAY on for an already connected pyinfra host; return whether it was set."""
    sock = connection_socket(host) if getattr(host, "connected", False) else None
    return sock is not None and set_tcp_nodelay(sock)
