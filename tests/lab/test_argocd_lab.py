"""deploys/argocd.py on a lab cluster: the HelmChart and the root Applications land in the first
server's manifests directory (0600), the stand-in k3s deploy controller applies them, the
objects carry the rendered values, a second run changes nothing, a new chart version updates the
HelmChart, and OIDC without issuer/client ID stops the run before any host is touched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from labcli import deploy_cluster

from k3sfleet.deploys.gitops import (
    ArgocdConfig,
    argocd_values,
    helmchart_manifest,
    root_apps_manifest,
)
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = "/var/lib/rancher/k3s/server/manifests"
pytestmark = pytest.mark.lab

SETTINGS = {
    "GITOPS_REPO_URL": "https://git.example.org/fleet.git",
    "GITOPS_REVISION": "main",
    "DOMAIN": "fleet.example.org",
    "VELERO_BUCKET": "fleet-velero",
    "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com",
    "ARGOCD_CHART_VERSION": "9.1.4",
    "ARGOCD_OIDC_ENABLED": "false",
}


def config(settings: Mapping[str, str]) -> ArgocdConfig:
    """What the deploy renders from these settings (the defaults for everything else)."""
    return ArgocdConfig.from_data(
        {
            "argocd_chart_repo": "https://argoproj.github.io/argo-helm",
            "argocd_chart_version": settings["ARGOCD_CHART_VERSION"],
            "gitops_repo_url": settings["GITOPS_REPO_URL"],
            "gitops_revision": settings["GITOPS_REVISION"],
            "domain": settings["DOMAIN"],
            "velero_bucket": settings["VELERO_BUCKET"],
            "r2_endpoint": settings["R2_ENDPOINT"],
        }
    )


def pyinfra(inventory: Path, entry: str, env: Mapping[str, str] | None = None) -> Any:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ARGOCD_", "GITOPS_"))}
    environ.update(env or {})
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "pyinfra", "-y", str(inventory), f"deploys/{entry}.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=environ,
    )


@pytest.fixture(scope="module")
def cluster(lab_factory: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    lab = lab_factory(servers=1, agents=1)
    inventory = tmp_path_factory.mktemp("argocd") / "inventory.py"
    lab.write_inventory(inventory)
    deploy_cluster(inventory, drop=("ARGOCD_", "GITOPS_"))
    return lab, inventory


def read_remote(lab: Any, path: str) -> str:
    rc, out, err = lab.ssh(lab.servers[0], f"sudo cat {path}")
    assert rc == 0, err
    return str(out)



def custom(inventory: Path, group: str, version: str, ns: str, plural: str, name: str) -> Any:
    from kubernetes import client

    from k3sfleet.kube import cluster_api

    with cluster_api(inventory) as api:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(
            group, version, ns, plural, name
        )


def test_argocd_deploy_converges_and_is_applied(
    cluster: Any, pyinfra_counts: Callable[[str], dict[str, int]]
) -> None:
    changed_counts = pyinfra_counts
    lab, inventory = cluster
    first = pyinfra(inventory, "argocd", SETTINGS)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:] + first.stderr[-2000:]
    assert changed_counts(first.stdout + first.stderr)["success"] >= 2

    cfg = config(SETTINGS)
    assert read_remote(lab, f"{MANIFESTS}/argocd.yaml") == helmchart_manifest(cfg)
    assert read_remote(lab, f"{MANIFESTS}/argocd-root-apps.yaml") == root_apps_manifest(cfg)
    rc, mode, _ = lab.ssh(lab.servers[0], f"sudo stat -c '%a %U' {MANIFESTS}/argocd.yaml")
    assert (rc, mode.strip()) == (0, "600 root")
    # only the first server gets it; agents have no manifests directory of ours
    rc, _, _ = lab.ssh(lab.agents[0], f"sudo test -e {MANIFESTS}/argocd.yaml")
    assert rc != 0

    chart = wait_for(
        "HelmChart kube-system/argocd",
        lambda: custom(inventory, "helm.cattle.io", "v1", "kube-system", "helmcharts", "argocd"),
        30,
    )
    assert chart["spec"]["chart"] == "argo-cd"
    assert chart["spec"]["version"] == "9.1.4"
    assert chart["spec"]["targetNamespace"] == "argocd"
    assert chart["spec"]["valuesContent"] == argocd_values(cfg).strip("\n")
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    assert "oidc.config" not in values["configs"]["cm"]
    for name, path in (("infrastructure", "helm/infrastructure"), ("apps", "helm/apps")):
        app = wait_for(
            f"Application argocd/{name}",
            lambda n=name: custom(
                inventory, "argoproj.io", "v1alpha1", "argocd", "applications", n
            ),
            30,
        )
        assert app["spec"]["source"]["path"] == path
        assert app["spec"]["source"]["repoURL"] == SETTINGS["GITOPS_REPO_URL"]

    # second run: nothing changes on the host, nothing is written to the API
    writes_before = len(lab.api_writes(lab.servers[0]))
    second = pyinfra(inventory, "argocd", SETTINGS)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    assert changed_counts(second.stdout + second.stderr)["success"] == 0, second.stderr[-3000:]
    time.sleep(5)  # two deploy-controller passes
    new_writes = lab.api_writes(lab.servers[0])[writes_before:]
    assert not [w for w in new_writes if "helmcharts" in str(w) or "applications" in str(w)]

    # a new chart version rewrites the HelmChart and k3s applies it
    newer = {**SETTINGS, "ARGOCD_CHART_VERSION": "9.2.0"}
    third = pyinfra(inventory, "argocd", newer)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-4000:]
    assert changed_counts(third.stdout + third.stderr)["success"] >= 1
    wait_for(
        "HelmChart version 9.2.0",
        lambda: (
            custom(inventory, "helm.cattle.io", "v1", "kube-system", "helmcharts", "argocd")[
                "spec"
            ]["version"]
            == "9.2.0"
        ),
        30,
    )
    assert read_remote(lab, f"{MANIFESTS}/argocd-root-apps.yaml") == root_apps_manifest(cfg)


def test_oidc_without_issuer_and_client_stops_before_connecting(cluster: Any) -> None:
    lab, inventory = cluster
    before = read_remote(lab, f"{MANIFESTS}/argocd.yaml")
    run = pyinfra(inventory, "argocd", {**SETTINGS, "ARGOCD_OIDC_ENABLED": "true"})
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "ARGOCD_OIDC_ISSUER_URL" in output
    assert "ARGOCD_OIDC_CLIENT_ID" in output
    assert "needed by deploys/argocd.py" in output
    assert read_remote(lab, f"{MANIFESTS}/argocd.yaml") == before


def test_oidc_enabled_renders_reference_not_secret(cluster: Any) -> None:
    lab, inventory = cluster
    secret = "lab-oidc-secret-4f1c-never-on-disk"
    oidc = {
        **SETTINGS,
        "ARGOCD_OIDC_ENABLED": "true",
        "ARGOCD_OIDC_ISSUER_URL": "https://zitadel.fleet.example.org",
        "ARGOCD_OIDC_CLIENT_ID": "argocd@fleet",
        "ARGOCD_OIDC_CLIENT_SECRET": secret,
    }
    run = pyinfra(inventory, "argocd", oidc)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert secret not in run.stdout + run.stderr
    text = read_remote(lab, f"{MANIFESTS}/argocd.yaml")
    assert secret not in text
    assert "$argocd-oidc:clientSecret" in text
    chart = wait_for(
        "HelmChart with OIDC",
        lambda: (
            (c := custom(inventory, "helm.cattle.io", "v1", "kube-system", "helmcharts", "argocd"))
            and "oidc.config" in c["spec"]["valuesContent"]
            and c
        ),
        30,
    )
    assert secret not in str(chart)
