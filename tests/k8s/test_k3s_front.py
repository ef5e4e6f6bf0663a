"""K3s's 6443 in front of the real kube-apiserver (standins/k3s/front.py).

The real control plane (kine + kube-apiserver + controller-manager + scheduler from
k8s.io/kubernetes v1.34.2) runs on 127.0.0.1 on one port, the front on another, as K3s's
supervisor (6443) stands before kube-apiserver (6444). Proved from the outside:

* ``/cacerts`` answers anyone with the server CA; ``/ping`` with ``pong``
  (k3s-io/k3s pkg/server/handlers/router.go).
* ``/v1-k3s/server-bootstrap`` needs the cluster token's ``server`` role: none -> 401, the agent
  token -> 403 "forbidden" (pkg/server/auth/auth.go ``doAuth``), the server token -> the CAs.
* Everything else reaches kube-apiserver as the client proved itself: the admin kubeconfig's
  certificate is ``system:admin`` in ``system:masters`` (SelfSubjectReview), writes work, a
  watch streams through, an ``X-Remote-User`` header sent by a client without a certificate is
  not believed (401), a token password is not a Kubernetes credential (401).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch

from k3sfleet.lab.controlplane import K3S_VERSION
from k3sfleet.lab.standins.k3s.controlplane import ControlPlane
from k3sfleet.lab.standins.k3s.front import Front
from k3sfleet.lab.standins.k3s.kubeconfig import write_kubeconfig

pytestmark = pytest.mark.k8s

SERVER_PASSWORD = "server-secret-1"
AGENT_PASSWORD = "agent-secret-2"


@pytest.fixture(scope="module")
def front(plane: ControlPlane) -> Iterator[Front]:
    front = Front(plane.tls, ("127.0.0.1", 0), ("127.0.0.1", plane.port),
                  passwords={SERVER_PASSWORD: "k3s:server", AGENT_PASSWORD: "k3s:agent"})
    front.start()
    yield front
    front.stop()


@pytest.fixture(scope="module")
def api(plane: ControlPlane, front: Front) -> client.ApiClient:
    kubeconfig = plane.server_dir / "k3s.yaml"
    tls = plane.tls
    write_kubeconfig(kubeconfig, f"https://127.0.0.1:{front.port}", tls.server_ca.read_bytes(),
                     *tls.pair("client-admin"))
    return config.new_client_from_config(config_file=str(kubeconfig))


def _get(front: Front, path: str, headers: dict[str, str] | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    if context is None:
        context = ssl.create_default_context(cafile=str(front.tls.server_ca))
    request = urllib.request.Request(f"https://127.0.0.1:{front.port}{path}",
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as reply:  # noqa: S310
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_cacerts_and_ping_answer_anyone(front: Front) -> None:
    anyone = ssl.create_default_context()
    anyone.check_hostname = False
    anyone.verify_mode = ssl.CERT_NONE
    assert _get(front, "/cacerts", context=anyone) == (200, front.tls.server_ca.read_bytes())
    assert _get(front, "/ping", context=anyone) == (200, b"pong")


def test_server_bootstrap_needs_the_server_token(front: Front) -> None:
    code, _ = _get(front, "/v1-k3s/server-bootstrap")
    assert code == 401
    code, body = _get(front, "/v1-k3s/server-bootstrap", _basic("node", AGENT_PASSWORD))
    assert code == 403 and json.loads(body)["message"] == "forbidden"
    code, body = _get(front, "/v1-k3s/server-bootstrap", _basic("server", SERVER_PASSWORD))
    assert code == 200
    bundle = {k: base64.b64decode(v) for k, v in json.loads(body).items()}
    for name in ("server-ca", "client-ca", "request-header-ca"):
        assert bundle[f"{name}.crt"] == (front.tls.directory / f"{name}.crt").read_bytes()


def test_the_api_sees_the_client_certificate_identity(api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().git_version == K3S_VERSION
    review: Any = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    user: Any = review.status.user_info
    assert user.username == "system:admin"
    assert "system:masters" in user.groups
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="through-front"),
                                      data={"k": "v"}))
    assert core.read_namespaced_config_map("through-front", "default").data == {"k": "v"}


def test_a_watch_streams_through_the_front(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    listed: Any = core.list_namespaced_config_map("default")
    start = listed.metadata.resource_version
    timer = threading.Timer(1.0, lambda: core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"))))
    timer.start()
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                      resource_version=start, timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name))
        if seen[-1] == ("ADDED", "watched"):
            break
    timer.join()
    assert ("ADDED", "watched") in seen


def test_identity_headers_and_token_passwords_are_not_credentials(front: Front) -> None:
    spoofed = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}
    assert _get(front, "/api/v1/namespaces", spoofed)[0] == 401
    assert _get(front, "/api/v1/namespaces", _basic("server", SERVER_PASSWORD))[0] == 401


def test_a_body_sent_right_behind_its_headers_is_relayed(front: Front, plane: ControlPlane) -> None:
    """Headers and body in two TLS writes back to back (as HTTP clients send a large body):
    each request is answered at once, none waits for kube-apiserver's 60 s timeout."""
    context = ssl.create_default_context(cafile=str(front.tls.server_ca))
    context.load_cert_chain(*(front.tls.directory / f"client-admin.{e}" for e in ("crt", "key")))
    for i in range(40):
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": f"split-{i}"},
                           "data": {"x": "y" * (i * 997 % 40000)}}).encode()
        head = (f"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", front.port), timeout=15) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(head)
            conn.sendall(body)
            answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 201"), (i, answer[:200])
