"""deploys/argocd.py: rendered values, HelmChart and root Applications, the commands the deploy
generates (pyinfra's @fake connector), and the preflight check for OIDC."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.context import ctx_host, ctx_state

from k3sfleet.deploys.gitops import (
    DEFAULTS,
    ArgocdConfig,
    argocd,
    argocd_values,
    config_problems,
    helmchart_manifest,
    ingress_addresses,
    is_target_server,
    oidc_problems,
    root_apps_manifest,
)
from k3sfleet.errors import K3sfleetError
from k3sfleet.inventory import Node
from k3sfleet.preflight import entry_problems
from k3sfleet.secret import Secret
from k3sfleet.settings import Settings

CLIENT_SECRET = "oidc-secret-Zq81-never-rendered"

MANIFESTS_DIR = DEFAULTS["argocd_manifests_dir"].value
BASE: dict[str, Any] = dict(
    chart_repo="https://argoproj.github.io/argo-helm",
    chart_version="9.1.4",
    domain="example.org",
    repo_url="https://git.example.org/fleet.git",
    velero_bucket="fleet-velero",
    r2_endpoint="https://acct.r2.cloudflarestorage.com",
)
OIDC: dict[str, Any] = dict(
    oidc_enabled=True,
    oidc_issuer_url="https://zitadel.example.org",
    oidc_client_id="227060711795262483@argocd-project",
    oidc_logout_url="https://zitadel.example.org/oidc/v1/end_session",
)


def values_of(cfg: ArgocdConfig) -> dict[str, Any]:
    """The values as the chart sees them: parsed from the HelmChart's valuesContent."""
    chart = yaml.safe_load(helmchart_manifest(cfg))
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    assert isinstance(values, dict)
    return values


def test_helmchart_is_a_pinned_k3s_helmchart() -> None:
    chart = yaml.safe_load(helmchart_manifest(ArgocdConfig(**BASE)))
    assert chart["apiVersion"] == "helm.cattle.io/v1"
    assert chart["kind"] == "HelmChart"
    assert chart["metadata"] == {
        "name": "argocd",
        "namespace": "kube-system",
        "labels": {"app.kubernetes.io/managed-by": "k3sfleet"},
    }
    spec = chart["spec"]
    assert spec["chart"] == "argo-cd"
    assert spec["repo"] == "https://argoproj.github.io/argo-helm"
    assert spec["version"] == "9.1.4"
    assert spec["targetNamespace"] == "argocd"
    assert spec["createNamespace"] is True
    assert spec["valuesContent"] == argocd_values(ArgocdConfig(**BASE)).strip("\n")


def test_rbac_defaults_map_groups_to_roles() -> None:
    rbac = values_of(ArgocdConfig(**BASE))["configs"]["rbac"]
    lines = rbac["policy.csv"].strip().splitlines()
    assert lines == ["g, argocd_administrators, role:admin", "g, argocd_users, role:readonly"]
    assert rbac["policy.default"] == ""
    assert rbac["scopes"] == "[groups]"


def test_rbac_is_overridable() -> None:
    cfg = ArgocdConfig(
        **BASE,
        policy_csv="g, ops, role:admin\np, dev, applications, get, */*, allow\n",
        policy_default="role:readonly",
        scopes="[groups, email]",
    )
    rbac = values_of(cfg)["configs"]["rbac"]
    assert rbac["policy.csv"].strip().splitlines() == [
        "g, ops, role:admin",
        "p, dev, applications, get, */*, allow",
    ]
    assert rbac["policy.default"] == "role:readonly"
    assert rbac["scopes"] == "[groups, email]"


def test_application_health_lets_sync_waves_wait() -> None:
    cm = values_of(ArgocdConfig(**BASE))["configs"]["cm"]
    lua = cm["resource.customizations.health.argoproj.io_Application"]
    assert "obj.status.health.status" in lua
    assert lua.strip().endswith("return hs")


def test_oidc_absent_when_disabled() -> None:
    values = values_of(ArgocdConfig(**BASE, oidc_issuer_url="https://ignored.example"))
    assert "oidc.config" not in values["configs"]["cm"]
    assert "ignored.example" not in helmchart_manifest(ArgocdConfig(**BASE))


def test_oidc_present_when_enabled_with_secret_reference() -> None:
    cm = values_of(ArgocdConfig(**BASE, **OIDC))["configs"]["cm"]
    oidc = yaml.safe_load(cm["oidc.config"])
    assert oidc["issuer"] == "https://zitadel.example.org"
    assert oidc["clientID"] == "227060711795262483@argocd-project"
    assert oidc["clientSecret"] == "$argocd-oidc:clientSecret"
    assert oidc["logoutURL"] == "https://zitadel.example.org/oidc/v1/end_session"
    assert "groups" in oidc["requestedScopes"]
    assert cm["url"] == "https://argocd.example.org"


def test_oidc_without_logout_url_has_no_logout_key() -> None:
    cm = values_of(ArgocdConfig(**BASE, **{**OIDC, "oidc_logout_url": None}))["configs"]["cm"]
    assert "logoutURL" not in yaml.safe_load(cm["oidc.config"])


def test_client_secret_never_rendered_from_host_data() -> None:
    data = {
        "argocd_chart_repo": BASE["chart_repo"],
        "argocd_chart_version": "9.1.4",
        "argocd_oidc_enabled": True,
        "argocd_oidc_issuer_url": OIDC["oidc_issuer_url"],
        "argocd_oidc_client_id": OIDC["oidc_client_id"],
        "argocd_oidc_client_secret": Secret(CLIENT_SECRET),
        "gitops_repo_url": BASE["repo_url"],
        "gitops_repo_password": Secret("repo-token-also-secret"),
        "domain": "example.org",
    }
    cfg = ArgocdConfig.from_data(data)
    rendered = helmchart_manifest(cfg) + root_apps_manifest(cfg)
    assert CLIENT_SECRET not in rendered
    assert "repo-token-also-secret" not in rendered
    assert "$argocd-oidc:clientSecret" in rendered


def test_from_data_applies_defaults() -> None:
    cfg = ArgocdConfig.from_data({"argocd_chart_repo": "r", "argocd_chart_version": "1"})
    assert cfg.scopes == "[groups]"
    assert cfg.revision == "main"
    assert cfg.apps_path == "helm/apps"
    assert cfg.server_hostname == "argocd"


def test_new_chart_version_changes_only_the_version() -> None:
    old = yaml.safe_load(helmchart_manifest(ArgocdConfig(**BASE)))
    new = yaml.safe_load(helmchart_manifest(ArgocdConfig(**{**BASE, "chart_version": "9.2.0"})))
    assert new["spec"]["version"] == "9.2.0"
    del old["spec"]["version"], new["spec"]["version"]
    assert old == new
    # same settings -> byte-identical file (files.put then changes nothing)
    assert helmchart_manifest(ArgocdConfig(**BASE)) == helmchart_manifest(ArgocdConfig(**BASE))


def test_root_applications() -> None:
    all_docs = [d for d in yaml.safe_load_all(root_apps_manifest(ArgocdConfig(**BASE))) if d]
    assert (all_docs[0]["kind"], all_docs[0]["metadata"]["name"]) == ("Namespace", "argocd")
    docs = [d for d in all_docs if d["kind"] == "Application"]
    assert [d["metadata"]["name"] for d in docs] == ["infrastructure", "apps"]
    for doc, path in zip(docs, ["helm/infrastructure", "helm/apps"], strict=True):
        assert doc["apiVersion"] == "argoproj.io/v1alpha1"
        assert doc["kind"] == "Application"
        assert doc["metadata"]["namespace"] == "argocd"
        src = doc["spec"]["source"]
        assert src["repoURL"] == "https://git.example.org/fleet.git"
        assert src["targetRevision"] == "main"
        assert src["path"] == path
        assert doc["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    infra = docs[0]["spec"]["source"]["helm"]["valuesObject"]
    assert infra["velero"] == {
        "bucket": "fleet-velero",
        "s3Url": "https://acct.r2.cloudflarestorage.com",
    }
    assert infra["global"]["domain"] == "example.org"
    apps = docs[1]["spec"]["source"]["helm"]["valuesObject"]
    assert apps["global"]["repoURL"] == "https://git.example.org/fleet.git"


def test_revision_and_paths_are_settings() -> None:
    cfg = ArgocdConfig(
        **{**BASE, "revision": "v2"}, infrastructure_path="infra", apps_path="deploy/apps"
    )
    docs = [
        d for d in yaml.safe_load_all(root_apps_manifest(cfg)) if d and d["kind"] != "Namespace"
    ]
    assert [d["spec"]["source"]["path"] for d in docs] == ["infra", "deploy/apps"]
    assert {d["spec"]["source"]["targetRevision"] for d in docs} == {"v2"}


@pytest.mark.parametrize(
    ("issuer", "client", "missing"),
    [
        (None, None, ["ARGOCD_OIDC_ISSUER_URL", "ARGOCD_OIDC_CLIENT_ID"]),
        ("https://i", None, ["ARGOCD_OIDC_CLIENT_ID"]),
        (None, "c", ["ARGOCD_OIDC_ISSUER_URL"]),
        ("https://i", "c", []),
    ],
)
def test_oidc_problems_name_what_is_missing(
    issuer: str | None, client: str | None, missing: list[str]
) -> None:
    problems = oidc_problems(True, issuer, client)
    assert [p.split()[0] for p in problems] == missing
    assert oidc_problems(False, None, None) == []


def test_config_problems_cover_required_settings() -> None:
    cfg = ArgocdConfig(chart_repo="r", chart_version="1", oidc_enabled=True)
    text = "\n".join(config_problems(cfg))
    for name in (
        "ARGOCD_OIDC_ISSUER_URL",
        "ARGOCD_OIDC_CLIENT_ID",
        "GITOPS_REPO_URL",
        "DOMAIN",
        "VELERO_BUCKET",
        "R2_ENDPOINT",
    ):
        assert name in text
    assert config_problems(ArgocdConfig(**BASE)) == []


def test_preflight_names_both_oidc_settings() -> None:
    settings = Settings(
        argocd_oidc_enabled=True,
        gitops_repo_url="https://g/x.git",
        domain="example.org",
        velero_bucket="b",
        r2_endpoint="https://r2",
    )
    nodes = [Node("s1", role="server")]
    problems = entry_problems(["argocd"], settings, nodes)
    suffix = "is not set (ARGOCD_OIDC_ENABLED=true) (needed by deploys/argocd.py)"
    assert problems == [f"ARGOCD_OIDC_ISSUER_URL {suffix}", f"ARGOCD_OIDC_CLIENT_ID {suffix}"]
    ok = Settings(
        gitops_repo_url="https://g/x.git",
        domain="example.org",
        velero_bucket="b",
        r2_endpoint="https://r2",
    )
    assert entry_problems(["argocd"], ok, nodes) == []


def test_target_server_is_first_unless_chosen() -> None:
    assert is_target_server("s1", ["s1", "s2"], None)
    assert not is_target_server("s2", ["s1", "s2"], None)
    assert is_target_server("s2", ["s1", "s2"], "s2")
    assert not is_target_server("a1", [], None)


# -- the commands the deploy generates (pyinfra @fake connector) --------------------------------

HOST_DATA: dict[str, Any] = {
    "argocd_chart_repo": BASE["chart_repo"],
    "argocd_chart_version": "9.1.4",
    "gitops_repo_url": BASE["repo_url"],
    "domain": "example.org",
    "velero_bucket": "fleet-velero",
    "r2_endpoint": BASE["r2_endpoint"],
    "fake_delay": 0,
    "fake_delay_jitter": 0,
}


def stat_line(path: str, size: int) -> str:
    return f"user=root group=root mode=-rw------- atime=1 mtime=1 ctime=1 size={size} '{path}'"


def generated(
    extra: dict[str, Any] | None = None, responses: dict[Any, Any] | None = None
) -> dict[str, list[str]]:
    """Run the deploy's prepare stage on two fake servers; host name -> commands."""
    data = {**HOST_DATA, **(extra or {}), "fake_responses": responses or {}}
    names = ["@fake/s1", "@fake/s2"]
    inventory = Inventory((names, data), k3s_servers=(names, {}))
    state = State(inventory, Config())
    connect_all(state)
    add_deploy(state, argocd, _sudo=True)
    out: dict[str, list[str]] = {}
    for host in inventory:
        commands: list[str] = []
        for op_hash in state.get_op_order():
            try:
                op_data = state.get_op_data_for_host(host, op_hash)
            except KeyError:
                continue
            with ctx_state.use(state), ctx_host.use(host):
                commands += [str(c) for c in op_data.command_generator()]
        out[host.name] = commands
    return out


def test_deploy_writes_both_manifests_on_first_server_only() -> None:
    commands = generated()
    assert commands["@fake/s2"] == []
    s1 = commands["@fake/s1"]
    uploads = [c for c in s1 if c.startswith("FileUploadCommand")]
    assert len(uploads) == 2
    assert any(c.endswith(f"{MANIFESTS_DIR}/argocd.yaml)") for c in uploads)
    assert any(c.endswith(f"{MANIFESTS_DIR}/argocd-root-apps.yaml)") for c in uploads)
    assert f"chmod 600 {MANIFESTS_DIR}/argocd.yaml" in s1
    assert f"chmod 600 {MANIFESTS_DIR}/argocd-root-apps.yaml" in s1
    assert all(CLIENT_SECRET not in c for c in s1)


def test_deploy_on_chosen_server() -> None:
    commands = generated({"argocd_server": "@fake/s2"})
    assert commands["@fake/s1"] == []
    assert any(c.startswith("FileUploadCommand") for c in commands["@fake/s2"])


def converged_responses(cfg: ArgocdConfig) -> dict[Any, Any]:
    """@fake responses of a server that already has exactly these manifests."""
    responses: dict[Any, Any] = {}
    for name, text in (
        ("argocd.yaml", helmchart_manifest(cfg)),
        ("argocd-root-apps.yaml", root_apps_manifest(cfg)),
    ):
        path = f"{MANIFESTS_DIR}/{name}"
        sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - pyinfra's own check
        responses[re.compile(rf"sha1sum .*{re.escape(path)}")] = f"{sha}  {path}"
        responses[re.compile(rf"stat .*{re.escape(path)}\b")] = stat_line(path, len(text))
    responses[re.compile(rf"stat .*{re.escape(MANIFESTS_DIR)} ")] = (
        f"user=root group=root mode=drwx------ atime=1 mtime=1 ctime=1 size=4096 '{MANIFESTS_DIR}'"
    )
    return responses


def test_deploy_refuses_missing_oidc_settings_before_any_operation() -> None:
    with pytest.raises(K3sfleetError) as info:
        generated({"argocd_oidc_enabled": True})
    assert "ARGOCD_OIDC_ISSUER_URL" in str(info.value)
    assert "ARGOCD_OIDC_CLIENT_ID" in str(info.value)


def test_converged_server_gets_no_commands() -> None:
    cfg = ArgocdConfig.from_data(HOST_DATA)
    commands = generated(responses=converged_responses(cfg))
    assert commands == {"@fake/s1": [], "@fake/s2": []}


def test_new_chart_version_uploads_only_the_helmchart() -> None:
    cfg = ArgocdConfig.from_data(HOST_DATA)
    commands = generated({"argocd_chart_version": "9.2.0"}, converged_responses(cfg))
    uploads = [c for c in commands["@fake/s1"] if c.startswith("FileUploadCommand")]
    assert len(uploads) == 1
    assert uploads[0].endswith(f"{MANIFESTS_DIR}/argocd.yaml)")


def test_dns_targets_are_the_public_addresses_of_the_ingress_nodes() -> None:
    ingress = {"k3s_node_labels": {"k3sfleet/ingress": "true"}}
    hosts = [
        ("@fake/s1", {"k3s_role": "server", "k3sfleet_public_address": "198.51.100.11"}),
        ("@fake/a1", {"k3s_role": "agent", "k3sfleet_public_address": "203.0.113.21",
                      "k3sfleet_tailnet_address": "100.64.0.21", **ingress}),
        ("@fake/a2", {"k3s_role": "agent", "k3sfleet_public_address": "192.0.2.22", **ingress}),
        # a relabelled firewall_ingress_label is followed as the firewall follows it
        ("@fake/a3", {"k3s_role": "agent", "k3sfleet_public_address": "192.0.2.23",
                      "firewall_ingress_label": "edge", "k3s_node_labels": {"edge": "true"}}),
    ]
    inventory = Inventory(([(n, d) for n, d in hosts], {}))
    assert ingress_addresses(inventory) == ("192.0.2.22", "192.0.2.23", "203.0.113.21")
    cfg = ArgocdConfig(**BASE, public_addresses=ingress_addresses(inventory))
    infra = next(
        d for d in yaml.safe_load_all(root_apps_manifest(cfg))
        if d and d["metadata"]["name"] == "infrastructure"
    )
    values = infra["spec"]["source"]["helm"]["valuesObject"]
    assert values["gateway"] == {"publicAddresses": ["192.0.2.22", "192.0.2.23", "203.0.113.21"]}
    assert "100.64.0.21" not in root_apps_manifest(cfg)

