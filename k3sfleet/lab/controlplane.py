"""The real Kubernetes control plane the lab runs, built from source once per version.

Three Go programs, each cached by :mod:`k3sfleet.lab.gobuild`:

* ``kube``: kube-apiserver, kube-controller-manager and kube-scheduler from
  ``k8s.io/kubernetes`` at :data:`KUBERNETES_VERSION`, one multi-call binary
  (``k3sfleet/lab/go/kube``: our main, whose go.mod pins every staging module to
  :data:`STAGING_VERSION`), stamped so ``/version`` reports :data:`K3S_VERSION` as K3s's own
  build does (k3s-io/k3s scripts/build: ``k8s.io/component-base/version`` and
  ``k8s.io/client-go/pkg/version`` ``gitVersion``/``gitCommit``/``gitTreeState``).
* ``kine``: ``github.com/k3s-io/kine`` at :data:`KINE_VERSION`, the etcd shim K3s embeds for
  SQLite; its SQLite driver is mattn/go-sqlite3, so CGO, linked statically as kine's own
  scripts/build does (``-extldflags -static``, the same ``CGO_CFLAGS``).
* ``kwok``: ``sigs.k8s.io/kwok`` at :data:`KWOK_VERSION`, which keeps a Node Ready (status
  heartbeats and a Lease) and plays simulated pods' lifecycle; the stages it plays are the
  project's own "fast" set (kustomize/stage/fast), taken from the module at build time.

Example::

    binaries = ensure_binaries(Path("~/.cache/k3sfleet").expanduser())
    binaries.path("kube-apiserver")      # .../go/kube-<key>/kube-apiserver
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from k3sfleet.lab.gobuild import GO_SOURCES, GoBuild, Say, cached, ensure

K3S_VERSION = "v1.34.2+k3s1"
# The K3s commit tagged v1.34.2+k3s1 (nixpkgs pkgs/.../k3s/1_34/versions.nix, k3sCommit).
K3S_COMMIT = "8dac81b2a24e78ce4cf951c7788ea6a8d4a59aa7"
KUBERNETES_VERSION = "v1.34.2"
STAGING_VERSION = "v0.34.2"
# K3s v1.34.2+k3s1 was released with the kine of November 2025, v0.14.6 (v1.31.14+k3s1 of the
# same day lists v0.14.6-k3s1.31; kine v0.14.9, the next served, is from December).
KINE_VERSION = "v0.14.6"
KWOK_VERSION = "v0.8.0"

_COMPONENT_BASE = "k8s.io/component-base/version"
_CLIENT_GO = "k8s.io/client-go/pkg/version"
_MAJOR, _MINOR = KUBERNETES_VERSION.lstrip("v").split(".")[:2]

KUBE = GoBuild(
    name="kube",
    package=".",
    module_dir=GO_SOURCES / "kube",
    outputs=("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
    env={"CGO_ENABLED": "0"},
    ldflags=(
        "-s", "-w",
        *(
            f"-X {package}.{name}={value}"
            for package in (_COMPONENT_BASE, _CLIENT_GO)
            for name, value in (
                ("gitVersion", K3S_VERSION),
                ("gitCommit", K3S_COMMIT),
                ("gitTreeState", "clean"),
                ("gitMajor", _MAJOR),
                ("gitMinor", _MINOR),
            )
        ),
    ),
    versions={"k8s.io/kubernetes": KUBERNETES_VERSION, "staging": STAGING_VERSION},
)

KINE = GoBuild(
    name="kine",
    package=f"github.com/k3s-io/kine@{KINE_VERSION}",
    outputs=("kine",),
    env={
        "CGO_ENABLED": "1",
        "CGO_CFLAGS": "-DSQLITE_ENABLE_DBSTAT_VTAB=1 -DSQLITE_USE_ALLOCA=1",
    },
    tags=("osusergo", "netgo"),
    ldflags=(
        "-s", "-w", "-extldflags=-static",
        f"-X github.com/k3s-io/kine/pkg/version.Version={KINE_VERSION}",
    ),
    versions={"kine": KINE_VERSION},
)

KWOK_STAGES: tuple[str, ...] = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)

KWOK = GoBuild(
    name="kwok",
    package=f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
    outputs=("kwok",),
    env={"CGO_ENABLED": "0"},
    ldflags=("-s", "-w", f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.lstrip('v')}"),
    versions={"kwok": KWOK_VERSION},
    module=f"sigs.k8s.io/kwok@{KWOK_VERSION}",
    files=KWOK_STAGES,
)

# CustomResourceDefinitions of the projects whose objects the product writes, from each
# project's Go module at the version we run (never copied into this repository); the stand-in
# K3s server applies them at start (k3sfleet/lab/standins/k3s/addons.py).
# * K3s's own: Addon (and ETCDSnapshotFile) from github.com/k3s-io/api, HelmChart and
#   HelmChartConfig from github.com/k3s-io/helm-controller. The go.mod of the v1.34.2+k3s1 tag
#   is not in the stored sources; K3s v1.33.7+k3s3's (the next patch cycle) pins
#   helm-controller v0.16.17 and k3s-io/api v0.1.4, both tagged 2025-11-14 for the November
#   2025 patch releases, v1.34.2+k3s1 among them (kine v0.14.6 above is of the same cycle).
# * Argo CD v3.2.0: the appVersion of the argo-cd chart 9.1.4 we pin (k3sfleet/settings.py
#   argocd_chart_version; argoproj/argo-helm charts/argo-cd/Chart.yaml at tag argo-cd-9.1.4),
#   manifests/crds as the chart installs them.
# * Velero v1.17.1: the appVersion of the velero chart 11.4.0 (helm/infrastructure/values.yaml;
#   vmware-tanzu/helm-charts charts/velero/Chart.yaml at tag velero-11.4.0), config/crd/v1/bases.
# * CloudNativePG v1.30.0: the appVersion of the cloudnative-pg chart 0.29.0
#   (helm/infrastructure/values.yaml; cloudnative-pg/charts charts/cloudnative-pg/Chart.yaml at
#   tag cloudnative-pg-v0.29.0), config/crd/bases: the Cluster and Database kinds helm/apps uses.
K3S_API_VERSION = "v0.1.4"
CNPG_VERSION = "v1.30.0"
HELM_CONTROLLER_VERSION = "v0.16.17"
ARGOCD_VERSION = "v3.2.0"
VELERO_VERSION = "v1.17.1"


def _crds(name: str, module: str, *files: str) -> GoBuild:
    return GoBuild(name=name, package="", outputs=(), module=module, files=files,
                   versions={name: module.rpartition("@")[2]})


_VELERO_KINDS = ("backuprepositories", "backups", "backupstoragelocations",
                 "deletebackuprequests", "downloadrequests", "podvolumebackups",
                 "podvolumerestores", "restores", "schedules", "serverstatusrequests",
                 "volumesnapshotlocations")
CRDS: tuple[GoBuild, ...] = (
    _crds("crds-k3s", f"github.com/k3s-io/api@{K3S_API_VERSION}",
          "pkg/crds/yaml/generated/k3s.cattle.io_addons.yaml",
          "pkg/crds/yaml/generated/k3s.cattle.io_etcdsnapshotfiles.yaml"),
    _crds("crds-helm", f"github.com/k3s-io/helm-controller@{HELM_CONTROLLER_VERSION}",
          "pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml",
          "pkg/crds/yaml/generated/helm.cattle.io_helmchartconfigs.yaml"),
    _crds("crds-argocd", f"github.com/argoproj/argo-cd/v3@{ARGOCD_VERSION}",
          "manifests/crds/application-crd.yaml", "manifests/crds/applicationset-crd.yaml",
          "manifests/crds/appproject-crd.yaml"),
    _crds("crds-velero", f"github.com/vmware-tanzu/velero@{VELERO_VERSION}",
          *(f"config/crd/v1/bases/velero.io_{kind}.yaml" for kind in _VELERO_KINDS)),
    _crds("crds-cnpg", f"github.com/cloudnative-pg/cloudnative-pg@{CNPG_VERSION}",
          "config/crd/bases/postgresql.cnpg.io_clusters.yaml",
          "config/crd/bases/postgresql.cnpg.io_databases.yaml"),
)

BUILDS: tuple[GoBuild, ...] = (KUBE, KINE, KWOK, *CRDS)


@dataclass(frozen=True)
class Binaries:
    """Where each built program is: ``path("kube-apiserver")``, ``path("kine")``, ..."""

    directories: dict[str, Path]

    def path(self, program: str) -> Path:
        for build in BUILDS:
            if program in build.outputs:
                return self.directories[build.name] / program
        raise KeyError(program)

    @property
    def kwok_stages(self) -> list[Path]:
        return [self.directories[KWOK.name] / name for name in KWOK_STAGES]

    @property
    def crd_files(self) -> list[Path]:
        """Every CRD manifest, K3s's own first (the server applies them in this order)."""
        return [self.directories[b.name] / f for b in CRDS for f in b.files]


def cached_binaries(cache: Path) -> Binaries | None:
    """The control plane's binaries if all are cached, else None (nothing is built)."""
    directories = {build.name: cached(build, cache) for build in BUILDS}
    if any(d is None for d in directories.values()):
        return None
    return Binaries({name: d for name, d in directories.items() if d is not None})


def ensure_binaries(cache: Path, say: Say = print) -> Binaries:
    """Build whatever is missing (minutes on a fresh machine) and return the binaries."""
    return Binaries({build.name: ensure(build, cache, say) for build in BUILDS})


# Where lab hosts see each build's cache entry, bound read-only (docs/lab-contract.md).
HOST_DIR = "/opt/k3sfleet-standin/go"


def host_binds(cache: Path) -> list[tuple[Path, str]]:
    """(cache entry, path in a lab host) for each build, built first (progress on stdout)
    where missing."""
    binaries = ensure_binaries(cache)
    return [(directory, f"{HOST_DIR}/{name}") for name, directory in binaries.directories.items()]


def host_binaries() -> Binaries:
    """The binaries as a lab host sees them (under :data:`HOST_DIR`)."""
    return Binaries({build.name: Path(HOST_DIR) / build.name for build in BUILDS})
