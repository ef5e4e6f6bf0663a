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

BUILDS: tuple[GoBuild, ...] = (KUBE, KINE, KWOK)


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
    """(cache entry, path in a lab host) for each build, or none while any is not built."""
    binaries = cached_binaries(cache)
    if binaries is None:
        return []
    return [(directory, f"{HOST_DIR}/{name}") for name, directory in binaries.directories.items()]


def host_binaries() -> Binaries:
    """The binaries as a lab host sees them (under :data:`HOST_DIR`)."""
    return Binaries({build.name: Path(HOST_DIR) / build.name for build in BUILDS})
