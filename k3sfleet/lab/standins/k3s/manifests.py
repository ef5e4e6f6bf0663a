"""k3s's deploy controller: apply /var/lib/rancher/k3s/server/manifests/*.yaml to the API.

Each file is tracked by an ``Addon`` (k3s.cattle.io/v1, kube-system, named after the file) whose
spec.checksum is the file's sha256; a file is (re)applied only when that checksum changes.
Objects are created, or replaced keeping their status, as user ``system:k3s:deploy``.
Files ending in ``.skip`` are ignored, like k3s does.

Example::

    Deployer(store, Path("/var/lib/rancher/k3s/server/manifests")).sync()
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import yaml

from . import log
from .store import ApiError, Store

USER = "system:k3s:deploy"


class Deployer:
    """One sync pass over the manifests directory, or a polling thread (every 2 s)."""

    def __init__(self, store: Store, directory: Path) -> None:
        self.store = store
        self.directory = directory

    def _apply(self, doc: dict[str, Any]) -> None:
        rtype = self.store.registry.by_kind(str(doc.get("apiVersion")), str(doc.get("kind")))
        if rtype is None:
            raise ApiError(
                404,
                "NotFound",
                f"no matches for kind {doc.get('kind')!r} in version {doc.get('apiVersion')!r}",
            )
        meta = doc.setdefault("metadata", {})
        namespace = str(meta.get("namespace") or "default") if rtype.namespaced else ""
        try:
            self.store.get(rtype, namespace, meta["name"])
        except ApiError as error:
            if error.code != 404:
                raise
            self.store.create(rtype, namespace, doc, USER)
            return
        meta.pop("resourceVersion", None)
        self.store.replace(rtype, namespace, meta["name"], doc, USER)

    def sync(self) -> list[str]:
        """Apply every changed manifest; return the names of the files applied."""
        addons = self.store.registry.by_path("k3s.cattle.io", "v1", "addons")
        assert addons is not None
        applied = []
        files = sorted(
            p
            for p in self.directory.glob("*")
            if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
        )
        for path in files:
            checksum = hashlib.sha256(path.read_bytes()).hexdigest()
            name = path.stem.replace("_", "-").replace(".", "-").lower()
            try:
                addon = self.store.get(addons, "kube-system", name)
            except ApiError:
                addon = None
            if addon and addon.get("spec", {}).get("checksum") == checksum:
                continue
            try:
                for doc in yaml.safe_load_all(path.read_text()):
                    if isinstance(doc, dict) and doc.get("kind"):
                        items = doc.get("items") if doc["kind"].endswith("List") else [doc]
                        for item in items or []:
                            self._apply(item)
            except (ApiError, yaml.YAMLError, KeyError) as error:
                log.error(f"Failed to process config: failed to process {path}: {error}")
                continue
            spec = {"source": str(path), "checksum": checksum}
            if addon is None:
                self.store.create(
                    addons, "kube-system", {"metadata": {"name": name}, "spec": spec}, USER
                )
            else:
                self.store.patch(
                    addons,
                    "kube-system",
                    name,
                    {"spec": spec},
                    "application/merge-patch+json",
                    USER,
                )
            log.info(f"Applied manifest {path}")
            applied.append(path.name)
        return applied

    def run_forever(self, interval: float = 2.0, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.sync()
            except OSError as error:
                log.error(f"deploy controller: {error}")
            stop.wait(interval)
