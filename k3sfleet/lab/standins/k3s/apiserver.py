"""The stand-in Kubernetes API server: HTTPS, client-certificate and token authentication,
discovery, and the REST paths of the resources in resources.py, backed by store.Store.

Authentication, as k3s does it: a client certificate signed by the cluster's client CA (the
admin kubeconfig's; user = its CN), or HTTP basic auth ``<user>:<password>`` / a bearer token
whose password is the cluster token or agent token (what agents and joining servers use).
/cacerts, /ping, /version and the health endpoints answer anonymously. Anything else
unauthenticated gets 401.

Example::

    api = ApiServer(Store(), ("127.0.0.1", 0), tls=(cert, key, client_ca),
                    passwords={"s3cret": "system:k3s:server"})
    api.start()                 # serves in a thread; api.port is the bound port
    ...
    api.stop()
"""

from __future__ import annotations

import base64
import hmac
import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .resources import ResourceType
from .selectors import SelectorError
from .store import ApiError, Obj, Store

# extra route: (method, path) -> handler(request, user, body) -> (code, body or bytes)
Route = Callable[["_Handler", str, Any], tuple[int, Any]]
ANONYMOUS_PATHS = ("/cacerts", "/ping", "/version", "/healthz", "/readyz", "/livez")


@dataclass
class Upstream:
    """Where a joining server forwards the Kubernetes API (its cluster's first server)."""

    url: str
    ca_file: Path
    username: str
    password: str
    context: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(cafile=str(self.ca_file))
        self.context.check_hostname = False


def version_info(version: str) -> Obj:
    """/version like a k3s API server (``v1.34.2+k3s1`` -> major 1, minor 34)."""
    major, minor = version.lstrip("v").split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": version,
        "gitCommit": "standin",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: with Nagle on, each response would wait for
    # the client's delayed ACK (~40 ms), which a real apiserver does not do
    disable_nagle_algorithm = True
    _raw = b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        """Quiet: the journal gets the write log, not one line per request."""

    # -- plumbing ----------------------------------------------------------------------------
    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        """The request body (read by _dispatch) as JSON, or YAML for apply patches."""
        raw = self._raw
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            import yaml  # apply-patch+yaml bodies

            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as error:
                raise ApiError(400, "BadRequest", f"the request body is invalid: {error}") from None

    def _user(self) -> str | None:
        api = self.server.api
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if cert:
            subject: Any = cert.get("subject", ())
            for rdn in subject:
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
            return "unknown"
        header = self.headers.get("Authorization", "")
        password = ""
        if header.startswith("Basic "):
            try:
                password = base64.b64decode(header[6:]).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return None
        elif header.startswith("Bearer "):
            token = header[7:].strip()
            password = token.rsplit(":", 1)[-1] if "::" in token else token
        for known, identity in api.passwords.items():
            if password and hmac.compare_digest(password.encode(), known.encode()):
                return identity
        return None

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length > 0 else b""  # always drain the body
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            user = self._user()
            if user is None and path not in ANONYMOUS_PATHS:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            user = user or "system:anonymous"
            route = api.routes.get((method, path))
            if route is not None:
                code, body = route(self, user, self._body())
                self._send(
                    code, body, "application/json" if not isinstance(body, bytes) else "text/plain"
                )
                return
            if api.upstream and (
                path.startswith(("/api/", "/apis/", "/v1-k3s/heartbeat"))
                or path in ("/api", "/apis")
            ):
                self._proxy(method)
                return
            code, body = api.handle(
                method,
                path,
                query,
                self.headers.get("Content-Type", ""),
                self._body() if method in ("POST", "PUT", "PATCH") else None,
                user,
            )
            self._send(code, body)
        except ApiError as error:
            self._send(error.code, error.status())
        except SelectorError as error:
            self._send(400, ApiError(400, "BadRequest", str(error)).status())

    def _proxy(self, method: str) -> None:
        upstream = self.server.api.upstream
        assert upstream is not None
        data = self._raw or None
        auth = base64.b64encode(f"{upstream.username}:{upstream.password}".encode()).decode()
        request = urllib.request.Request(
            upstream.url.rstrip("/") + self.path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Basic {auth}",
                "Content-Type": self.headers.get("Content-Type", "application/json"),
            },
        )
        try:
            with urllib.request.urlopen(request, context=upstream.context, timeout=10) as reply:
                self._send(reply.status, reply.read())
        except urllib.error.HTTPError as error:
            self._send(error.code, error.read())
        except (urllib.error.URLError, OSError) as error:
            self._send(
                503,
                ApiError(
                    503, "ServiceUnavailable", f"upstream server unavailable: {error}"
                ).status(),
            )

    def do_GET(self) -> None:  # noqa: N802 (stdlib names)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: ApiServer


class ApiServer:
    """The API over HTTPS (or plain HTTP when tls is None, for tests only)."""

    def __init__(
        self,
        store: Store,
        address: tuple[str, int],
        *,
        tls: tuple[Path, Path, Path] | None = None,
        passwords: dict[str, str] | None = None,
        version: str = "v1.34.2+k3s1",
        cacerts: bytes = b"",
        upstream: Upstream | None = None,
    ) -> None:
        self.store = store
        self.passwords = passwords or {}  # token password -> identity (user in the write log)
        self.version = version
        self.upstream = upstream
        self.routes: dict[tuple[str, str], Route] = {}
        self.route("GET", "/cacerts", lambda r, u, b: (200, cacerts))
        self.route("GET", "/ping", lambda r, u, b: (200, b"pong"))
        for health in ("/healthz", "/readyz", "/livez"):
            self.route("GET", health, lambda r, u, b: (200, b"ok"))
        self.httpd = _HTTPServer(address, _Handler)
        self.httpd.api = self
        if tls is not None:
            cert, key, client_ca = tls
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert), str(key))
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_OPTIONAL
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def route(self, method: str, path: str, handler: Route) -> None:
        """Add a non-Kubernetes endpoint (k3s's own /cacerts, /v1-k3s/... )."""
        self.routes[(method, path)] = handler

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, daemon=True, name="standin-api"
        )
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)

    # -- the Kubernetes REST paths -----------------------------------------------------------
    def _discovery(self, path: str) -> Obj | None:
        types = self.store.registry.all()
        if path == "/version":
            return version_info(self.version)
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for t in types:
                if t.group:
                    groups.setdefault(t.group, [])
                    if t.version not in groups[t.group]:
                        groups[t.group].append(t.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in sorted(groups.items())
                ],
            }
        parts = path.strip("/").split("/")
        if (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis" and len(parts) == 3):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            if parts[0] == "apis":
                group, version = parts[1], parts[2]
            served = [t for t in types if t.group == group and t.version == version]
            if not served:
                return None
            resources: list[Obj] = []
            for t in served:
                verbs = [
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ]
                resources.append(
                    {
                        "name": t.plural,
                        "singularName": t.singular,
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": verbs,
                        "shortNames": list(t.short_names),
                    }
                )
                if t.status_subresource:
                    resources.append(
                        {
                            "name": f"{t.plural}/status",
                            "singularName": "",
                            "namespaced": t.namespaced,
                            "kind": t.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
                if t.kind == "Pod":
                    resources.append(
                        {
                            "name": "pods/eviction",
                            "singularName": "",
                            "namespaced": True,
                            "group": "policy",
                            "version": "v1",
                            "kind": "Eviction",
                            "verbs": ["create"],
                        }
                    )
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources,
            }
        return None

    def _resolve(self, path: str) -> tuple[ResourceType, str, str, str]:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        rtype = self.store.registry.by_path(group, version, rest[0])
        if rtype is None or len(rest) > 3 or (namespace and not rtype.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource not in ("", "status", "eviction", "finalize") or (
            subresource == "eviction" and rtype.kind != "Pod"
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rtype, namespace, name, subresource

    def handle(
        self, method: str, path: str, query: dict[str, str], content_type: str, body: Any, user: str
    ) -> tuple[int, Any]:
        """One API request (already authenticated) -> (status code, JSON body)."""
        if method == "GET":
            found = self._discovery(path)
            if found is not None:
                return 200, found
        rtype, namespace, name, sub = self._resolve(path)
        store, dry = self.store, query.get("dryRun") == "All"
        if rtype.namespaced and name and not namespace:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET" and name:
            return 200, store.get(rtype, namespace, name)
        if method == "GET":
            listed = store.list(
                rtype,
                namespace or None,
                query.get("labelSelector", ""),
                query.get("fieldSelector", ""),
            )
            if query.get("watch") in ("true", "1"):
                lines = [json.dumps({"type": "ADDED", "object": item}) for item in listed["items"]]
                return 200, ("\n".join(lines) + "\n").encode() if lines else b""
            return 200, listed
        if method == "POST" and sub == "eviction":
            return 201, store.evict(namespace, name, user, dry)
        if method == "POST" and not name:
            return 201, store.create(rtype, namespace, body, user, dry)
        if method == "PUT" and name:
            return 200, store.replace(rtype, namespace, name, body, user, sub, dry)
        if method == "PATCH" and name:
            created = "apply-patch" in content_type and not self._exists(rtype, namespace, name)
            obj = store.patch(rtype, namespace, name, body, content_type, user, sub, dry)
            return (201 if created else 200), obj
        if method == "DELETE" and name:
            return 200, store.delete(rtype, namespace, name, user, dry)
        if method == "DELETE":
            listed = store.list(
                rtype,
                namespace or None,
                query.get("labelSelector", ""),
                query.get("fieldSelector", ""),
            )
            for item in listed["items"]:
                store.delete(
                    rtype,
                    item["metadata"].get("namespace", ""),
                    item["metadata"]["name"],
                    user,
                    dry,
                )
            return 200, listed
        raise ApiError(
            405,
            "MethodNotAllowed",
            f"the server does not allow this method on the requested resource ({method})",
        )

    def _exists(self, rtype: ResourceType, namespace: str, name: str) -> bool:
        try:
            self.store.get(rtype, namespace, name)
        except ApiError:
            return False
        return True
