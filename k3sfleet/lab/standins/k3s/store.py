"""The stand-in API's object store: what the real API server does with a write, for our subset.

Answers as the real API does: 201 on create, 409 AlreadyExists on a duplicate, 404 NotFound for a
missing object or namespace, 409 Conflict for a stale resourceVersion, 422 for an invalid name,
429 when an eviction would violate a PodDisruptionBudget. resourceVersion increases with every
change; a write that changes nothing keeps the object (and its resourceVersion) as it was.
State is saved to a JSON file after every change, and every write request is appended to a JSON
lines log: {time, verb, apiVersion, kind, namespace, name, subresource, user, changed}.

Example::

    store = Store(Registry(), state_file=Path("db/state.json"), write_log=Path("api-writes.jsonl"))
    secrets = store.registry.by_path("", "v1", "secrets")
    store.create(secrets, "default", {"metadata": {"name": "s"}, "data": {}}, user="admin")
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import math
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from .resources import Registry, ResourceType
from .selectors import (
    json_patch,
    matches_fields,
    matches_labels,
    merge_patch,
    strategic_merge_patch,
)

Obj = dict[str, Any]
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_NAMED = {"Namespace", "Service"}  # DNS-1123 labels: no dots, at most 63 characters


class ApiError(Exception):
    """An error answer of the API, rendered as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(rtype: ResourceType, name: str) -> ApiError:
    group_plural = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    return ApiError(
        404,
        "NotFound",
        f'{group_plural} "{name}" not found',
        {"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _match_selector(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A LabelSelector object (matchLabels + matchExpressions) against labels."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and key in labels and labels[key] in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


class Store:
    """Objects by (group, plural, namespace, name), thread-safe, optionally persisted."""

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        state_file: Path | None = None,
        write_log: Path | None = None,
    ) -> None:
        self.registry = registry or Registry()
        self.state_file = state_file
        self.write_log = write_log
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str, str], Obj] = {}
        self.revision = 1
        if state_file and state_file.exists():
            state = json.loads(state_file.read_text())
            self.revision = state["revision"]
            for obj in state["objects"]:
                rtype = self.registry.by_kind(obj["apiVersion"], obj["kind"])
                if rtype is None and obj["kind"] != "CustomResourceDefinition":
                    continue
                if obj["kind"] == "CustomResourceDefinition":
                    self.registry.add_crd(obj)
                    rtype = self.registry.by_path(
                        "apiextensions.k8s.io", "v1", "customresourcedefinitions"
                    )
                assert rtype is not None
                self.objects[
                    self._key(rtype, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                ] = obj
        namespaces = self.registry.by_path("", "v1", "namespaces")
        assert namespaces is not None
        for name in SYSTEM_NAMESPACES:
            key = self._key(namespaces, "", name)
            if key not in self.objects:
                self.objects[key] = self._fill_new(
                    namespaces,
                    "",
                    {
                        "metadata": {"name": name},
                        "spec": {"finalizers": ["kubernetes"]},
                        "status": {"phase": "Active"},
                    },
                )

    # -- bookkeeping -------------------------------------------------------------------------
    @staticmethod
    def _key(rtype: ResourceType, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (rtype.group, rtype.plural, namespace if rtype.namespaced else "", name)

    def _next_revision(self) -> str:
        self.revision += 1
        return str(self.revision)

    def _save(self) -> None:
        if not self.state_file:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"revision": self.revision, "objects": list(self.objects.values())}, handle)
        os.replace(tmp, self.state_file)

    def _log(
        self,
        verb: str,
        rtype: ResourceType,
        namespace: str,
        name: str,
        user: str,
        changed: bool,
        subresource: str = "",
    ) -> None:
        if not self.write_log:
            return
        entry = {
            "time": now(),
            "verb": verb,
            "apiVersion": rtype.api_version,
            "kind": rtype.kind,
            "namespace": namespace if rtype.namespaced else "",
            "name": name,
            "subresource": subresource,
            "user": user,
            "changed": changed,
        }
        self.write_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.write_log, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def _fill_new(self, rtype: ResourceType, namespace: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["resourceVersion"] = self._next_revision()
        if "spec" in obj:
            meta["generation"] = 1
        for field in ("deletionTimestamp", "selfLink"):
            meta.pop(field, None)
        self._normalise(obj)
        return obj

    @staticmethod
    def _normalise(obj: Obj) -> None:
        if obj["kind"] == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {}) or {}
            for key, value in (obj.pop("stringData") or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
            obj.setdefault("type", "Opaque")
        elif obj["kind"] == "Secret":
            obj.setdefault("type", "Opaque")
        if obj["kind"] == "Namespace":
            obj.setdefault("status", {"phase": "Active"})
        for key in ("labels", "annotations"):
            if obj["metadata"].get(key) == {}:
                del obj["metadata"][key]

    def _check_body(self, rtype: ResourceType, body: Any, name: str | None = None) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != rtype.api_version:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does "
                f"not match the expected API version ({rtype.api_version})",
            )
        if kind and kind != rtype.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})",
            )
        body_name = (body.get("metadata") or {}).get("name")
        if name is not None and body_name and body_name != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({body_name}) does not match the name on the URL ({name})",
            )

    def _require_namespace(self, rtype: ResourceType, namespace: str) -> None:
        if not rtype.namespaced:
            return
        namespaces = self.registry.by_path("", "v1", "namespaces")
        assert namespaces is not None
        if self._key(namespaces, "", namespace) not in self.objects:
            raise not_found(namespaces, namespace)

    # -- reads -------------------------------------------------------------------------------
    def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        with self.lock:
            obj = self.objects.get(self._key(rtype, namespace, name))
            if obj is None:
                raise not_found(rtype, name)
            return copy.deepcopy(obj)

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Obj:
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (group, plural, ns, _), obj in sorted(self.objects.items())
                if group == rtype.group
                and plural == rtype.plural
                and (not namespace or not rtype.namespaced or ns == namespace)
                and matches_labels(label_selector, obj["metadata"].get("labels"))
                and matches_fields(field_selector, obj)
            ]
            return {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(self.revision)},
                "items": items,
            }

    # -- writes ------------------------------------------------------------------------------
    def create(
        self, rtype: ResourceType, namespace: str, body: Obj, user: str, dry_run: bool = False
    ) -> Obj:
        self._check_body(rtype, body)
        meta = body.get("metadata") or {}
        with self.lock:
            name = meta.get("name")
            if not name and meta.get("generateName"):
                name = meta["generateName"] + uuid.uuid4().hex[:5]
                body = merge_patch(body, {"metadata": {"name": name}})
            if not name:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rtype.kind} "" is invalid: metadata.name: '
                    "Required value: name or generateName is required",
                    {"kind": rtype.kind},
                )
            if not _NAME.match(name) or (
                rtype.kind in _LABEL_NAMED and ("." in name or len(name) > 63)
            ):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rtype.kind} "{name}" is invalid: metadata.name: '
                    "Invalid value: a lowercase RFC 1123 subdomain must consist of "
                    "lower case alphanumeric characters, '-' or '.'",
                    {"name": name, "kind": rtype.kind},
                )
            self._require_namespace(rtype, namespace)
            key = self._key(rtype, namespace, name)
            if key in self.objects:
                group_plural = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{group_plural} "{name}" already exists',
                    {"name": name, "group": rtype.group, "kind": rtype.plural},
                )
            obj = self._fill_new(rtype, namespace, body)
            if dry_run:
                return obj
            self.objects[key] = obj
            if rtype.kind == "CustomResourceDefinition":
                self.registry.add_crd(obj)
            self._log("create", rtype, namespace, name, user, True)
            self._save()
            return copy.deepcopy(obj)

    def _store_update(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        old: Obj,
        new: Obj,
        verb: str,
        user: str,
        subresource: str,
        dry_run: bool,
    ) -> Obj:
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "name", "generation"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        if rtype.namespaced:
            meta["namespace"] = namespace
        if subresource == "status":
            new = {**old, "status": new.get("status")}
            if new["status"] is None:
                del new["status"]
        elif rtype.status_subresource and rtype.kind != "CustomResourceDefinition":
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        self._normalise(new)
        meta = new["metadata"]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        changed = new != old
        if changed:
            if old.get("spec") != new.get("spec") and "generation" in old["metadata"]:
                meta["generation"] = old["metadata"]["generation"] + 1
            elif "spec" in new and "generation" not in meta:
                meta["generation"] = 1
            if not dry_run:
                meta["resourceVersion"] = self._next_revision()
                self.objects[self._key(rtype, namespace, name)] = new
                if rtype.kind == "CustomResourceDefinition":
                    self.registry.add_crd(new)
        if not dry_run:
            self._log(verb, rtype, namespace, name, user, changed, subresource)
            if changed:
                self._save()
        return copy.deepcopy(new)

    def replace(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        user: str,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        """PUT: the body replaces the object; a stale metadata.resourceVersion gives 409."""
        self._check_body(rtype, body, name)
        with self.lock:
            old = self.objects.get(self._key(rtype, namespace, name))
            if old is None:
                raise not_found(rtype, name)
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on {rtype.plural} "
                    f'"{name}": the object has been modified; please apply your changes '
                    "to the latest version and try again",
                    {"name": name, "group": rtype.group, "kind": rtype.plural},
                )
            return self._store_update(
                rtype,
                namespace,
                name,
                old,
                copy.deepcopy(body),
                "update",
                user,
                subresource,
                dry_run,
            )

    def patch(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        patch: Any,
        content_type: str,
        user: str,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        """PATCH with merge, strategic merge, JSON patch or apply (apply creates if missing)."""
        with self.lock:
            old = self.objects.get(self._key(rtype, namespace, name))
            if old is None:
                if "apply-patch" in content_type and isinstance(patch, dict):
                    return self.create(
                        rtype,
                        namespace,
                        merge_patch(patch, {"metadata": {"name": name}}),
                        user,
                        dry_run,
                    )
                raise not_found(rtype, name)
            try:
                if "json-patch" in content_type:
                    new = json_patch(old, patch)
                elif "strategic-merge-patch" in content_type:
                    new = strategic_merge_patch(old, patch)
                else:
                    new = merge_patch(old, patch)
            except (KeyError, IndexError, ValueError, TypeError) as error:
                raise ApiError(
                    422, "Invalid", f"the patch could not be applied: {error}"
                ) from error
            if subresource == "status":
                new = {**old, "status": new.get("status")}
            wanted_rv = (
                (patch.get("metadata") or {}).get("resourceVersion")
                if isinstance(patch, dict)
                else None
            )
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on {rtype.plural} "
                    f'"{name}": the object has been modified; please apply your changes '
                    "to the latest version and try again",
                )
            verb = "apply" if "apply-patch" in content_type else "patch"
            return self._store_update(
                rtype,
                namespace,
                name,
                old,
                new,
                verb,
                user,
                "status" if subresource == "status" else "",
                dry_run,
            )

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        user: str,
        dry_run: bool = False,
        verb: str = "delete",
        subresource: str = "",
    ) -> Obj:
        with self.lock:
            key = self._key(rtype, namespace, name)
            obj = self.objects.get(key)
            if obj is None:
                raise not_found(rtype, name)
            if dry_run:
                return copy.deepcopy(obj)
            del self.objects[key]
            if rtype.kind == "Namespace":
                for other in [k for k in self.objects if k[2] == name]:
                    del self.objects[other]
                obj = merge_patch(
                    obj,
                    {"status": {"phase": "Terminating"}, "metadata": {"deletionTimestamp": now()}},
                )
            if rtype.kind == "CustomResourceDefinition":
                spec = obj.get("spec", {})
                plural = spec.get("names", {}).get("plural", "")
                self.registry.remove(spec.get("group", ""), plural)
                for other in [
                    k for k in self.objects if k[0] == spec.get("group") and k[1] == plural
                ]:
                    del self.objects[other]
            self._next_revision()
            self._log(verb, rtype, namespace, name, user, True, subresource)
            self._save()
            return copy.deepcopy(obj)

    def evict(self, namespace: str, name: str, user: str, dry_run: bool = False) -> Obj:
        """pods/<name>/eviction: delete the pod unless a PodDisruptionBudget forbids it (429)."""
        pods = self.registry.by_path("", "v1", "pods")
        budgets = self.registry.by_path("policy", "v1", "poddisruptionbudgets")
        assert pods is not None and budgets is not None
        with self.lock:
            pod = self.get(pods, namespace, name)
            labels = pod["metadata"].get("labels") or {}
            for pdb in self.list(budgets, namespace)["items"]:
                spec = pdb.get("spec", {})
                if not _match_selector(spec.get("selector"), labels):
                    continue
                matching = [
                    p
                    for p in self.list(pods, namespace)["items"]
                    if _match_selector(spec.get("selector"), p["metadata"].get("labels") or {})
                ]
                healthy = [
                    p
                    for p in matching
                    if (p.get("status") or {}).get("phase", "Running") == "Running"
                ]
                total = len(matching)

                def count(value: Any, total: int = total) -> int:
                    if isinstance(value, str) and value.endswith("%"):
                        return math.ceil(total * int(value[:-1]) / 100)
                    return int(value)

                if "minAvailable" in spec:
                    allowed = len(healthy) - count(spec["minAvailable"])
                else:
                    allowed = count(spec.get("maxUnavailable", 1)) - (total - len(healthy))
                if allowed < 1:
                    self._log("create", pods, namespace, name, user, False, "eviction")
                    raise ApiError(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        {
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb['metadata']['name']} "
                                    f"needs {spec.get('minAvailable', '')} healthy pods "
                                    f"and has {len(healthy)} currently",
                                }
                            ]
                        },
                    )
            self.delete(pods, namespace, name, user, dry_run, verb="create", subresource="eviction")
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            }
