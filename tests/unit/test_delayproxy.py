"""The WAN profile's delaying proxy really adds its delay each way, and passes bytes intact."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from delayproxy import DelayProxy  # noqa: E402


def test_round_trip_is_delayed_both_ways_and_data_intact() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def echo() -> None:
        conn, _ = server.accept()
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.close()

    threading.Thread(target=echo, daemon=True).start()
    proxy = DelayProxy(server.getsockname(), delay=0.03).start()
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port))
        payload = bytes(range(256)) * 64
        start = time.monotonic()
        client.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += client.recv(65536)
        elapsed = time.monotonic() - start
        client.close()
    finally:
        proxy.stop()
        server.close()
    assert received == payload
    assert elapsed >= 0.06, f"round trip took {elapsed:.3f}s, less than 2 x 30 ms"
