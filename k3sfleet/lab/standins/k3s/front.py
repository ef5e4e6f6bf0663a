"""The K3s supervisor's port (6443) in front of the real kube-apiserver (6444).

K3s listens on 6443 with one router (k3s-io/k3s pkg/server/handlers/router.go, v1.34.2+k3s1):
``/cacerts`` and ``/ping`` answer anyone; ``/v1-k3s/server-bootstrap`` needs the ``k3s:server``
role (the cluster token's user), checked by ``auth.HasRole`` (pkg/server/auth/auth.go: a known
user without the role gets 403 "forbidden"; the stand-in's 401 body "not authorized" is its
own wording); every path it does not handle falls through
(``NotFoundHandler``) to ``APIServer``, the kube-apiserver's own handler, which authenticates
the request itself (client certificates of the client CA, service-account tokens).

K3s runs kube-apiserver in its own process and hands it the request; this front is a separate
process, so it hands kube-apiserver the identity the client proved instead: it verifies the
client certificate against the client CA, strips any ``X-Remote-*`` header the client sent, and
forwards the request over TLS with the ``client-auth-proxy`` certificate, the user (CN) in
``X-Remote-User`` and each organization in ``X-Remote-Group`` -- kube-apiserver's
request-header authentication, configured exactly as K3s configures it
(pkg/daemons/control/server.go ``apiServer``: requestheader-client-ca-file,
requestheader-allowed-names=system:auth-proxy). Requests without a certificate go through
unchanged (a bearer token is then kube-apiserver's to check). Each forwarded request gets its
own upstream connection and the bytes are relayed both ways until either side closes, so
watches, exec and port-forward upgrades pass as they are.

Example::

    front = Front(tls, ("0.0.0.0", 6443), ("127.0.0.1", 6444),
                  passwords={"s3cret": "k3s:server"})
    front.start()
    ...
    front.stop()
"""

from __future__ import annotations

import base64
import hmac
import json
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Mapping
from typing import Any

from .pki import ClusterTLS, issue

MAX_HEADER = 64 * 1024
BOOTSTRAP_FILES = ("server-ca.crt", "server-ca.key", "client-ca.crt", "client-ca.key",
                   "request-header-ca.crt", "request-header-ca.key", "service.key")


class _Request:
    """The request line and headers the front read from a client."""

    def __init__(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.target, self.version = (lines[0].split(" ", 2) + ["", ""])[:3]
        self.path = self.target.split("?", 1)[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                self.headers.append((name.strip(), value.strip()))

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


def _read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """The bytes up to the blank line ending the headers, and what came after them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk or len(data) > MAX_HEADER:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _recv(source: ssl.SSLSocket) -> bytes | None:
    """What ``source`` has to give now (b"" once closed), None if nothing yet."""
    source.settimeout(0)
    try:
        return source.recv(65536)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return None
    finally:
        source.settimeout(None)


def _relay(a: ssl.SSLSocket, b: ssl.SSLSocket) -> None:
    """Copy bytes both ways in one thread until either side closes (an SSL object is not
    read and written from two threads at once).

    Neither ``select`` nor ``pending()`` sees TLS bytes OpenSSL has read from the socket but
    not yet decrypted (a request body that came right behind its headers): waiting on them
    alone left such a body unrelayed until kube-apiserver gave up (504 after 60 s). So every
    0.2 s without news each side is also asked without blocking.
    """
    peers = {a: b, b: a}
    try:
        while True:
            ready = ([s for s in peers if s.pending()]
                     or select.select(list(peers), [], [], 0.2)[0] or list(peers))
            for source in ready:
                chunk = _recv(source)
                if chunk is None:
                    continue
                if not chunk:
                    return
                peers[source].sendall(chunk)
    except OSError:
        return


def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        front = self.server.front
        try:
            conn = front.server_context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with conn:
            read = _read_head(conn)
            if read is None:
                return
            request = _Request(read[0])
            if request.path == "/cacerts":
                self._send(conn, 200, front.tls.server_ca.read_bytes(), "text/plain")
            elif request.path == "/ping":
                self._send(conn, 200, b"pong", "text/plain")
            elif request.path == f"/v1-{front.program}/server-bootstrap":
                self._bootstrap(conn, request)
            elif request.path == f"/v1-{front.program}/client-kubelet.crt":
                self._client_kubelet(conn, request)
            else:
                front.forward(conn, request, read[1])

    def _send(self, conn: ssl.SSLSocket, code: int, body: bytes, content_type: str) -> None:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}.get(
            code, "")
        conn.sendall(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )

    def _bootstrap(self, conn: ssl.SSLSocket, request: _Request) -> None:
        """The cluster CAs for a joining server (pkg/server/handlers: Bootstrap)."""
        front = self.server.front
        role = front.password_role(request.header("Authorization"))
        if role is None:
            body = _status_body(401, "Unauthorized", "not authorized")
            self._send(conn, 401, json.dumps(body).encode(), "application/json")
        elif role != f"{front.program}:server":
            body = _status_body(403, "Forbidden", "forbidden")
            self._send(conn, 403, json.dumps(body).encode(), "application/json")
        else:
            files = {f: base64.b64encode((front.tls.directory / f).read_bytes()).decode()
                     for f in BOOTSTRAP_FILES if (front.tls.directory / f).exists()}
            self._send(conn, 200, json.dumps(files).encode(), "application/json")


    def _client_kubelet(self, conn: ssl.SSLSocket, request: _Request) -> None:
        """A node's client certificate, ``system:node:<name>`` in ``system:nodes``, for any
        token user (pkg/server/handlers/handlers.go ``ClientKubeletCert``: the node name
        comes from the ``k3s-Node-Name`` header; the reply is the certificate chain, then its
        key). The node-password check K3s adds (pkg/nodepassword) is not imitated."""
        front = self.server.front
        role = front.password_role(request.header("Authorization"))
        name = request.header(f"{front.program}-Node-Name")
        if role is None:
            body = _status_body(401, "Unauthorized", "not authorized")
            self._send(conn, 401, json.dumps(body).encode(), "application/json")
            return
        if not name:
            self._send(conn, 400, b"node name not set", "text/plain")
            return
        cert, key = issue(*front.tls.pair("client-ca"), f"system:node:{name}",
                          organization="system:nodes", client=True)
        self._send(conn, 200, cert + front.tls.client_ca.read_bytes() + key, "text/plain")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    front: Front


class Front:
    """K3s's 6443: its own paths, everything else relayed to kube-apiserver."""

    def __init__(
        self,
        tls: ClusterTLS,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        *,
        passwords: Mapping[str, str],
        program: str = "k3s",
    ) -> None:
        self.tls = tls
        self.listen = listen
        self.upstream = upstream
        self.passwords = dict(passwords)  # token password -> role (k3s:server, k3s:agent)
        self.program = program
        directory = tls.directory
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(directory / "serving-kube-apiserver.crt",
                                            directory / "serving-kube-apiserver.key")
        self.server_context.load_verify_locations(tls.client_ca)
        self.server_context.verify_mode = ssl.CERT_OPTIONAL
        self.server_context.set_alpn_protocols(["http/1.1"])
        self.client_context = ssl.create_default_context(cafile=str(tls.server_ca))
        self.client_context.check_hostname = False
        self.client_context.load_cert_chain(directory / "client-auth-proxy.crt",
                                            directory / "client-auth-proxy.key")
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._server = _Server(self.listen, _Handler)
        self._server.front = self
        threading.Thread(target=self._server.serve_forever, daemon=True, name="front").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def password_role(self, authorization: str) -> str | None:
        """The role of a ``Basic`` ``<user>:<token password>`` credential, or None."""
        if not authorization.startswith("Basic "):
            return None
        try:
            password = base64.b64decode(authorization[6:]).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
        for known, role in self.passwords.items():
            if password and hmac.compare_digest(password.encode(), known.encode()):
                return role
        return None

    def forward(self, conn: ssl.SSLSocket, request: _Request, rest: bytes) -> None:
        """Relay one request (and, for an upgrade, the stream after it) to kube-apiserver."""
        headers = [(k, v) for k, v in request.headers
                   if not k.lower().startswith("x-remote-") and k.lower() != "connection"]
        cert = conn.getpeercert()
        if cert:  # verified against the client CA during the handshake
            subject: Any = cert.get("subject", ())
            for rdn in subject:
                for key, value in rdn:
                    if key == "commonName":
                        headers.append(("X-Remote-User", str(value)))
                    elif key == "organizationName":
                        headers.append(("X-Remote-Group", str(value)))
        upgrade = request.header("Upgrade")
        if upgrade:
            headers.append(("Connection", "Upgrade"))
        else:  # one request per relayed connection: the stream ends with the response
            headers.append(("Connection", "close"))
        head = f"{request.method} {request.target} {request.version}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers
        ) + "\r\n"
        try:
            raw = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            body = json.dumps(_status_body(503, "ServiceUnavailable", "apiserver not ready"))
            conn.sendall(f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                         f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
                         .encode())
            return
        raw.settimeout(None)
        with self.client_context.wrap_socket(raw, server_hostname=self.upstream[0]) as up:
            up.sendall(head.encode("latin-1") + rest)
            _relay(conn, up)
