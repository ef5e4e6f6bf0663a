"""docs/stateful-services.md, generated from helm/apps/values.yaml (statefulServices).

Regenerate after changing the values::

    python tests/helm/stateful_doc.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "helm" / "apps" / "values.yaml"
DOC = ROOT / "docs" / "stateful-services.md"

HEADER = """\
# Stateful services

<!-- Generated from helm/apps/values.yaml (statefulServices) by tests/helm/stateful_doc.py;
     tests/helm/test_charts.py fails when this file and the values disagree. -->

The cluster uses **local-path** storage: a volume lives on one node's disk, so every service
with data is pinned to one node with a `nodeSelector` (for the PostgreSQL CloudNativePG
`Cluster`, `spec.affinity.nodeSelector`, which the operator puts on its instance Pods), and
backed up by its own Velero Schedule (file-system backup through the node agent) to R2.

To add one: list it under `statefulServices` in `helm/apps/values.yaml` (name, namespace, node
or nodeSelector, storage, selector, backup, reason), use
`{{ include "apps.nodeSelector" (list . "<name>") }}` in its template, then run
`python tests/helm/stateful_doc.py`.

## The contract (read by `k3sfleet backup` and `k3sfleet dr`)

| key | meaning |
|---|---|
| `name` | `helm/apps/templates/<name>.yaml`: an Argo CD Application (= Helm release) or, \
for `postgresql`, the CloudNativePG `Cluster` |
| `namespace` | namespace the service runs in; a restore restores this namespace |
| `node` | Kubernetes node name it is pinned to (`kubernetes.io/hostname`) |
| `nodeSelector` | label-based pinning, used when `node` is empty |
| `storage` | `storageClass` and `size` of its volume(s) |
| `selector` | labels of its objects inside the namespace (the backup's `labelSelector`) |
| `backup.schedule`, `backup.ttl` | Velero Schedule `stateful-<name>` in namespace `velero` |
| `reason` | why it keeps data |

Every backup made by a service's Schedule carries the labels
`velero.io/schedule-name=stateful-<name>` and `k3sfleet.io/stateful-service=<name>`; a manual
backup for a service should carry the second one too. To move a service to another node
without editing the list, set `nodeOverrides.<name>=<node>` as a Helm parameter on the root
Application `apps` (what `k3sfleet dr` does); commit the new `node` afterwards.

## Current pinned services

| service | namespace | pinned to | storage | selector | backup (cron, kept) | reason |
|---|---|---|---|---|---|---|
"""


def pinning(svc: dict[str, Any]) -> str:
    """How a service is pinned, as the doc shows it."""
    if svc.get("node"):
        return f"`kubernetes.io/hostname: {svc['node']}`"
    labels = svc.get("nodeSelector") or {}
    return ", ".join(f"`{k}: {v}`" for k, v in labels.items()) or "**not pinned**"


def render(values: dict[str, Any]) -> str:
    """The whole document for ``values`` (the parsed helm/apps/values.yaml)."""
    rows = []
    for svc in values.get("statefulServices") or []:
        storage = svc.get("storage") or {}
        backup = svc.get("backup") or {}
        backup_text = (
            f"`{backup['schedule']}`, {backup.get('ttl', '720h0m0s')}" if backup else "none"
        )
        selector = ", ".join(f"`{k}={v}`" for k, v in (svc.get("selector") or {}).items())
        rows.append(
            f"| {svc['name']} | {svc['namespace']} | {pinning(svc)} | "
            f"{storage.get('storageClass', 'local-path')} {storage.get('size', '?')} | "
            f"{selector or 'whole namespace'} | {backup_text} | {svc.get('reason', '')} |"
        )
    return HEADER + "\n".join(rows) + "\n"


def load_values(path: Path = VALUES) -> dict[str, Any]:
    """The parsed values file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


if __name__ == "__main__":
    DOC.write_text(render(load_values()), encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
