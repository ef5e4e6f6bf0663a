"""The lab's API write log, read from kube-apiserver's own audit log.

Lab-only: no K3s behaviour is imitated here. The events are kube-apiserver's own
(``audit.k8s.io/v1`` ``Event``, k8s.io/apiserver pkg/apis/audit, Kubernetes v1.34.2), read as
they are written.

The stand-in server starts kube-apiserver with ``--audit-policy-file`` (:data:`POLICY`) and
``--audit-log-path=<server>/logs/audit.log`` (what a K3s user passes as
``kube-apiserver-arg``); :func:`writes` turns its events into the lab's write log entries
``{time, verb, apiVersion, kind, namespace, name, subresource, user, changed}``
(``lab.api_writes(host)``, docs/lab-contract.md):

* one entry per write the API carried out: verbs create/update/patch/delete/deletecollection
  answered below 400, dry runs left out. Server-side apply is ``patch``; an eviction is
  ``create`` of ``pods`` with subresource ``eviction`` (its kind is Pod).
* ``user`` is the authenticated user (``user.username``): ``system:admin`` for the kubeconfig,
  ``system:node:<name>`` for kubelets (kwok), ``system:k3s-supervisor`` for the manifests
  applier and the server's own Node labels, ``system:serviceaccount:kube-system:<controller>``
  for kube-controller-manager's controllers (``--use-service-account-credentials``).
* ``changed``: a create or delete always changes; an update or patch changed the object when
  it made the resourceVersion it answered with (a write that changes nothing answers with the
  object's current resourceVersion: the API skips the storage write). Several writes can
  answer with one resourceVersion: the one that made it is taken to be the first received
  (``requestReceivedTimestamp``, a MicroTime, fixed-width RFC 3339 in UTC: k8s.io/apiserver
  v0.34.2 pkg/apis/audit/v1/types.go ``Event``), since a no-op read the object only after that
  write was stored (a no-op received earlier yet reading later is possible, not seen). Not
  the last one logged before it: events are logged as requests finish, so a kubelet's status
  write can be logged after an admin's no-op that already saw it (seen once in a k8s test).
  Writes are logged at RequestResponse, so every write's answer carries its resourceVersion;
  an object this log never saw before counts as changed. Secrets are logged at Metadata only
  (their data never lands in the log): their updates count as changed.

Example::

    entries = writes(Path("/var/lib/rancher/k3s/server/logs/audit.log").read_text())
"""

from __future__ import annotations

import json
from typing import Any

# Reads, Leases (kubelet heartbeats) and Events are not logged; CRDs and Secrets at Metadata
# (a CRD's body is up to a megabyte; a Secret's data must not reach the disk twice).
POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: None
  verbs: [get, list, watch]
- level: None
  resources:
  - {group: coordination.k8s.io, resources: [leases]}
  - {group: "", resources: [events]}
  - {group: events.k8s.io, resources: [events]}
- level: None
  nonResourceURLs: ["*"]
- level: Metadata
  resources:
  - {group: "", resources: [secrets]}
  - {group: apiextensions.k8s.io, resources: [customresourcedefinitions]}
- level: RequestResponse
"""

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
# Kinds of resources whose events carry no object (Metadata level, or answered with a Status).
KNOWN_KINDS = {"secrets": "Secret", "customresourcedefinitions": "CustomResourceDefinition",
               "pods": "Pod", "nodes": "Node", "namespaces": "Namespace"}


def _api_version(ref: dict[str, Any]) -> str:
    group, version = ref.get("apiGroup") or "", ref.get("apiVersion") or "v1"
    return f"{group}/{version}" if group else version


def _events(text: str) -> list[dict[str, Any]]:
    """The completed write events of ``text`` (JSON lines), dry runs left out."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash or a rotation
        if event.get("stage") != "ResponseComplete" or event.get("verb") not in WRITE_VERBS:
            continue
        if "dryRun=" in str(event.get("requestURI")):
            continue
        events.append(event)
    return events


def writes(text: str) -> list[dict[str, Any]]:
    """The write log entries of the audit log ``text`` (JSON lines), in the API's order."""
    kinds = dict(KNOWN_KINDS)
    rows: list[tuple[dict[str, Any], tuple[str, str, str, str], str | None]] = []
    maker: dict[tuple[tuple[str, str, str, str], str], tuple[str, int]] = {}
    for event in _events(text):
        ref = event.get("objectRef") or {}
        answer = event.get("responseObject") or {}
        resource = str(ref.get("resource") or "")
        if answer.get("kind") and answer.get("kind") != "Status" and not ref.get("subresource"):
            kinds.setdefault(resource, answer["kind"])
        if int((event.get("responseStatus") or {}).get("code") or 0) >= 400:
            continue
        key = (_api_version(ref), resource, ref.get("namespace") or "", ref.get("name") or "")
        version = None
        if answer.get("kind") != "Status":
            version = (answer.get("metadata") or {}).get("resourceVersion")
        if version is not None and event["verb"] in ("create", "update", "patch"):
            order = (str(event.get("requestReceivedTimestamp") or ""), len(rows))
            maker[(key, version)] = min(maker.get((key, version), order), order)
        rows.append((event, key, version))
    entries: list[dict[str, Any]] = []
    for index, (event, key, version) in enumerate(rows):
        ref, answer = event.get("objectRef") or {}, event.get("responseObject") or {}
        verb = event["verb"]
        changed = True
        if verb in ("update", "patch") and version is not None:
            changed = maker[(key, version)][1] == index
        entries.append({
            "time": event.get("stageTimestamp") or event.get("requestReceivedTimestamp"),
            "verb": verb,
            "apiVersion": key[0],
            "kind": kinds.get(key[1]) or key[1],
            "namespace": key[2],
            "name": ref.get("name") or (answer.get("metadata") or {}).get("name") or "",
            "subresource": ref.get("subresource") or "",
            "user": (event.get("user") or {}).get("username") or "",
            "changed": changed,
        })
    return entries
