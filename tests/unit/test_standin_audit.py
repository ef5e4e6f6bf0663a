"""standins.k3s.audit.writes: kube-apiserver audit events -> the lab's write log entries."""

from __future__ import annotations

import json
from typing import Any

from k3sfleet.lab.standins.k3s.audit import writes


def _event(verb: str, resource: str, name: str, *, rv: str | None = None, code: int = 200,
           kind: str | None = None, user: str = "system:admin", namespace: str = "",
           subresource: str = "", group: str = "", uri: str = "/x",
           stage: str = "ResponseComplete", received: str = "") -> str:
    ref: dict[str, Any] = {"resource": resource, "name": name, "apiVersion": "v1"}
    if namespace:
        ref["namespace"] = namespace
    if subresource:
        ref["subresource"] = subresource
    if group:
        ref["apiGroup"] = group
    event: dict[str, Any] = {"stage": stage, "verb": verb, "objectRef": ref, "requestURI": uri,
                             "user": {"username": user}, "responseStatus": {"code": code},
                             "stageTimestamp": "2026-12-05T05:00:00Z"}
    if received:
        event["requestReceivedTimestamp"] = received
    if rv is not None or kind:
        event["responseObject"] = {"kind": kind, "metadata": {"resourceVersion": rv}}
    return json.dumps(event)


def test_changed_follows_the_resource_version_of_the_object() -> None:
    log = "\n".join([
        _event("create", "nodes", "a", rv="1", kind="Node", code=201, user="system:k3s-supervisor"),
        _event("patch", "nodes", "a", rv="2", kind="Node"),            # cordon: changed
        _event("patch", "nodes", "a", rv="2", kind="Node"),            # again: nothing changed
        _event("patch", "nodes", "a", rv="3", kind="Node", subresource="status",
               user="system:node:a"),                                   # kubelet's status
        _event("patch", "nodes", "a", rv="3", kind="Node"),            # no-op after it
        _event("patch", "nodes", "b", rv="9", kind="Node"),            # never seen: changed
        _event("get", "nodes", "a", rv="3", kind="Node"),              # reads are not writes
        _event("patch", "nodes", "a", rv="4", kind="Node", stage="RequestReceived"),
        "not json {",
    ])
    got = [(w["verb"], w["name"], w["subresource"], w["user"], w["changed"]) for w in writes(log)]
    assert got == [
        ("create", "a", "", "system:k3s-supervisor", True),
        ("patch", "a", "", "system:admin", True),
        ("patch", "a", "", "system:admin", False),
        ("patch", "a", "status", "system:node:a", True),
        ("patch", "a", "", "system:admin", False),
        ("patch", "b", "", "system:admin", True),
    ]
    assert {w["kind"] for w in writes(log)} == {"Node"}


def test_the_write_that_made_a_version_even_when_logged_after_a_no_op() -> None:
    """kube-apiserver logs an event when its request finishes: a kubelet's status write
    (received first, stored first) can be logged after an admin's no-op cordon that already
    answered with the version it made."""
    at = "2026-12-05T05:00:0{}.000000Z".format
    log = "\n".join([
        _event("patch", "nodes", "a", rv="2", kind="Node", received=at(1)),   # cordon
        _event("patch", "nodes", "a", rv="3", kind="Node", received=at(3)),   # no-op, saw rv 3
        _event("patch", "nodes", "a", rv="3", kind="Node", subresource="status",
               user="system:node:a", received=at(2)),                         # made rv 3
        _event("patch", "nodes", "a", rv="4", kind="Node", received=at(4)),   # uncordon
    ])
    got = [(w["user"], w["subresource"], w["changed"]) for w in writes(log)]
    assert got == [
        ("system:admin", "", True),
        ("system:admin", "", False),
        ("system:node:a", "status", True),
        ("system:admin", "", True),
    ]


def test_evictions_secrets_failures_and_dry_runs() -> None:
    log = "\n".join([
        _event("create", "pods", "web-1", namespace="apps", subresource="eviction",
               kind="Status", code=201),
        _event("create", "pods", "web-2", namespace="apps", subresource="eviction",
               kind="Status", code=429),                                 # refused: no write
        _event("update", "secrets", "s", namespace="apps"),             # Metadata level
        _event("create", "configmaps", "c", namespace="apps", code=201, kind="ConfigMap",
               rv="5", uri="/api/v1/namespaces/apps/configmaps?dryRun=All"),
        _event("patch", "helmcharts", "argocd", namespace="kube-system", group="helm.cattle.io",
               kind="HelmChart", rv="7", code=201, user="system:k3s-supervisor"),
        _event("delete", "helmcharts", "argocd", namespace="kube-system", group="helm.cattle.io",
               kind="Status"),
    ])
    got = [(w["verb"], w["apiVersion"], w["kind"], w["namespace"], w["name"], w["subresource"],
            w["changed"]) for w in writes(log)]
    assert got == [
        ("create", "v1", "Pod", "apps", "web-1", "eviction", True),
        ("update", "v1", "Secret", "apps", "s", "", True),
        ("patch", "helm.cattle.io/v1", "HelmChart", "kube-system", "argocd", "", True),
        ("delete", "helm.cattle.io/v1", "HelmChart", "kube-system", "argocd", "", True),
    ]
    assert set(writes(log)[0]) == {"time", "verb", "apiVersion", "kind", "namespace", "name",
                                   "subresource", "user", "changed"}
