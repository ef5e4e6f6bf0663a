"""What each entry file needs before any host is contacted.

``ENTRY_CHECKS`` maps an entry file's stem (``deploys/cluster.py`` -> ``cluster``) to functions
that return problems as text. ``inventory.groups`` runs the checks for the entry files on the
pyinfra command line, so a missing setting stops the run before pyinfra connects.

Example::

    entry_problems(["bootstrap"], settings, nodes)
    # ['TAILSCALE_AUTH_KEY is not set (needed by deploys/bootstrap.py)']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from k3sfleet.secret import reveal

if TYPE_CHECKING:
    from k3sfleet.inventory import Node
    from k3sfleet.settings import Settings

Check = Callable[["Settings", Sequence["Node"]], list[str]]


def require(*names: str) -> Check:
    """A check that the named settings are set."""

    def check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
        return [f"{name} is not set" for name in settings.missing(*names)]

    return check


def tailscale_key_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """The Tailscale auth key is needed by whoever runs `tailscale up`; with vpn-auth it must
    survive K3s's parser.

    K3s (pkg/vpn/vpn.go ``getVPNAuthInfo``, v1.34.2+k3s1) splits the vpn-auth value on ``,``
    and each item on ``=`` and keeps only the part after the first ``=``: a key with ``=`` is
    silently cut, a key with ``,`` becomes an "unknown parameter" and K3s does not start.
    """
    if settings.tailscale_up_by != "deploy" and not settings.k3s_vpn_auth:
        return []
    missing = require("tailscale_auth_key")(settings, nodes)
    if missing or not settings.k3s_vpn_auth:
        return missing
    key = reveal(settings.tailscale_auth_key)
    bad = [repr(c) for c in (",", "=") if c in str(key)]
    if bad:
        return [
            f"TAILSCALE_AUTH_KEY contains {' and '.join(bad)}, which K3s's vpn-auth parser "
            "splits on (the key would reach Tailscale cut or not at all): make a new key, or "
            "set K3S_VPN_AUTH=false"
        ]
    return []


def vpn_args_problems(data: Mapping[str, Any]) -> list[str]:
    """With vpn-auth the ``tailscale up`` flags also go to k3s as vpn-auth ``extraArgs``, which
    k3s splits at whitespace (k3s v1.34.2+k3s1 ``pkg/vpn/vpn.go`` ``processCLIArgs``): a flag
    holding whitespace would reach ``tailscale up`` cut in pieces.

    Example::

        vpn_args_problems({"k3s_vpn_auth": True, "tailscale_extra_args": ["--a b"]})
        # ["tailscale_extra_args: '--a b' holds whitespace, which k3s's vpn-auth ..."]
    """
    if not data.get("k3s_vpn_auth"):
        return []
    return [
        f"tailscale_extra_args: {arg!r} holds whitespace, which k3s's vpn-auth extraArgs "
        "cannot carry"
        for arg in data.get("tailscale_extra_args") or []
        if len(str(arg).split()) != 1
    ]


def vpn_args_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """The ``tailscale up`` flags k3s gets through vpn-auth ``extraArgs`` (no whitespace)."""
    return [
        f"{n.name}: {p}"
        for n in nodes
        for p in vpn_args_problems({**settings.as_host_data(), **n.data})
    ]


def bootstrap_data_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """The bootstrap deploys' host data: admins, sshd options, firewall rules, root login."""
    from k3sfleet.deploys.bootstrap import data_problems

    return data_problems(settings, nodes)


def argocd_oidc_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """With ARGOCD_OIDC_ENABLED, the issuer URL and client ID are needed (both named)."""
    if not settings.argocd_oidc_enabled:
        return []
    missing = settings.missing("argocd_oidc_issuer_url", "argocd_oidc_client_id")
    return [f"{name} is not set (ARGOCD_OIDC_ENABLED=true)" for name in missing]


def k3s_version_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """K3S_VERSION must be a k3s release and not known bad for the servers' configuration
    (k3sfleet.versions)."""
    from k3sfleet.versions import etcd_on_tailnet, refusal

    problem = refusal(
        settings.k3s_version,
        allow=settings.k3s_allow_versions,
        vpn_auth=settings.k3s_vpn_auth,
        etcd_on_tailnet=all(etcd_on_tailnet(n.data) for n in nodes if n.role == "server"),
    )
    return [problem] if problem else []


def k3s_etcd_s3_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """With K3S_ETCD_S3, the servers need the R2 bucket, endpoint and keys."""
    if not settings.k3s_etcd_s3:
        return []
    names = ("k3s_etcd_s3_bucket", "r2_endpoint", "r2_access_key_id", "r2_secret_access_key")
    return [f"{name} is not set (K3S_ETCD_S3=true)" for name in settings.missing(*names)]


def k3s_reset_confirm_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """deploys/reset.py destroys the cluster: it needs K3S_RESET_CONFIRM=yes-destroy-k3s."""
    if settings.k3s_reset_confirm == "yes-destroy-k3s":
        return []
    return ["K3S_RESET_CONFIRM is not yes-destroy-k3s (reset destroys K3s and its data)"]


K3S_CHECKS: list[Check] = [k3s_version_check, k3s_etcd_s3_check]

def secrets_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """Every variable deploys/secrets.py's list needs (all unset ones named)."""
    from k3sfleet.k8s_secrets import preflight_problems

    return preflight_problems(settings)


def databases_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """appDatabases well formed, each app's namespace found, each app's password in the vault."""
    from k3sfleet.databases import preflight_problems

    return preflight_problems(settings)


ENTRY_CHECKS: dict[str, list[Check]] = {
    "argocd": [
        argocd_oidc_check,
        require("gitops_repo_url", "domain", "velero_bucket", "r2_endpoint"),
    ],
    "bootstrap": [tailscale_key_check, bootstrap_data_check],
    "cluster": [tailscale_key_check, vpn_args_check, *K3S_CHECKS],
    "databases": [databases_check],
    "init_cluster": [tailscale_key_check, bootstrap_data_check, *K3S_CHECKS],
    "reset": [k3s_reset_confirm_check],
    "secrets": [secrets_check],
    "upgrade": [k3s_version_check],
}
# deploys/init_cluster.py runs bootstrap, cluster and argocd: it needs what each of them needs.
ENTRY_CHECKS["init_cluster"] += ENTRY_CHECKS["argocd"]


def entry_problems(
    entry_files: Sequence[str], settings: Settings, nodes: Sequence[Node]
) -> list[str]:
    """Problems of every entry file in ``entry_files``, each naming the file, without repeats."""
    problems: list[str] = []
    for entry in entry_files:
        for check in ENTRY_CHECKS.get(entry, []):
            for problem in check(settings, nodes):
                line = f"{problem} (needed by deploys/{entry}.py)"
                if line not in problems:
                    problems.append(line)
    return problems
