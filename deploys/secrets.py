"""The cluster's Kubernetes Secrets: the one list to edit, and the entry file that applies it.

Entry file. Run: ``pyinfra inventory.py deploys/secrets.py`` (or ``k3sfleet deploy secrets``;
``--dry`` lists which Secrets and keys would change, never values). It runs the ``secrets``
deploy (``deploys/cluster_secrets.py``) with ``SECRETS``. Every variable the list needs is
checked before the cluster is touched (all missing names in one message); namespaces are
created; a Secret is written only when its content differs. The API is reached from this
machine through ``k3sfleet.kube``.

This replaces the Ansible repository's ``setup-secrets.yml`` and
``setup-secrets-tailscale.yml``. To add a Secret, add a ``SecretSpec`` below: values come from
``env("NAME")`` (a setting, any exported variable or ``.envrc`` line, else vault key
``vault_name``), ``vault("vault_key")``, ``literal("...")`` or ``template("...${NAME}...")``.

Example (your own deploy)::

    from k3sfleet.deploys.cluster_secrets import secrets
    from k3sfleet.deploys.secrets import SECRETS

    secrets(specs=[s for s in SECRETS if s.namespace != "velero"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from k3sfleet.deploys.cluster_secrets import secrets
from k3sfleet.entry import under_pyinfra
from k3sfleet.k8s_secrets import (
    SecretSpec,
    Values,
    env,
    literal,
    preflight_problems,
    template,
)
from k3sfleet.settings import ARGOCD_NAMESPACE

if TYPE_CHECKING:
    from k3sfleet.inventory import Node
    from k3sfleet.settings import Settings

# Velero's "cloud" key is an AWS credentials file (the aws plugin reads R2 through it).
VELERO_CLOUD = """[default]
aws_access_key_id=${R2_ACCESS_KEY_ID}
aws_secret_access_key=${R2_SECRET_ACCESS_KEY}
"""


def _rancher(values: Values) -> bool:
    """Rancher's password when Rancher is enabled in helm/infrastructure, or the variable set."""
    enabled = values.helm_value("gitops_infrastructure_path", "rancher.enabled", False)
    return bool(enabled) or values.is_set("RANCHER_PASSWORD")


def _pgadmin(values: Values) -> bool:
    return bool(values.helm_value("gitops_apps_path", "pgadmin4.enabled", False)) or (
        values.is_set("PGADMIN_PASSWORD")
    )


def _private_repo(values: Values) -> bool:
    return values.is_set("GITOPS_REPO_PASSWORD")


SECRETS: list[SecretSpec] = [
    SecretSpec(
        "velero",
        "velero-credentials",
        {"cloud": template(VELERO_CLOUD)},
        description="R2 credentials for Velero (helm/infrastructure velero.credentialsSecret)",
    ),
    SecretSpec(
        "cert-manager",
        "cloudflare-api-token",
        {"api-token": env("CLOUDFLARE_API_TOKEN")},
        description="DNS-01 challenges (certManager.cloudflareSecret)",
    ),
    SecretSpec(
        "external-dns",
        "cloudflare-api-token",
        {"api-token": env("CLOUDFLARE_API_TOKEN")},
        description="DNS records (externalDns.cloudflareSecret)",
    ),
    SecretSpec(
        "tailscale",
        "operator-oauth",
        {
            "client_id": env("TAILSCALE_OAUTH_CLIENT_ID"),
            "client_secret": env("TAILSCALE_OAUTH_CLIENT_SECRET"),
        },
        description="OAuth client of the Tailscale Kubernetes operator",
    ),
    SecretSpec(
        "database",
        "postgresql-superuser",
        {"username": literal("postgres"), "password": env("POSTGRES_PASSWORD")},
        type="kubernetes.io/basic-auth",
        # CloudNativePG applies a changed password at once (docs/src/labels_annotations.md v1.30.0)
        labels={"cnpg.io/reload": "true"},
        description="PostgreSQL superuser (helm/apps postgresql.superuserSecret, CloudNativePG)",
    ),
    SecretSpec(
        "database",
        "pgadmin4",
        {"password": env("PGADMIN_PASSWORD")},
        when=_pgadmin,
        description="pgAdmin login (helm/apps pgadmin4.existingSecret)",
    ),
    SecretSpec(
        ARGOCD_NAMESPACE,
        "argocd-oidc",
        {"clientSecret": env("ARGOCD_OIDC_CLIENT_SECRET")},
        labels={"app.kubernetes.io/part-of": "argocd"},
        when=lambda values: values.flag("ARGOCD_OIDC_ENABLED"),
        description="Argo CD reads it as $argocd-oidc:clientSecret",
    ),
    SecretSpec(
        ARGOCD_NAMESPACE,
        "gitops-repo",
        {
            "type": literal("git"),
            "url": env("GITOPS_REPO_URL"),
            "username": env("GITOPS_REPO_USERNAME"),
            "password": env("GITOPS_REPO_PASSWORD"),
        },
        labels={"argocd.argoproj.io/secret-type": "repository"},
        when=_private_repo,
        description="credentials of a private GitOps repository",
    ),
    SecretSpec(
        "cattle-system",
        "bootstrap-secret",
        {"bootstrapPassword": env("RANCHER_PASSWORD")},
        when=_rancher,
        description="Rancher's first admin password (rancher.bootstrapSecret)",
    ),
]


def secrets_preflight(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """Every variable ``SECRETS`` needs and lacks (all of them named at once)."""
    return preflight_problems(settings, SECRETS)


# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [secrets_preflight]

if under_pyinfra():
    secrets(specs=SECRETS)
