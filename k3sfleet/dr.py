"""Disaster recovery: restore a pinned stateful service from a Velero backup onto another node.

The services are ``statefulServices`` in helm/apps/values.yaml (docs/stateful-services.md):
each keeps local-path data on the node it is pinned to and is backed up by its own Velero
Schedule (backups labelled ``k3sfleet.io/stateful-service=<name>``). Moving one is:

1. pause Argo CD's automated sync of the root Application ``apps`` and of ``<name>``, so
   GitOps does not recreate the old objects half-way;
2. delete the service's StatefulSets/Deployments, CloudNativePG Clusters and
   PersistentVolumeClaims (its ``selector`` labels) in its namespace: their volumes live on the
   old node;
3. a Velero resource-modifier ConfigMap that rewrites the restored workloads' nodeSelector
   (a Cluster's ``spec.affinity.nodeSelector``) to ``kubernetes.io/hostname: <target>``;
4. a Velero ``Restore`` of the service's namespace and labels from the chosen backup;
5. wait for the Restore to finish;
6. set the Helm parameter ``nodeOverrides.<name>=<target>`` on ``apps`` (so GitOps keeps the
   service there) and give both Applications their automated sync back.

``restore_plan`` refuses clearly, before anything changes, when the target node is missing,
not Ready or cordoned, when the app is not a pinned stateful service, or when no Completed
backup exists. ``failover_plan`` cordons the source node and moves every service pinned to it.

Example::

    with cluster_api("inventory.py") as api:
        plan = restore_plan(api, services, "postgresql", "latest", "vps-vultr-1")
        print(plan.render())          # --dry
        plan.apply(api)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from k3sfleet.backup import (
    DONE_PHASES,
    POLL_INTERVAL,
    SERVICE_LABEL,
    BackupInfo,
    get_backup,
    latest_completed,
    list_cluster_backups,
    new_name,
)
from k3sfleet.backup import (
    NAMESPACE as VELERO_NAMESPACE,
)
from k3sfleet.errors import K3sfleetError
from k3sfleet.project import chart_dir
from k3sfleet.rolling import cordon_patch, is_ready
from k3sfleet.settings import APPS_APPLICATION, ARGOCD_NAMESPACE

HOSTNAME_LABEL = "kubernetes.io/hostname"
DR_CORDON = "k3sfleet-dr"
RESTORE_TIMEOUT = 1800.0  # seconds each Velero Restore may take (`dr ... --timeout`)
# Where each kind of workload keeps its nodeSelector. A CloudNativePG Cluster (the shared
# PostgreSQL, helm/apps templates/postgresql.yaml) has it in spec.affinity.nodeSelector and
# owns its Pods and PVCs (Cluster CRD, cloudnative-pg/charts cloudnative-pg-v0.29.0).
NODE_SELECTOR_PATHS = {
    "statefulsets.apps": "/spec/template/spec/nodeSelector",
    "deployments.apps": "/spec/template/spec/nodeSelector",
    "clusters.postgresql.cnpg.io": "/spec/affinity/nodeSelector",
}
CNPG = ("postgresql.cnpg.io", "v1", "clusters")


class DrRefused(K3sfleetError):
    """The DR command refuses: nothing was changed."""


@dataclass(frozen=True)
class StatefulService:
    """One entry of ``statefulServices`` (helm/apps/values.yaml)."""

    name: str
    namespace: str
    node: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def schedule(self) -> str:
        return f"stateful-{self.name}"


def load_services(project_dir: Path | str = ".") -> dict[str, StatefulService]:
    """``statefulServices`` of helm/apps/values.yaml, with ``nodeOverrides`` applied."""
    path = chart_dir(project_dir, "helm/apps") / "values.yaml"
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise K3sfleetError(f"k3sfleet: cannot read {path}: {e.strerror}") from None
    overrides = values.get("nodeOverrides") or {}
    services = {}
    for entry in values.get("statefulServices") or []:
        name = str(entry["name"])
        services[name] = StatefulService(
            name=name,
            namespace=str(entry["namespace"]),
            node=str(overrides.get(name) or entry.get("node") or ""),
            node_selector=dict(entry.get("nodeSelector") or {}),
            selector=dict(entry.get("selector") or {}),
        )
    return services


# -- the API objects ---------------------------------------------------------------------


def restore_manifest(
    name: str, backup: str, service: StatefulService, modifier: str
) -> dict[str, Any]:
    """The ``velero.io/v1`` Restore of ``service`` from ``backup``."""
    spec: dict[str, Any] = {
        "backupName": backup,
        "includedNamespaces": [service.namespace],
        "restorePVs": True,
        "existingResourcePolicy": "update",
        "resourceModifier": {"kind": "ConfigMap", "name": modifier},
    }
    if service.selector:
        spec["labelSelector"] = {"matchLabels": dict(service.selector)}
    return {
        "apiVersion": "velero.io/v1",
        "kind": "Restore",
        "metadata": {
            "name": name,
            "namespace": VELERO_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "k3sfleet", SERVICE_LABEL: service.name},
        },
        "spec": spec,
    }


def modifier_configmap(name: str, service: StatefulService, target: str) -> dict[str, Any]:
    """Velero resource modifiers: restored workloads of ``service`` are pinned to ``target``."""
    rules = {
        "version": "v1",
        "resourceModifierRules": [
            {
                "conditions": {
                    "groupResource": resource,
                    "namespaces": [service.namespace],
                    **(
                        {"labelSelector": {"matchLabels": dict(service.selector)}}
                        if service.selector
                        else {}
                    ),
                },
                "patches": [
                    {
                        "operation": "replace",
                        "path": path,
                        "value": f'{{"{HOSTNAME_LABEL}": "{target}"}}',
                    }
                ],
            }
            for resource, path in NODE_SELECTOR_PATHS.items()
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": VELERO_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "k3sfleet"},
        },
        "data": {"resourcemodifier.yaml": yaml.safe_dump(rules, sort_keys=False)},
    }


# -- steps ---------------------------------------------------------------------------------


@dataclass
class Step:
    """One change: what it does (for --dry) and how."""

    text: str
    run: Callable[[Any], None]


@dataclass
class DrPlan:
    """What a DR command will do, in order."""

    title: str
    steps: list[Step]
    restores: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [self.title]
        lines += [f"  {i}. {step.text}" for i, step in enumerate(self.steps, 1)]
        return "\n".join(lines)

    def apply(self, api: Any) -> None:
        """Run the steps in order, printing each; the first failure stops with what is done."""
        for i, step in enumerate(self.steps, 1):
            start = time.monotonic()
            try:
                step.run(api)
            except (K3sfleetError, ApiException) as e:
                if isinstance(e, ApiException):
                    e = K3sfleetError(f"Kubernetes API error {e.status} {e.reason}")
                raise K3sfleetError(
                    f"k3sfleet: DR stopped at step {i} ({step.text}): {e}\n"
                    f"  steps 1..{i - 1} are done; fix the cause and re-run the command, or "
                    "finish by hand from the plan (--dry)"
                ) from None
            print(f"  {i}. {step.text} ({time.monotonic() - start:.1f}s)")


def check_target(api: Any, target: str) -> Any:
    """The target Node; refuses when it is missing, not Ready or cordoned."""
    try:
        node = client.CoreV1Api(api).read_node(target)
    except ApiException as e:
        if e.status == 404:
            raise DrRefused(
                f"k3sfleet: target node {target} is not a node of the cluster"
            ) from None
        raise
    if not is_ready(node):
        raise DrRefused(f"k3sfleet: target node {target} is not Ready: refusing to restore there")
    if node.spec is not None and node.spec.unschedulable:
        raise DrRefused(f"k3sfleet: target node {target} is cordoned: uncordon it first")
    return node


def pinned_service(services: Mapping[str, StatefulService], app: str) -> StatefulService:
    service = services.get(app)
    known = ", ".join(sorted(services)) or "none"
    if service is None:
        raise DrRefused(
            f"k3sfleet: {app} is not a pinned stateful service (statefulServices in "
            f"helm/apps/values.yaml: {known})"
        )
    if not service.node and not service.node_selector:
        raise DrRefused(f"k3sfleet: {app} is not pinned to a node (no node or nodeSelector)")
    return service


def choose_backup(api: Any, service: StatefulService, backup: str) -> BackupInfo:
    """``latest`` = the newest Completed backup of the service; a name must be Completed and
    cover the service's namespace."""
    if backup == "latest":
        chosen = latest_completed(list_cluster_backups(api, labels={SERVICE_LABEL: service.name}))
        if chosen is None:
            raise DrRefused(
                f"k3sfleet: no Completed backup of {service.name} (label "
                f"{SERVICE_LABEL}={service.name}): nothing to restore"
            )
        return chosen
    try:
        info = get_backup(api, backup)
    except K3sfleetError:
        raise DrRefused(f"k3sfleet: no backup named {backup}: nothing to restore") from None
    if info.phase != "Completed":
        raise DrRefused(
            f"k3sfleet: backup {backup} is {info.phase or 'not finished'}, not Completed"
        )
    if info.namespaces and service.namespace not in info.namespaces:
        raise DrRefused(f"k3sfleet: backup {backup} does not include namespace {service.namespace}")
    return info


def _selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


ARGO_APPS = ("argoproj.io", "v1alpha1", ARGOCD_NAMESPACE, "applications")
VELERO_RESTORES = ("velero.io", "v1", VELERO_NAMESPACE, "restores")


@dataclass
class _AppMove:
    """Moving one service onto ``target`` from ``backup``: each method is one step of the plan."""

    service: StatefulService
    backup: BackupInfo
    target: str
    wait_timeout: float
    restore: str = ""
    saved: dict[str, Any] = field(default_factory=dict)  # each Application's automated sync

    def __post_init__(self) -> None:
        self.restore = self.restore or new_name(f"{self.service.name}-dr")

    @property
    def modifier(self) -> str:
        return f"k3sfleet-dr-{self.service.name}"

    @property
    def labels(self) -> str:
        return _selector_text(self.service.selector)

    def steps(self) -> list[Step]:
        name, where = self.service.name, self.service.namespace
        where += f" ({self.labels})" if self.labels else ""
        return [
            Step(f"pause Argo CD automated sync of {APPS_APPLICATION} and {name}", self.pause),
            Step(
                f"delete {name}'s StatefulSets, Deployments, CloudNativePG Clusters and PVCs "
                f"in {where}",
                self.delete_old,
            ),
            Step(
                f"ConfigMap {VELERO_NAMESPACE}/{self.modifier}: restored workloads pinned to "
                f"{self.target}",
                self.put_modifier,
            ),
            Step(
                f"Velero Restore {self.restore} of {where} from backup {self.backup.name}",
                self.create_restore,
            ),
            Step(f"wait until Restore {self.restore} is Completed", self.wait),
            Step(
                f"set nodeOverrides.{name}={self.target} on Application {APPS_APPLICATION} "
                "and resume automated sync",
                self.pin_and_resume,
            ),
        ]

    def pause(self, api: Any) -> None:
        """Turn off the automated sync of ``apps`` and the service's Application (kept in
        ``saved`` to give back)."""
        custom: Any = client.CustomObjectsApi(api)
        for app in (APPS_APPLICATION, self.service.name):
            try:
                obj = custom.get_namespaced_custom_object(*ARGO_APPS, app)
            except ApiException as e:
                if e.status == 404:
                    continue
                raise
            automated = ((obj.get("spec") or {}).get("syncPolicy") or {}).get("automated")
            self.saved.setdefault(app, automated)
            if automated is not None:
                patch = {"spec": {"syncPolicy": {"automated": None}}}
                custom.patch_namespaced_custom_object(*ARGO_APPS, app, patch)

    def delete_old(self, api: Any) -> None:
        """Delete the service's CloudNativePG Clusters, StatefulSets, Deployments and PVCs."""
        custom: Any = client.CustomObjectsApi(api)
        apps: Any = client.AppsV1Api(api)
        core: Any = client.CoreV1Api(api)
        ns = self.service.namespace
        try:
            clusters = custom.list_namespaced_custom_object(
                *CNPG[:2], ns, CNPG[2], label_selector=self.labels
            )
        except ApiException as e:
            if e.status != 404:  # no CloudNativePG CRD: nothing of the kind to delete
                raise
            clusters = {}
        for item in clusters.get("items") or []:
            _gone_is_fine(
                custom.delete_namespaced_custom_object,
                *CNPG[:2],
                ns,
                CNPG[2],
                item["metadata"]["name"],
            )
        for lister, deleter in (
            (apps.list_namespaced_stateful_set, apps.delete_namespaced_stateful_set),
            (apps.list_namespaced_deployment, apps.delete_namespaced_deployment),
            (
                core.list_namespaced_persistent_volume_claim,
                core.delete_namespaced_persistent_volume_claim,
            ),
        ):
            for item in lister(ns, label_selector=self.labels).items:
                _gone_is_fine(deleter, item.metadata.name, ns)

    def put_modifier(self, api: Any) -> None:
        """Create or update the resource-modifier ConfigMap."""
        core: Any = client.CoreV1Api(api)
        body = modifier_configmap(self.modifier, self.service, self.target)
        try:
            core.create_namespaced_config_map(VELERO_NAMESPACE, body)
        except ApiException as e:
            if e.status != 409:
                raise
            core.patch_namespaced_config_map(self.modifier, VELERO_NAMESPACE, body)

    def create_restore(self, api: Any) -> None:
        body = restore_manifest(self.restore, self.backup.name, self.service, self.modifier)
        client.CustomObjectsApi(api).create_namespaced_custom_object(*VELERO_RESTORES, body)

    def wait(self, api: Any) -> None:
        """Poll the Restore until it is Completed; any other final phase fails the step."""
        custom: Any = client.CustomObjectsApi(api)
        deadline = time.monotonic() + self.wait_timeout
        while True:
            obj = custom.get_namespaced_custom_object(*VELERO_RESTORES, self.restore)
            phase = (obj.get("status") or {}).get("phase") or ""
            if phase == "Completed":
                return
            if phase in DONE_PHASES:  # (a Restore ends in the phases a Backup does)
                raise K3sfleetError(f"restore {self.restore} ended {phase} (velero restore logs)")
            if time.monotonic() >= deadline:
                raise K3sfleetError(f"restore {self.restore} still {phase or 'New'}")
            time.sleep(POLL_INTERVAL)

    def pin_and_resume(self, api: Any) -> None:
        """``nodeOverrides.<name>=<target>`` on ``apps``, and the saved automated syncs back."""
        custom: Any = client.CustomObjectsApi(api)
        name = self.service.name
        try:
            root = custom.get_namespaced_custom_object(*ARGO_APPS, APPS_APPLICATION)
        except ApiException as e:
            if e.status == 404:
                raise K3sfleetError(
                    f"no Argo CD Application {APPS_APPLICATION}: set nodeOverrides.{name}="
                    f"{self.target} in helm/apps/values.yaml yourself"
                ) from None
            raise
        source = copy.deepcopy((root.get("spec") or {}).get("source") or {})
        helm = source.setdefault("helm", {})
        key = f"nodeOverrides.{name}"
        params = [p for p in helm.get("parameters") or [] if p.get("name") != key]
        helm["parameters"] = [*params, {"name": key, "value": self.target}]
        patch: dict[str, Any] = {"spec": {"source": source}}
        if self.saved.get(APPS_APPLICATION) is not None:
            patch["spec"]["syncPolicy"] = {"automated": self.saved[APPS_APPLICATION]}
        custom.patch_namespaced_custom_object(*ARGO_APPS, APPS_APPLICATION, patch)
        if self.saved.get(name) is not None:
            resume = {"spec": {"syncPolicy": {"automated": self.saved[name]}}}
            custom.patch_namespaced_custom_object(*ARGO_APPS, name, resume)


def _gone_is_fine(delete: Callable[..., Any], *args: Any) -> None:
    """``delete(*args)``; an object already gone (404) is what we wanted."""
    try:
        delete(*args)
    except ApiException as e:
        if e.status != 404:
            raise


def _app_steps(
    service: StatefulService, backup: BackupInfo, target: str, wait_timeout: float
) -> tuple[list[Step], str]:
    move = _AppMove(service, backup, target, wait_timeout)
    return move.steps(), move.restore


def restore_plan(
    api: Any,
    services: Mapping[str, StatefulService],
    app: str,
    backup: str,
    target: str,
    wait_timeout: float = RESTORE_TIMEOUT,
) -> DrPlan:
    """The plan of ``k3sfleet dr restore-workload``; refuses (``DrRefused``) before changing."""
    service = pinned_service(services, app)
    check_target(api, target)
    chosen = choose_backup(api, service, backup)
    steps, restore = _app_steps(service, chosen, target, wait_timeout)
    title = (
        f"Restore {service.name} (namespace {service.namespace}, pinned to "
        f"{service.node or service.node_selector}) from backup {chosen.name} onto {target}"
    )
    return DrPlan(title, steps, [restore])


def services_on(api: Any, services: Mapping[str, StatefulService], node: str) -> list[str]:
    """Names of the services pinned to ``node`` (by name, or by labels the node carries)."""
    try:
        node_obj: Any = client.CoreV1Api(api).read_node(node)
        labels = node_obj.metadata.labels or {}
    except ApiException:
        labels = {HOSTNAME_LABEL: node}  # the source node may be gone for good
    pinned = []
    for s in services.values():
        if s.node == node or (
            not s.node
            and s.node_selector
            and all(labels.get(k) == v for k, v in s.node_selector.items())
        ):
            pinned.append(s.name)
    return pinned


def failover_plan(
    api: Any,
    services: Mapping[str, StatefulService],
    source: str,
    target: str,
    wait_timeout: float = RESTORE_TIMEOUT,
) -> DrPlan:
    """The plan of ``k3sfleet dr failover``: cordon ``source``, move every service pinned to it."""
    if source == target:
        raise DrRefused("k3sfleet: source and target node are the same")
    check_target(api, target)
    names = services_on(api, services, source)
    if not names:
        raise DrRefused(f"k3sfleet: no stateful service is pinned to {source}: nothing to move")
    chosen = {name: choose_backup(api, services[name], "latest") for name in names}

    def cordon(api: Any) -> None:
        # a node deleted from the cluster needs no cordon
        _gone_is_fine(client.CoreV1Api(api).patch_node, source, cordon_patch(DR_CORDON))

    steps = [Step(f"cordon {source}", cordon)]
    restores = []
    for name in names:
        app_steps, restore = _app_steps(services[name], chosen[name], target, wait_timeout)
        for step in app_steps:
            step.text = f"[{name}] {step.text}"
        steps += app_steps
        restores.append(restore)
    title = f"Fail over {source} -> {target}: " + ", ".join(
        f"{n} from {chosen[n].name}" for n in names
    )
    return DrPlan(title, steps, restores)
