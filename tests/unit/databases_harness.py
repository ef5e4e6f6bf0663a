"""A project with an apps chart declaring ``appDatabases``, for the databases tests
(tests/unit/test_databases.py, tests/k8s/test_databases_api.py).

Example::

    project = make_project(tmp_path, [{"name": "myapp", "database": "my_db",
                                       "username": "my_user"}], {"myapp": APP_TEMPLATE})
"""

from __future__ import annotations

from pathlib import Path

import yaml

# an app's Argo CD Application; its destination namespace is where <app>-db goes
APP_TEMPLATE = """{{- if .Values.myapp.enabled }}
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: myapp
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "apps.labels" . | nindent 4 }}
spec:
  project: {{ .Values.global.project }}
  source:
    repoURL: {{ .Values.global.repoURL }}
  destination:
    server: https://kubernetes.default.svc
    namespace: web
  {{- include "apps.syncPolicy" . | nindent 2 }}
{{- end }}
"""


def make_project(
    tmp_path: Path,
    apps: list[dict[str, str]],
    templates: dict[str, str],
    pg_namespace: str = "db",
) -> Path:
    """``tmp_path`` with helm/apps: ``apps`` as appDatabases, the PostgreSQL Cluster
    "postgresql" in ``pg_namespace`` on port 5433, and ``templates`` (name -> text)."""
    chart = tmp_path / "helm" / "apps"
    (chart / "templates").mkdir(parents=True)
    (chart / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "appDatabases": apps,
                "postgresql": {
                    "clusterName": "postgresql", "namespace": pg_namespace, "port": 5433
                },
            }
        )
    )
    for name, text in templates.items():
        (chart / "templates" / f"{name}.yaml").write_text(text)
    return tmp_path
