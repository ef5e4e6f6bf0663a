"""Argo CD through k3s's Helm controller and the two root App-of-Apps Applications (``argocd``).

The entry file ``deploys/argocd.py`` runs it.

On the first server only it writes two manifests into K3s's auto-deploy directory
(``/var/lib/rancher/k3s/server/manifests``), which K3s applies and re-applies whenever a file
changes:

- ``argocd.yaml``: a ``helm.cattle.io/v1`` ``HelmChart`` for the official argo-cd chart (pinned
  ``ARGOCD_CHART_VERSION`` from ``ARGOCD_CHART_REPO``) with values rendered from
  ``templates/argocd-values.yaml.j2``: OIDC (``ARGOCD_OIDC_*``) when enabled, RBAC, URL;
- ``argocd-root-apps.yaml``: the Applications ``infrastructure`` and ``apps`` that sync
  ``helm/infrastructure`` and ``helm/apps`` from ``GITOPS_REPO_URL`` at ``GITOPS_REVISION``.

Nothing secret is rendered: the OIDC client secret is the reference ``$argocd-oidc:clientSecret``
and a private repository's credentials are the Secret ``gitops-repo``, both created by
``deploys/secrets.py``. A second run with the same settings changes nothing (``files.put``
compares checksums); a new chart version or changed values rewrite the file and K3s upgrades the
release.

Example (your own deploy)::

    from k3sfleet.deploys.gitops import argocd

    argocd()
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from k3sfleet.errors import K3sfleetError
from k3sfleet.inventory import is_ingress
from k3sfleet.settings import (
    APPS_APPLICATION,
    ARGOCD_NAMESPACE,
    INFRASTRUCTURE_APPLICATION,
    Default,
    Settings,
    data_value,
    default_values,
)
from k3sfleet.templating import render

DEFAULTS: dict[str, Default] = {
    "argocd_manifests_dir": Default(
        "/var/lib/rancher/k3s/server/manifests", "K3s's auto-deploy directory on the server"),
    "argocd_hostname": Default(None, "host name of the Argo CD UI; `null`: `argocd.<DOMAIN>`"),
    "argocd_admin_enabled": Default(True, "keep Argo CD's local admin user"),
    "argocd_rbac_policy_csv": Default(
        "g, argocd_administrators, role:admin\ng, argocd_users, role:readonly\n",
        "Argo CD RBAC policy (`policy.csv`): OIDC groups to roles"),
    "argocd_rbac_policy_default": Default("", "role of users no policy line names"),
    "argocd_rbac_scopes": Default("[groups]", "OIDC claims the RBAC policy matches"),
    "argocd_server": Default(None, "the server that gets the manifests; `null`: the first one"),
}


@dataclass(frozen=True)
class ArgocdConfig:
    """Everything the manifests are rendered from (no secret among it).

    Example::

        ArgocdConfig.from_data(host.data)   # from the settings and data defaults
    """

    chart_repo: str
    chart_version: str
    domain: str | None = None
    hostname: str | None = None
    admin_enabled: bool = DEFAULTS["argocd_admin_enabled"].value
    oidc_enabled: bool = Settings.argocd_oidc_enabled
    oidc_issuer_url: str | None = None
    oidc_client_id: str | None = None
    oidc_logout_url: str | None = None
    policy_csv: str = DEFAULTS["argocd_rbac_policy_csv"].value
    policy_default: str = DEFAULTS["argocd_rbac_policy_default"].value
    scopes: str = DEFAULTS["argocd_rbac_scopes"].value
    repo_url: str | None = None
    revision: str = Settings.gitops_revision
    infrastructure_path: str = Settings.gitops_infrastructure_path
    apps_path: str = Settings.gitops_apps_path
    velero_bucket: str | None = None
    r2_endpoint: str | None = None
    public_addresses: tuple[str, ...] = ()

    @classmethod
    def from_data(cls, data: Any) -> ArgocdConfig:
        """Read the settings (host data under their field names) and the argocd_* defaults."""

        def get(key: str) -> Any:
            return data_value(data, key, DEFAULTS)

        return cls(
            chart_repo=get("argocd_chart_repo"),
            chart_version=get("argocd_chart_version"),
            domain=get("domain"),
            hostname=get("argocd_hostname"),
            admin_enabled=bool(get("argocd_admin_enabled")),
            oidc_enabled=bool(get("argocd_oidc_enabled")),
            oidc_issuer_url=get("argocd_oidc_issuer_url"),
            oidc_client_id=get("argocd_oidc_client_id"),
            oidc_logout_url=get("argocd_oidc_logout_url"),
            policy_csv=get("argocd_rbac_policy_csv"),
            policy_default=get("argocd_rbac_policy_default"),
            scopes=get("argocd_rbac_scopes"),
            repo_url=get("gitops_repo_url"),
            revision=get("gitops_revision"),
            infrastructure_path=get("gitops_infrastructure_path"),
            apps_path=get("gitops_apps_path"),
            velero_bucket=get("velero_bucket"),
            r2_endpoint=get("r2_endpoint"),
        )

    @property
    def server_hostname(self) -> str:
        """The UI's host name: ``argocd_hostname``, else ``argocd.<domain>``, else ``argocd``."""
        if self.hostname:
            return self.hostname
        return f"argocd.{self.domain}" if self.domain else "argocd"


def oidc_problems(enabled: bool, issuer_url: str | None, client_id: str | None) -> list[str]:
    """What is missing for OIDC, as text (nothing when OIDC is off).

    Example::

        oidc_problems(True, None, "argocd")
        # ['ARGOCD_OIDC_ISSUER_URL is not set (ARGOCD_OIDC_ENABLED=true)']
    """
    if not enabled:
        return []
    missing = [
        name
        for name, value in (
            ("ARGOCD_OIDC_ISSUER_URL", issuer_url),
            ("ARGOCD_OIDC_CLIENT_ID", client_id),
        )
        if not value
    ]
    return [f"{name} is not set (ARGOCD_OIDC_ENABLED=true)" for name in missing]


def config_problems(cfg: ArgocdConfig) -> list[str]:
    """Every reason ``cfg`` cannot be deployed, as text."""
    problems = oidc_problems(cfg.oidc_enabled, cfg.oidc_issuer_url, cfg.oidc_client_id)
    if not cfg.chart_version:
        problems.append("ARGOCD_CHART_VERSION is not set")
    for name, value in (
        ("GITOPS_REPO_URL", cfg.repo_url),
        ("DOMAIN", cfg.domain),
        ("VELERO_BUCKET", cfg.velero_bucket),
        ("R2_ENDPOINT", cfg.r2_endpoint),
    ):
        if not value:
            problems.append(f"{name} is not set")
    return problems


def argocd_values(cfg: ArgocdConfig) -> str:
    """The argo-cd chart values (YAML text) for ``cfg``.

    Example::

        yaml.safe_load(argocd_values(cfg))["configs"]["rbac"]["scopes"]   # '[groups]'
    """
    text = render(
        "argocd-values.yaml.j2",
        hostname=cfg.server_hostname,
        url=f"https://{cfg.server_hostname}",
        admin_enabled=cfg.admin_enabled,
        oidc_enabled=cfg.oidc_enabled,
        oidc_issuer_url=cfg.oidc_issuer_url,
        oidc_client_id=cfg.oidc_client_id,
        oidc_logout_url=cfg.oidc_logout_url,
        policy_csv=cfg.policy_csv.strip("\n"),
        policy_default=cfg.policy_default,
        scopes=cfg.scopes,
    )
    yaml.safe_load(text)  # a template mistake fails here, not in the cluster
    return text


def helmchart_manifest(cfg: ArgocdConfig) -> str:
    """The ``HelmChart`` manifest (YAML text) that installs Argo CD with ``argocd_values``."""
    text = render(
        "argocd-helmchart.yaml.j2",
        chart_repo=cfg.chart_repo,
        chart_version=cfg.chart_version,
        namespace=ARGOCD_NAMESPACE,
        values=argocd_values(cfg).strip("\n"),
    )
    yaml.safe_load(text)
    return text


def root_apps_manifest(cfg: ArgocdConfig) -> str:
    """The root Applications ``infrastructure`` and ``apps`` (YAML text, two documents).

    Each passes the settings its chart needs as Helm values (``global.domain``, Velero's R2
    bucket and endpoint, the ingress nodes' public addresses for DNS, the repository for apps
    that live in it).
    """
    infra_values: dict[str, Any] = {"global": {"domain": cfg.domain or "example.com"}}
    velero: dict[str, Any] = {}
    if cfg.velero_bucket:
        velero["bucket"] = cfg.velero_bucket
    if cfg.r2_endpoint:
        velero["s3Url"] = cfg.r2_endpoint
    if velero:
        infra_values["velero"] = velero
    if cfg.public_addresses:
        infra_values["gateway"] = {"publicAddresses": list(cfg.public_addresses)}
    apps_values = {
        "global": {
            "domain": cfg.domain or "example.com",
            "repoURL": cfg.repo_url,
            "targetRevision": cfg.revision,
        }
    }
    text = render(
        "argocd-root-apps.yaml.j2",
        namespace=ARGOCD_NAMESPACE,
        repo_url=cfg.repo_url,
        revision=cfg.revision,
        apps=[
            {"name": INFRASTRUCTURE_APPLICATION, "path": cfg.infrastructure_path,
             "values": infra_values},
            {"name": APPS_APPLICATION, "path": cfg.apps_path, "values": apps_values},
        ],
    )
    list(yaml.safe_load_all(text))
    return text


def ingress_addresses(hosts: Iterable[Any]) -> tuple[str, ...]:
    """The public addresses of the ingress nodes among ``hosts`` (pyinfra hosts), sorted: what
    DNS points at (``gateway.publicAddresses``).

    Example::

        ingress_addresses(host.inventory)   # ("198.51.100.11", "203.0.113.21")
    """
    found = {
        str(h.data.get("k3sfleet_public_address"))
        for h in hosts
        if h.data.get("k3s_role")
        and is_ingress(h.data.get("k3s_node_labels") or {}, h.data)
        and h.data.get("k3sfleet_public_address")
    }
    return tuple(sorted(found))


def is_target_server(host_name: str, servers: list[str], chosen: str | None) -> bool:
    """Whether ``host_name`` gets the manifests: the chosen server, else the first server."""
    if chosen:
        return host_name == chosen
    return bool(servers) and host_name == servers[0]


@deploy("Argo CD", data_defaults=default_values(DEFAULTS))
def argocd() -> None:
    """Write the Argo CD HelmChart and the root Applications on the first server."""
    servers = [h.name for h in host.inventory.get_group("k3s_servers", [])]
    if not is_target_server(host.name, servers, host.data.get("argocd_server")):
        return
    cfg = dataclasses.replace(
        ArgocdConfig.from_data(host.data), public_addresses=ingress_addresses(host.inventory)
    )
    problems = config_problems(cfg)
    if problems:
        # preflight stops the CLI before connecting; this guards use from Python.
        raise K3sfleetError("deploys/argocd.py cannot run: " + "; ".join(problems))
    directory = host.data.get("argocd_manifests_dir")
    files.put(
        name=f"Argo CD HelmChart (argo-cd {cfg.chart_version})",
        src=io.StringIO(helmchart_manifest(cfg)),
        dest=f"{directory}/argocd.yaml",
        user="root",
        group="root",
        mode="0600",
    )
    files.put(
        name="Argo CD root Applications (infrastructure, apps)",
        src=io.StringIO(root_apps_manifest(cfg)),
        dest=f"{directory}/argocd-root-apps.yaml",
        user="root",
        group="root",
        mode="0600",
    )
