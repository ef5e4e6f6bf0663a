"""A tiny HTTPS JSON client for the stand-in's own calls to a (stand-in) API server.

Verifies the server's chain against the cluster CA; like k3s's agents it does not check the host
name (k3s's listener adds every name it is reached by to its certificate). Requests carry the
token's password as HTTP basic auth (k3s-io/k3s v1.34.2+k3s1 pkg/clientaccess/token.go ``get``:
``SetBasicAuth(username, password)``).

Example::

    api = KubeClient("https://10.0.0.1:6443", ca_pem, "node", "password")
    code, node = api.request("GET", "/api/v1/nodes/agent-1")
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from . import log


def fetch_cacerts(server: str, timeout: float = 10) -> bytes:
    """GET <server>/cacerts without verifying (the token's CA hash is the check), as k3s does
    (token.go ``getCACerts``: with the insecure client once the host's CA bundle fails; the
    stand-in skips that first, verifying attempt)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(
        server.rstrip("/") + "/cacerts", context=context, timeout=timeout
    ) as reply:
        return bytes(reply.read())


def trusted_cacerts(url: str, ca_hash: str | None, *, waiting: str, pause: float,
                    give_up: tuple[int, str] | None, refused: str) -> bytes:
    """``url``'s ``/cacerts`` once it answers, checked against the CA hash a K10 token pins.

    Logs ``waiting: <error>`` and retries every ``pause`` s; ``give_up=(tries, message)`` ends
    with ``message`` after ``tries`` failures (``None``: waits for ever, as agents do). A CA
    whose hash differs ends with ``refused: `` and token.go's message (k3s-io/k3s
    v1.34.2+k3s1 pkg/clientaccess/token.go ``validateCAHash`` over ``hashCA``: the sha256 of
    the PEM bytes served).
    """
    attempt = 0
    while True:
        try:
            cacerts = fetch_cacerts(url)
            break
        except (urllib.error.URLError, OSError) as error:
            attempt += 1
            if give_up is not None and attempt >= give_up[0]:
                log.fatal(give_up[1])
            log.info(f"{waiting}: {error}")
            time.sleep(pause)
    served = hashlib.sha256(cacerts).hexdigest()
    if ca_hash and ca_hash != served:
        log.fatal(f"{refused}: token CA hash does not match the Cluster CA certificate hash: "
                  f"{ca_hash} != {served}")
    return cacerts


class KubeClient:
    """Requests with basic auth (token password), TLS verified against the cluster CA."""

    def __init__(
        self, server: str, ca_pem: bytes, username: str, password: str,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        """With ``cert`` (certificate, key files) the client authenticates by certificate."""
        self.server = server.rstrip("/")
        self.context = ssl.create_default_context(cadata=ca_pem.decode())
        self.context.check_hostname = False
        self.auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.cert = cert
        if cert is not None:
            self.context.load_cert_chain(*cert)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={
                **({} if self.cert else {"Authorization": f"Basic {self.auth}"}),
                "Content-Type": content_type,
                "Accept": "application/json",
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=timeout) as reply:
                raw = reply.read()
                code = reply.status
        except urllib.error.HTTPError as error:
            raw, code = error.read(), error.code
        try:
            return code, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return code, raw.decode(errors="replace")
