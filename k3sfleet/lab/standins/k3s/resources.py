"""The resource types the stand-in API serves: built-ins k3sfleet uses and declared CRDs.

Example::

    registry = Registry()
    registry.by_path("apps", "v1", "deployments").kind          # "Deployment"
    registry.by_kind("helm.cattle.io/v1", "HelmChart").plural   # "helmcharts"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the URL space and whether it is namespaced."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status_subresource: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


def _r(group: str, version: str, plural: str, kind: str, namespaced: bool = True) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced)


BUILTIN: tuple[ResourceType, ...] = (
    _r("", "v1", "namespaces", "Namespace", False),
    _r("", "v1", "nodes", "Node", False),
    _r("", "v1", "persistentvolumes", "PersistentVolume", False),
    _r("", "v1", "secrets", "Secret"),
    _r("", "v1", "configmaps", "ConfigMap"),
    _r("", "v1", "pods", "Pod"),
    _r("", "v1", "services", "Service"),
    _r("", "v1", "serviceaccounts", "ServiceAccount"),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    _r("", "v1", "events", "Event"),
    _r("apps", "v1", "deployments", "Deployment"),
    _r("apps", "v1", "daemonsets", "DaemonSet"),
    _r("apps", "v1", "statefulsets", "StatefulSet"),
    _r("apps", "v1", "replicasets", "ReplicaSet"),
    _r("batch", "v1", "jobs", "Job"),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    _r("coordination.k8s.io", "v1", "leases", "Lease"),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _r("networking.k8s.io", "v1", "ingresses", "Ingress"),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    _r("storage.k8s.io", "v1", "storageclasses", "StorageClass", False),
    _r(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
    ),
)

# CRDs a k3s cluster running our GitOps stack has (k3s declares HelmChart itself; Argo CD,
# Velero and CloudNativePG come with their charts, which the stand-in does not run).
DECLARED_CRDS: tuple[ResourceType, ...] = (
    _r("k3s.cattle.io", "v1", "addons", "Addon"),
    _r("helm.cattle.io", "v1", "helmcharts", "HelmChart"),
    _r("helm.cattle.io", "v1", "helmchartconfigs", "HelmChartConfig"),
    ResourceType("argoproj.io", "v1alpha1", "applications", "Application", True, ("app",), False),
    ResourceType("argoproj.io", "v1alpha1", "appprojects", "AppProject", True, (), False),
    _r("velero.io", "v1", "backups", "Backup"),
    _r("velero.io", "v1", "restores", "Restore"),
    _r("velero.io", "v1", "backupstoragelocations", "BackupStorageLocation"),
    _r("velero.io", "v1", "volumesnapshotlocations", "VolumeSnapshotLocation"),
    _r("velero.io", "v1", "schedules", "Schedule"),
    # CloudNativePG (helm/infrastructure cloudnativePg): the CRDs of cloudnative-pg/charts
    # charts/cloudnative-pg/templates/crds/crds.yaml at cloudnative-pg-v0.29.0 (namespaced)
    _r("postgresql.cnpg.io", "v1", "clusters", "Cluster"),
    _r("postgresql.cnpg.io", "v1", "databases", "Database"),
)


class Registry:
    """Lookup of served resource types by URL path or by apiVersion + kind."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rtype in BUILTIN + DECLARED_CRDS:
            self.add(rtype)

    def add(self, rtype: ResourceType) -> None:
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def remove(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if k[0] == group and k[2] == plural]:
            del self._types[key]

    def by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rtype in self._types.values():
            if rtype.api_version == api_version and rtype.kind == kind:
                return rtype
        return None

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def add_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        """Serve the versions a CustomResourceDefinition object declares."""
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        added = []
        for version in spec.get("versions", []) or [{"name": spec.get("version", "v1")}]:
            if version.get("served", True):
                rtype = ResourceType(
                    spec.get("group", ""),
                    version["name"],
                    names.get("plural", ""),
                    names.get("kind", ""),
                    spec.get("scope") != "Cluster",
                    tuple(names.get("shortNames", []) or ()),
                    "status" in (version.get("subresources") or spec.get("subresources") or {}),
                )
                self.add(rtype)
                added.append(rtype)
        return added
