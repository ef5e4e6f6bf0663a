"""What K3s's server puts into the real API: CRDs at start, then the manifests directory.

* CRDs: the projects' own manifests at our pinned versions (k3sfleet.lab.controlplane
  ``CRDS``, bound into hosts under ``/opt/k3sfleet-standin/go/crds-*``), applied with
  server-side apply and waited for until Established, as K3s's server creates its CRDs (Addon,
  ETCDSnapshotFile, HelmChart, HelmChartConfig) before its controllers start. Argo CD's and
  Velero's CRDs stand for what their charts would install (no chart runs here).
* The manifests directory, as K3s's deploy controller (k3s-io/k3s pkg/deploy/controller.go):
  every ``*.yaml``/``*.yml``/``*.json`` file not named by a ``<file>.skip`` and not a dotfile is
  tracked by an ``Addon`` (k3s.cattle.io/v1, kube-system) named after the file's basename up
  to its first period, created first with ``spec.source``; the file is applied only when its
  sha256 differs from ``spec.checksum``, which is written (update) after a successful apply,
  with the ``addon.k3s.cattle.io/gvks`` annotation. K3s applies with wrangler's apply; here
  each object is server-side applied (field manager ``deploy``), which like wrangler's apply
  changes nothing when the object already matches. K3s scans every 15 s (by mtime, checksum
  compared); the stand-in every 2 s by checksum, so tests wait less. HelmCharts are only
  recorded: there is no helm-controller.

Both speak as ``system:k3s-supervisor`` (group system:masters), the client certificate K3s's
supervisor uses (k3s-io/k3s pkg/server/handlers ``ClientSupervisorCert``).

Example::

    api = Api(KubeClient(url, ca, "", "", cert=(crt, key)))
    apply_crds(api, sorted(Path("/opt/k3sfleet-standin/go").glob("crds-*/**/*.yaml")))
    Deployer(api, Path("/var/lib/rancher/k3s/server/manifests")).sync()
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from . import log
from .kubeclient import KubeClient

APPLY = "application/apply-patch+yaml"
MANAGER = "deploy"
GVK_ANNOTATION = "addon.k3s.cattle.io/gvks"
ADDONS = "/apis/k3s.cattle.io/v1/namespaces/kube-system/addons"


class ApplyError(RuntimeError):
    """The API refused an object (the message names it and the API's answer)."""


class Api:
    """Server-side apply of whole objects, with discovery of where each kind lives."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._kinds: dict[tuple[str, str], tuple[str, bool]] = {}

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        return self.client.request(method, path, body, content_type=content_type, timeout=60)

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(collection path prefix, namespaced) of ``kind``; ApplyError if the API lacks it."""
        key = (api_version, kind)
        if key not in self._kinds:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            code, found = self.request("GET", base)
            if code != 200 or not isinstance(found, dict):
                raise ApplyError(f"no matches for kind {kind!r} in version {api_version!r}")
            for item in found.get("resources") or []:
                if "/" not in item["name"]:
                    self._kinds[(api_version, item["kind"])] = (
                        f"{base}/{item['name']}", bool(item.get("namespaced")))
        if key not in self._kinds:
            raise ApplyError(f"no matches for kind {kind!r} in version {api_version!r}")
        return self._kinds[key]

    def path(self, doc: dict[str, Any]) -> str:
        """The object's own path (namespaced kinds default to ``default``, as kubectl does)."""
        collection, namespaced = self.resource(str(doc.get("apiVersion")), str(doc.get("kind")))
        meta = doc.get("metadata") or {}
        name = urllib.parse.quote(str(meta.get("name") or ""), safe="")
        if namespaced:
            prefix, _, plural = collection.rpartition("/")
            namespace = meta.get("namespace") or "default"
            return f"{prefix}/namespaces/{namespace}/{plural}/{name}"
        return f"{collection}/{name}"

    def apply(self, doc: dict[str, Any], manager: str = MANAGER) -> dict[str, Any]:
        """Server-side apply ``doc`` (forcing conflicts, as a controller owning it would)."""
        path = self.path(doc) + f"?fieldManager={manager}&force=true"
        code, found = self.request("PATCH", path, doc, content_type=APPLY)
        if code not in (200, 201) or not isinstance(found, dict):
            name = (doc.get("metadata") or {}).get("name")
            message = found.get("message") if isinstance(found, dict) else found
            raise ApplyError(f"{doc.get('kind')} {name}: {code} {message}")
        return found


def _documents(text: str) -> list[dict[str, Any]]:
    """The objects of a YAML stream (``kind: List``/``*List`` items expanded)."""
    objects: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or not doc.get("kind"):
            continue
        if str(doc["kind"]).endswith("List") and isinstance(doc.get("items"), list):
            objects.extend(i for i in doc["items"] if isinstance(i, dict))
        else:
            objects.append(doc)
    return objects


def apply_crds(api: Api, files: list[Path], timeout: float = 120.0) -> list[str]:
    """Apply every CRD in ``files``; return their names once all are Established."""
    names = []
    for path in files:
        for doc in _documents(path.read_text()):
            api.apply(doc, manager="k3s")
            names.append(str(doc["metadata"]["name"]))
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            code, crd = api.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conditions = (crd.get("status") or {}).get("conditions") if code == 200 else None
            if any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in conditions or []):
                break
            if time.monotonic() > deadline:
                raise ApplyError(f"CRD {name} not Established after {timeout:.0f} s")
            time.sleep(0.2)
    return names


def addon_name(path: Path) -> str:
    """K3s's ``basename``: the file name up to its first period (``argocd.yaml`` -> argocd)."""
    return path.name.split(".", 1)[0]


class Deployer:
    """K3s's deploy controller over the real API: one pass (``sync``) or a polling thread."""

    def __init__(self, api: Api, directory: Path) -> None:
        self.api = api
        self.directory = directory

    def files(self) -> list[Path]:
        """The manifests K3s would apply: yaml/yml/json, no dotfiles, none with a ``.skip``."""
        if not self.directory.is_dir():
            return []
        found = sorted(p for p in self.directory.iterdir() if p.is_file())
        skips = {p.name.removesuffix(".skip") for p in found if p.name.endswith(".skip")}
        return [p for p in found if p.suffix in (".yaml", ".yml", ".json")
                and not p.name.startswith(".") and p.name not in skips]

    def _addon(self, path: Path) -> dict[str, Any]:
        name = addon_name(path)
        code, addon = self.api.request("GET", f"{ADDONS}/{name}")
        if code == 200 and isinstance(addon, dict):
            return addon
        code, addon = self.api.request("POST", ADDONS, {
            "apiVersion": "k3s.cattle.io/v1", "kind": "Addon",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"source": str(path)}})
        if code != 201 or not isinstance(addon, dict):
            raise ApplyError(f"Addon {name}: {code} {addon}")
        return addon

    def deploy(self, path: Path) -> bool:
        """Apply ``path`` if its checksum changed; True when it was applied."""
        content = path.read_bytes()
        checksum = hashlib.sha256(content).hexdigest()
        addon = self._addon(path)
        if (addon.get("spec") or {}).get("checksum") == checksum:
            return False
        objects = _documents(content.decode())
        for doc in objects:
            self.api.apply(doc)
        gvks = sorted({f"{d['apiVersion']}, Kind={d['kind']}" for d in objects})
        addon.setdefault("metadata", {}).setdefault("annotations", {})[GVK_ANNOTATION] = (
            ";".join(gvks))
        addon["spec"] = {**(addon.get("spec") or {}), "source": str(path), "checksum": checksum}
        code, found = self.api.request("PUT", f"{ADDONS}/{addon_name(path)}", addon)
        if code != 200:
            raise ApplyError(f"Addon {addon_name(path)}: {code} {found}")
        log.info(f"Applied manifest at {path}")
        return True

    def sync(self) -> list[str]:
        """Apply every changed manifest; return the names of the files applied."""
        applied = []
        for path in self.files():
            try:
                if self.deploy(path):
                    applied.append(path.name)
            except (ApplyError, yaml.YAMLError, OSError, KeyError) as error:
                log.error(f"Failed to process config: failed to process {path}: {error}")
        return applied

    def run_forever(self, stop: threading.Event, interval: float = 2.0) -> None:
        while not stop.is_set():
            self.sync()
            stop.wait(interval)
