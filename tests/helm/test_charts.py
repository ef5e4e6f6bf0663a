"""helm/infrastructure and helm/apps with the real helm binary: lint, template (defaults and every
optional component on), Kubernetes schema validation (kubernetes-validate; custom resources get
structural checks instead), and the contracts other parts of k3sfleet read (appDatabases,
statefulServices, docs/stateful-services.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from stateful_doc import DOC, load_values, render

from k3sfleet.databases import template_namespace

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "helm" / "infrastructure"
APPS = ROOT / "helm" / "apps"
EXAMPLE = APPS / "example-app"
K8S_VERSION = "1.34.0"


def find_helm() -> str | None:
    local = ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


HELM = find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None, reason="helm binary not found (.tools/bin/helm or PATH): run scripts/setup.sh"
)

INFRA_ALL_ON: dict[str, Any] = {
    "global": {"domain": "fleet.example.net"},
    "rancher": {"enabled": True},
    "externalDns": {"proxied": True},
    "velero": {
        "bucket": "fleet-velero",
        "s3Url": "https://acct123.r2.cloudflarestorage.com",
        "schedules": {
            "hourly-apps": {
                "schedule": "15 * * * *",
                "ttl": "48h0m0s",
                "includedNamespaces": ["apps"],
            }
        },
    },
}
INFRA_ALL_OFF: dict[str, Any] = {
    key: {"enabled": False}
    for key in (
        "certManager",
        "sealedSecrets",
        "traefik",
        "externalDns",
        "velero",
        "tailscaleOperator",
        "rancher",
        "gateway",
        "cloudnativePg",
    )
}


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run(  # noqa: S603 - fixed binary, test arguments
        [HELM, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def template(chart: Path, tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict]:
    args: list[str | Path] = ["template", chart.name, chart, "--namespace", "argocd"]
    if values is not None:
        args += ["-f", values_file(tmp_path, values, f"{chart.name}-values.yaml")]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def validate_all(docs: list[dict]) -> int:
    """Validate built-in kinds against the Kubernetes schema; return how many were validated.
    Custom resources (no schema) must still be well-formed objects."""
    validated = 0
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"]), doc
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            validated += 1
        except kubernetes_validate.SchemaNotFoundError:
            assert "." in doc["apiVersion"].split("/")[0], f"unknown built-in kind: {doc}"
            assert isinstance(doc.get("spec"), dict), doc
    return validated


# -- lint and template ------------------------------------------------------------------------


@needs_helm
@pytest.mark.helm
@pytest.mark.parametrize("chart", [INFRA, APPS, EXAMPLE], ids=lambda p: p.name)
def test_lint_defaults(chart: Path) -> None:
    done = helm("lint", "--strict", chart)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_helm
@pytest.mark.helm
def test_lint_infrastructure_all_on(tmp_path: Path) -> None:
    done = helm("lint", "--strict", INFRA, "-f", values_file(tmp_path, INFRA_ALL_ON))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_helm
@pytest.mark.helm
@pytest.mark.parametrize(
    "values", [None, INFRA_ALL_ON, INFRA_ALL_OFF], ids=["default", "all-on", "all-off"]
)
def test_infrastructure_renders_and_validates(tmp_path: Path, values: dict | None) -> None:
    docs = template(INFRA, tmp_path, values)
    validate_all(docs)
    if values is INFRA_ALL_OFF:
        assert docs == []


@needs_helm
@pytest.mark.helm
def test_apps_render_and_validate(tmp_path: Path) -> None:
    docs = template(APPS, tmp_path)
    # the Tailscale Ingress is a built-in kind and really validated
    assert validate_all(docs) >= 1
    assert set(by_kind(docs, "Application")) == {"pgadmin4", "example-app"}
    assert set(by_kind(docs, "Cluster")) == {"postgresql"}


# -- infrastructure -----------------------------------------------------------------------------

PINNED = re.compile(r"^v?\d+\.\d+\.\d+$")


@needs_helm
@pytest.mark.helm
def test_every_component_is_a_pinned_upstream_chart(tmp_path: Path) -> None:
    apps = by_kind(template(INFRA, tmp_path, INFRA_ALL_ON), "Application")
    assert set(apps) == {
        "cert-manager",
        "sealed-secrets",
        "traefik",
        "external-dns",
        "velero",
        "tailscale-operator",
        "rancher",
        "cloudnative-pg",
    }
    for name, app in apps.items():
        src = app["spec"]["source"]
        assert src["repoURL"].startswith("https://"), name
        assert src["chart"], name
        assert PINNED.match(str(src["targetRevision"])), (name, src["targetRevision"])
        assert app["metadata"]["namespace"] == "argocd"
        assert app["spec"]["destination"]["namespace"], name
        assert app["spec"]["syncPolicy"]["automated"]["selfHeal"] is True


@needs_helm
@pytest.mark.helm
def test_sync_waves(tmp_path: Path) -> None:
    docs = template(INFRA, tmp_path, INFRA_ALL_ON)
    wave = {
        (d["kind"], d["metadata"]["name"]): int(
            d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
        )
        for d in docs
    }
    app = {name: w for (kind, name), w in wave.items() if kind == "Application"}
    assert app["cert-manager"] < app["traefik"] < app["velero"] < app["tailscale-operator"]
    assert app["tailscale-operator"] == 1  # as in the Ansible repository
    assert app["sealed-secrets"] <= app["cert-manager"]
    assert wave[("ClusterIssuer", "letsencrypt-prod")] > app["cert-manager"]
    assert wave[("Gateway", "public")] > app["traefik"]
    assert app["rancher"] > wave[("Gateway", "public")]
    # the operator (and its CRDs) before anything that could hold data
    assert app["cloudnative-pg"] < app["velero"]


@needs_helm
@pytest.mark.helm
def test_rancher_absent_by_default_present_when_enabled(tmp_path: Path) -> None:
    default = template(INFRA, tmp_path)
    assert "rancher" not in by_kind(default, "Application")
    assert "rancher" not in by_kind(default, "HTTPRoute")
    on = template(INFRA, tmp_path, INFRA_ALL_ON)
    rancher = by_kind(on, "Application")["rancher"]
    values = rancher["spec"]["source"]["helm"]["valuesObject"]
    assert values["hostname"] == "rancher.fleet.example.net"
    assert "bootstrapPassword" not in values  # the password comes from the Secret
    ignored = rancher["spec"]["ignoreDifferences"][0]
    assert (ignored["kind"], ignored["name"]) == ("Secret", "bootstrap-secret")
    route = by_kind(on, "HTTPRoute")["rancher"]
    assert route["spec"]["hostnames"] == ["rancher.fleet.example.net"]
    assert route["metadata"]["namespace"] == "cattle-system"


@needs_helm
@pytest.mark.helm
def test_velero_on_r2(tmp_path: Path) -> None:
    velero = by_kind(template(INFRA, tmp_path, INFRA_ALL_ON), "Application")["velero"]
    values = velero["spec"]["source"]["helm"]["valuesObject"]
    (bsl,) = values["configuration"]["backupStorageLocation"]
    assert bsl["provider"] == "aws"
    assert bsl["bucket"] == "fleet-velero"
    assert bsl["config"]["region"] == "auto"
    assert bsl["config"]["s3ForcePathStyle"] == "true"
    assert bsl["config"]["s3Url"] == "https://acct123.r2.cloudflarestorage.com"
    assert values["credentials"] == {"useSecret": True, "existingSecret": "velero-credentials"}
    assert values["deployNodeAgent"] is True
    assert values["snapshotsEnabled"] is False
    (plugin,) = values["initContainers"]
    assert plugin["image"].startswith("velero/velero-plugin-for-aws:v")
    schedules = values["schedules"]
    assert set(schedules) == {"daily-cluster", "weekly-full", "hourly-apps"}
    hourly = schedules["hourly-apps"]
    assert hourly["schedule"] == "15 * * * *"
    assert hourly["template"]["ttl"] == "48h0m0s"
    assert hourly["template"]["includedNamespaces"] == ["apps"]
    assert hourly["template"]["defaultVolumesToFsBackup"] is True


@needs_helm
@pytest.mark.helm
def test_velero_needs_bucket_and_endpoint(tmp_path: Path) -> None:
    done = helm("template", "x", INFRA, "-f", values_file(tmp_path, {"velero": {"bucket": ""}}))
    assert done.returncode != 0
    assert "VELERO_BUCKET" in done.stderr


@needs_helm
@pytest.mark.helm
def test_secrets_are_references(tmp_path: Path) -> None:
    docs = template(INFRA, tmp_path, INFRA_ALL_ON)
    apps = by_kind(docs, "Application")
    ts = apps["tailscale-operator"]["spec"]["source"]["helm"]["valuesObject"]
    assert "oauth" not in ts  # the chart then reads the Secret operator-oauth
    dns = apps["external-dns"]["spec"]["source"]["helm"]["valuesObject"]
    assert dns["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "cloudflare-api-token",
        "key": "api-token",
    }
    assert dns["domainFilters"] == ["fleet.example.net"]
    assert "--cloudflare-proxied" in dns["extraArgs"]
    issuer = by_kind(docs, "ClusterIssuer")["letsencrypt-prod"]
    solver = issuer["spec"]["acme"]["solvers"][0]["dns01"]["cloudflare"]
    assert solver["apiTokenSecretRef"] == {"name": "cloudflare-api-token", "key": "api-token"}
    text = yaml.safe_dump_all(docs)
    assert not re.search(r"(?i)(password|token|secret)\s*:\s*['\"]?[A-Za-z0-9+/]{16,}", text)


@needs_helm
@pytest.mark.helm
def test_gateway_and_routes(tmp_path: Path) -> None:
    docs = template(INFRA, tmp_path, INFRA_ALL_ON)
    gateway = by_kind(docs, "Gateway")["public"]
    https = next(x for x in gateway["spec"]["listeners"] if x["name"] == "https")
    assert https["hostname"] == "*.fleet.example.net"
    assert https["tls"]["certificateRefs"][0]["name"] == "wildcard-tls"
    cert = by_kind(docs, "Certificate")["wildcard"]
    assert cert["spec"]["secretName"] == "wildcard-tls"
    assert "*.fleet.example.net" in cert["spec"]["dnsNames"]
    argocd = by_kind(docs, "HTTPRoute")["argocd"]
    assert argocd["spec"]["hostnames"] == ["argocd.fleet.example.net"]
    assert argocd["spec"]["rules"][0]["backendRefs"][0] == {"name": "argocd-server", "port": 80}


TARGET = "external-dns.alpha.kubernetes.io/target"


def published_targets(docs: list[dict], status_addresses: list[str]) -> dict[str, list[str]]:
    """Host name -> the targets external-dns v0.19.0 publishes for the rendered routes, given
    the Gateway's ``status.addresses`` (source/gateway.go ``resolve``: the parent Gateway's
    target annotation, when set, replaces its status addresses)."""
    gateways = by_kind(docs, "Gateway")
    published: dict[str, list[str]] = {}
    for route in by_kind(docs, "HTTPRoute").values():
        for parent in route["spec"]["parentRefs"]:
            gateway = gateways[parent["name"]]
            override = (gateway["metadata"].get("annotations") or {}).get(TARGET)
            targets = override.split(",") if override else status_addresses
            for name in route["spec"].get("hostnames") or []:
                published[name] = sorted(set(published.get(name, [])) | set(targets))
    return published


@needs_helm
@pytest.mark.helm
def test_external_dns_publishes_the_ingress_nodes_public_addresses(tmp_path: Path) -> None:
    """The root Application's values (deploys/argocd.py, from the inventory's ingress nodes),
    rendered by the real helm: every public name gets exactly the ingress nodes' public
    addresses, whatever the Gateway status says (servicelb may list a tailnet address there)."""
    from k3sfleet.deploys.gitops import ArgocdConfig, root_apps_manifest

    cfg = ArgocdConfig(
        chart_repo="https://argoproj.github.io/argo-helm",
        chart_version="9.1.4",
        domain="fleet.example.net",
        repo_url="https://git.example.net/fleet.git",
        public_addresses=("198.51.100.11", "203.0.113.21"),
    )
    infra = next(
        d for d in yaml.safe_load_all(root_apps_manifest(cfg))
        if d and d["metadata"]["name"] == "infrastructure"
    )
    docs = template(INFRA, tmp_path, infra["spec"]["source"]["helm"]["valuesObject"])
    gateway = by_kind(docs, "Gateway")["public"]
    assert gateway["metadata"]["annotations"][TARGET] == "198.51.100.11,203.0.113.21"
    published = published_targets(docs, status_addresses=["100.64.0.21"])
    assert published["argocd.fleet.example.net"] == ["198.51.100.11", "203.0.113.21"]
    assert all(targets == ["198.51.100.11", "203.0.113.21"] for targets in published.values())
    # Traefik copies its LoadBalancer Service's status (servicelb: the ingress nodes' ExternalIPs)
    # to the Gateway: chart 37.2.0 providers.kubernetesGateway.statusAddress.service (default on)
    traefik = by_kind(docs, "Application")["traefik"]["spec"]["source"]["helm"]["valuesObject"]
    assert traefik["service"]["type"] == "LoadBalancer"
    assert "statusAddress" not in traefik["providers"]["kubernetesGateway"]
    dns = by_kind(docs, "Application")["external-dns"]["spec"]["source"]["helm"]["valuesObject"]
    assert "gateway-httproute" in dns["sources"]
    # without ingress addresses nothing overrides the status (no svclb runs, nothing published)
    bare = template(INFRA, tmp_path)
    assert TARGET not in (by_kind(bare, "Gateway")["public"]["metadata"].get("annotations") or {})


# -- apps ---------------------------------------------------------------------------------------


def cluster_spec(docs: list[dict]) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(docs, "Cluster")["postgresql"]["spec"]
    return spec


@needs_helm
@pytest.mark.helm
def test_postgresql_is_a_cloudnativepg_cluster(tmp_path: Path) -> None:
    """The shared PostgreSQL is a CloudNativePG Cluster whose fields exist in the Cluster CRD of
    cloudnative-pg/charts charts/cloudnative-pg/templates/crds/crds.yaml at
    cloudnative-pg-v0.29.0 (the operator helm/infrastructure pins, next test)."""
    docs = template(APPS, tmp_path)
    cluster = by_kind(docs, "Cluster")["postgresql"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["namespace"] == "database"
    # the Velero Schedule's selector takes the Cluster itself with its Pods and PVCs
    assert cluster["metadata"]["labels"]["cnpg.io/cluster"] == "postgresql"
    options = cluster["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
    assert "SkipDryRunOnMissingResource=true" in options
    spec = cluster["spec"]
    assert spec["instances"] == 1
    assert spec["imageName"].startswith("ghcr.io/cloudnative-pg/postgresql:")
    assert spec["enableSuperuserAccess"] is True
    assert spec["superuserSecret"] == {"name": "postgresql-superuser"}
    assert spec["storage"] == {"storageClass": "local-path", "size": "10Gi"}
    assert spec["affinity"]["nodeSelector"] == {"kubernetes.io/hostname": "vps-hetzner-1"}
    # no password anywhere in the rendered objects: Secrets are references
    assert "password" not in yaml.safe_dump(spec).replace("passwordSecret", "")


@needs_helm
@pytest.mark.helm
def test_cloudnativepg_operator_is_pinned_in_infrastructure(tmp_path: Path) -> None:
    cnpg = by_kind(template(INFRA, tmp_path), "Application")["cloudnative-pg"]
    src = cnpg["spec"]["source"]
    assert (src["repoURL"], src["chart"], src["targetRevision"]) == (
        "https://cloudnative-pg.github.io/charts",
        "cloudnative-pg",
        "0.29.0",
    )
    assert "ServerSideApply=true" in cnpg["spec"]["syncPolicy"]["syncOptions"]  # large CRDs
    assert cnpg["spec"]["destination"]["namespace"] == "cnpg-system"


APPS_THREE = [
    {"name": "example-app", "database": "example_app", "username": "example_app"},
    {"name": "shop", "database": "shop_db", "username": "shop_user"},
    {"name": "wiki", "database": "all", "username": "wiki_user"},
]


@needs_helm
@pytest.mark.helm
def test_roles_databases_and_pg_hba_render_from_app_databases(tmp_path: Path) -> None:
    """Per app: a managed role (LOGIN only, password from the basic-auth Secret k3sfleet
    writes), a Database it owns, and pg_hba lines; tests/postgres proves them on a server."""
    from k3sfleet.databases import AppDatabase, Server

    docs = template(APPS, tmp_path, {"appDatabases": APPS_THREE})
    spec = cluster_spec(docs)
    roles = {r["name"]: r for r in spec["managed"]["roles"]}
    assert list(roles) == ["example_app", "shop_user", "wiki_user"]
    server = Server.from_chart(ROOT)
    for entry in APPS_THREE:
        role = roles[entry["username"]]
        assert role["login"] is True and role["ensure"] == "present"
        for flag in ("superuser", "createdb", "createrole", "replication", "bypassrls"):
            assert role[flag] is False, (entry, flag)
        app = AppDatabase(entry["name"], entry["database"], entry["username"], "apps")
        # the same name deploys/databases.py writes
        assert role["passwordSecret"] == {"name": server.role_secret(app)}
    databases = {d["spec"]["name"]: d for d in by_kind(docs, "Database").values()}
    assert {n: d["spec"]["owner"] for n, d in databases.items()} == {
        "example_app": "example_app",
        "shop_db": "shop_user",
        "all": "wiki_user",
    }
    for d in databases.values():
        assert d["metadata"]["namespace"] == "database"
        assert d["spec"]["cluster"] == {"name": "postgresql"}
        assert d["spec"]["databaseReclaimPolicy"] == "retain"
        assert d["metadata"]["labels"]["cnpg.io/cluster"] == "postgresql"
    assert spec["postgresql"]["pg_hba"][3:6] == [
        'host "shop_db" "shop_user","postgres" all scram-sha-256',
        'host "shop_db" all all reject',
        'host all "shop_user" all reject',
    ]
    assert 'host "all" all all reject' in spec["postgresql"]["pg_hba"]  # quoted: not a keyword


@needs_helm
@pytest.mark.helm
def test_node_override_moves_one_service(tmp_path: Path) -> None:
    docs = template(APPS, tmp_path, {"nodeOverrides": {"postgresql": "vps-vultr-1"}})
    pin = cluster_spec(docs)["affinity"]["nodeSelector"]
    assert pin == {"kubernetes.io/hostname": "vps-vultr-1"}
    pga = by_kind(docs, "Application")["pgadmin4"]["spec"]["source"]["helm"]["valuesObject"]
    assert pga["nodeSelector"] == {"kubernetes.io/hostname": "vps-hetzner-1"}


@needs_helm
@pytest.mark.helm
def test_label_based_pinning_and_unpinned_service_fails(tmp_path: Path) -> None:
    services = load_values()["statefulServices"]
    labelled = [dict(s) for s in services]
    labelled[0] = {**labelled[0], "node": "", "nodeSelector": {"k3sfleet/disk": "ssd"}}
    docs = template(APPS, tmp_path, {"statefulServices": labelled})
    assert cluster_spec(docs)["affinity"]["nodeSelector"] == {"k3sfleet/disk": "ssd"}
    unpinned = [dict(s) for s in services]
    unpinned[0] = {**unpinned[0], "node": "", "nodeSelector": {}}
    done = helm("template", "x", APPS, "-f", values_file(tmp_path, {"statefulServices": unpinned}))
    assert done.returncode != 0
    assert "set node or nodeSelector" in done.stderr
    missing = [s for s in services if s["name"] != "pgadmin4"]
    done = helm("template", "x", APPS, "-f", values_file(tmp_path, {"statefulServices": missing}))
    assert done.returncode != 0
    assert "pgadmin4 is not listed in statefulServices" in done.stderr


@needs_helm
@pytest.mark.helm
def test_pgadmin_is_pinned_and_points_at_the_rw_service(tmp_path: Path) -> None:
    pga = by_kind(template(APPS, tmp_path), "Application")["pgadmin4"]
    src = pga["spec"]["source"]
    # chart 1.66.0 runs pgAdmin's own image docker.io/dpage/pgadmin4 (rowanruseler/helm-charts
    # charts/pgadmin4/values.yaml at tag pgadmin4-1.66.0)
    assert (src["repoURL"], src["chart"], src["targetRevision"]) == (
        "https://helm.runix.net",
        "pgadmin4",
        "1.66.0",
    )
    server = src["helm"]["valuesObject"]["serverDefinitions"]["servers"]["shared"]
    assert (server["Host"], server["Port"]) == ("postgresql-rw.database.svc.cluster.local", 5432)


def strings(obj: Any) -> list[str]:
    """Every string in a rendered object."""
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in strings(k) + strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return [obj] if isinstance(obj, str) else []


@needs_helm
@pytest.mark.helm
def test_no_bitnami_image_or_chart_in_our_templates(tmp_path: Path) -> None:
    """Bitnami's Docker Hub images are gone or frozen: docker.io/bitnami/* versioned tags were
    removed and the copies in bitnamilegacy get no updates (bitnami/containers#96169,
    bitnami/charts#36327). Nothing we render may pull one or install a Bitnami catalog chart.
    (sealed-secrets is bitnami-labs' own project and registry: unaffected per
    bitnami/sealed-secrets#1785.)"""
    docs = template(INFRA, tmp_path, INFRA_ALL_ON) + template(APPS, tmp_path)
    text = [s for d in docs for s in strings(d)]
    assert not [s for s in text if re.search(r"(docker\.io/)?bitnami(legacy)?/", s)
                and "sealed-secrets" not in s]  # fmt: skip
    assert not [s for s in text if "charts.bitnami.com" in s]
    # Velero chart 11.4.0's own default kubectl image is docker.io/bitnamilegacy/kubectl
    # (vmware-tanzu/helm-charts charts/velero/values.yaml at velero-11.4.0): ours replaces it.
    velero = by_kind(docs, "Application")["velero"]["spec"]["source"]["helm"]["valuesObject"]
    assert velero["kubectl"]["image"]["repository"] == "registry.k8s.io/kubectl"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", velero["kubectl"]["image"]["tag"])


# The Rancher chart refuses clusters outside its Chart.yaml kubeVersion. Read at each tag of
# rancher/rancher chart/Chart.yaml: v2.12.3 "< 1.34.0-0" (so 2.12 refuses our 1.34 line), v2.13.8
# "< 1.35.0-0" (Rancher 2.13 supports Kubernetes 1.32-1.34, rancher/rancher#51253), v2.14.4
# "< 1.36.0-0". Pinning another version means reading its Chart.yaml and adding it here.
RANCHER_KUBE_VERSION = {
    "2.12.3": "< 1.34.0-0",
    "2.13.8": "< 1.35.0-0",
    "2.14.4": "< 1.36.0-0",
}


def below(constraint: str, version: str) -> bool:
    """Whether ``version`` (v1.34.2+k3s1) meets a ``< X.Y.Z-0`` constraint."""
    m = re.fullmatch(r"<\s*(\d+)\.(\d+)\.(\d+)-0", constraint.strip())
    assert m, f"unhandled kubeVersion constraint {constraint!r}"
    v = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version)
    assert v, version
    return tuple(map(int, v.groups())) < tuple(map(int, m.groups()))


def test_rancher_chart_admits_our_k3s_line() -> None:
    from k3sfleet.settings import Settings

    k3s = Settings.__dataclass_fields__["k3s_version"].default
    assert isinstance(k3s, str) and k3s.startswith("v1.")
    pinned = str(yaml.safe_load((INFRA / "values.yaml").read_text())["rancher"]["chart"]["version"])
    assert pinned in RANCHER_KUBE_VERSION, f"read rancher/rancher chart/Chart.yaml at v{pinned}"
    assert below(RANCHER_KUBE_VERSION[pinned], k3s), (pinned, RANCHER_KUBE_VERSION[pinned], k3s)
    assert not below(RANCHER_KUBE_VERSION["2.12.3"], "v1.34.2+k3s1")  # what main pinned


@needs_helm
@pytest.mark.helm
def test_pgadmin_tailscale_ingress(tmp_path: Path) -> None:
    docs = template(APPS, tmp_path)
    ingress = by_kind(docs, "Ingress")["pgadmin4-tailscale"]
    assert ingress["metadata"]["namespace"] == "database"
    assert ingress["spec"]["ingressClassName"] == "tailscale"
    assert ingress["spec"]["tls"][0]["hosts"] == ["pgadmin"]
    assert ingress["spec"]["defaultBackend"]["service"]["name"] == "pgadmin4"
    off = template(APPS, tmp_path, {"pgadmin4": {"tailscale": {"enabled": False}}})
    assert by_kind(off, "Ingress") == {}


@needs_helm
@pytest.mark.helm
def test_backup_schedule_per_stateful_service(tmp_path: Path) -> None:
    schedules = by_kind(template(APPS, tmp_path), "Schedule")
    services = load_values()["statefulServices"]
    assert set(schedules) == {f"stateful-{s['name']}" for s in services}
    for svc in services:
        sched = schedules[f"stateful-{svc['name']}"]
        assert sched["metadata"]["namespace"] == "velero"
        spec = sched["spec"]
        assert spec["schedule"] == svc["backup"]["schedule"]
        assert spec["template"]["includedNamespaces"] == [svc["namespace"]]
        assert spec["template"]["labelSelector"]["matchLabels"] == svc["selector"]
        assert spec["template"]["metadata"]["labels"] == {
            "k3sfleet.io/stateful-service": svc["name"]
        }
        assert spec["template"]["ttl"] == svc["backup"]["ttl"]


@needs_helm
@pytest.mark.helm
def test_example_app_reads_its_db_secret(tmp_path: Path) -> None:
    """Render the example app's chart with the values its Application passes, and check the
    Deployment (schema-validated) takes its database settings from "<name>-db"."""
    app = by_kind(template(APPS, tmp_path), "Application")["example-app"]
    assert app["spec"]["source"]["path"] == "helm/apps/example-app"
    docs = template(EXAMPLE, tmp_path, app["spec"]["source"]["helm"]["valuesObject"])
    assert validate_all(docs) == len(docs) == 1
    (container,) = docs[0]["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert refs["DATABASE_URL"] == {"name": "example-app-db", "key": "connection-string"}
    names = {e["name"] for e in load_values()["appDatabases"]}
    assert {r["name"] for r in refs.values()} == {f"{n}-db" for n in names & {"example-app"}}


# -- contracts read by other parts of k3sfleet ------------------------------------------------

IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DEST_NAMESPACE = re.compile(r"^  destination:\n(?:    .*\n)*?    namespace: ([a-z0-9-]+)\s*$", re.M)


def test_app_databases_contract() -> None:
    entries = load_values()["appDatabases"]
    assert entries, "appDatabases is empty"
    seen: set[str] = set()
    for entry in entries:
        assert set(entry) == {"name", "database", "username"}, entry
        assert IDENT.match(entry["database"]) and IDENT.match(entry["username"]), entry
        assert entry["name"] not in seen
        seen.add(entry["name"])
        template_file = APPS / "templates" / f"{entry['name']}.yaml"
        assert template_file.is_file(), f"appDatabases {entry['name']}: no {template_file}"
        text = template_file.read_text(encoding="utf-8")
        match = DEST_NAMESPACE.search(text)
        assert match, f"{template_file}: spec.destination.namespace must be a literal"
        assert match.group(1) == "apps"
        # what the databases deploy reads from the same file
        assert template_namespace(text) == match.group(1)


def test_stateful_services_contract() -> None:
    services = load_values()["statefulServices"]
    names = [s["name"] for s in services]
    assert len(names) == len(set(names))
    for svc in services:
        assert {"name", "namespace", "node", "storage", "selector", "backup", "reason"} <= set(svc)
        assert svc["node"] or svc.get("nodeSelector"), svc["name"]
        assert len(svc["backup"]["schedule"].split()) == 5, svc["name"]
        assert re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", svc["backup"]["ttl"]), svc["name"]
        assert (APPS / "templates" / f"{svc['name']}.yaml").is_file()


def test_stateful_services_doc_matches_values() -> None:
    assert DOC.read_text(encoding="utf-8") == render(load_values()), (
        "docs/stateful-services.md is stale: run python tests/helm/stateful_doc.py"
    )


def test_doc_render_reflects_values() -> None:
    values = {
        "statefulServices": [
            {
                "name": "redis",
                "namespace": "cache",
                "node": "",
                "nodeSelector": {"disk": "ssd"},
                "storage": {"storageClass": "local-path", "size": "2Gi"},
                "selector": {"app": "redis"},
                "backup": {"schedule": "0 1 * * *", "ttl": "24h0m0s"},
                "reason": "sessions",
            }
        ]
    }
    text = render(values)
    row = (
        "| redis | cache | `disk: ssd` | local-path 2Gi | `app=redis` | `0 1 * * *`, 24h0m0s "
        "| sessions |"
    )
    assert row in text


def test_the_secrets_deploy_writes_where_the_charts_read() -> None:
    """Every Secret deploys/secrets.py writes is one a chart (or Argo CD) reads, in the namespace
    that chart installs into; and the namespaces k3sfleet's own code addresses (Velero for
    backups and DR, Argo CD for DR and the verify suite) are the charts'."""
    from k3sfleet.backup import NAMESPACE as VELERO_NAMESPACE
    from k3sfleet.deploys.secrets import SECRETS
    from k3sfleet.settings import ARGOCD_NAMESPACE

    infra = yaml.safe_load((INFRA / "values.yaml").read_text())
    apps = yaml.safe_load((APPS / "values.yaml").read_text())
    read = {
        (infra["certManager"]["namespace"], infra["certManager"]["cloudflareSecret"]["name"]),
        (infra["externalDns"]["namespace"], infra["externalDns"]["cloudflareSecret"]["name"]),
        (infra["velero"]["namespace"], infra["velero"]["credentialsSecret"]["name"]),
        (infra["tailscaleOperator"]["namespace"], infra["tailscaleOperator"]["oauthSecret"]),
        (infra["rancher"]["namespace"], infra["rancher"]["bootstrapSecret"]),
        (apps["postgresql"]["namespace"], apps["postgresql"]["superuserSecret"]),
        (apps["pgadmin4"]["namespace"], apps["pgadmin4"]["existingSecret"]),
        # templates/argocd-values.yaml.j2: "$argocd-oidc:clientSecret"; the repository Secret
        # is found by its argocd.argoproj.io/secret-type label in Argo CD's namespace
        (ARGOCD_NAMESPACE, "argocd-oidc"),
        (ARGOCD_NAMESPACE, "gitops-repo"),
    }
    assert {(s.namespace, s.name) for s in SECRETS} == read
    assert infra["velero"]["namespace"] == apps["velero"]["namespace"] == VELERO_NAMESPACE
    routes = {r["name"]: r for r in infra["routes"]}
    assert routes["argocd"]["namespace"] == ARGOCD_NAMESPACE
