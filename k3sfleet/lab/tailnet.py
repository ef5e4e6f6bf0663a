"""The real Tailscale the lab runs, built from the ``tailscale.com`` module once per version.

Three Go programs, each cached by :mod:`k3sfleet.lab.gobuild`, all from our module
``k3sfleet/lab/go/tscontrol`` (its go.mod pins tailscale.com at :data:`TAILSCALE_VERSION` and,
with ``tool`` lines for the two commands, every dependency):

* ``tailscaled`` and ``tailscale``: tailscale.com's ``cmd/tailscaled`` and ``cmd/tailscale``,
  stamped as its build_dist.sh does (``tailscale.com/version`` ``shortStamp``/``longStamp``,
  version/version.go at v1.102.5) so ``tailscale version`` prints :data:`TAILSCALE_VERSION`;
  the tailscaled entry also keeps the module's packaging files the .deb is made of
  (k3sfleet.lab.artifacts.build_tailscale_deb).
* ``tscontrol``: our control server (tstest/integration/testcontrol + DERP + STUN), built
  against a copy of the module with ``testcontrol_labgate.go.in`` added to package testcontrol.

Example::

    binaries = ensure_tailscale(Path("~/.cache/k3sfleet").expanduser())
    binaries.tailscaled          # .../go/tailscaled-<key>/tailscaled
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from k3sfleet.lab.gobuild import GO_SOURCES, GoBuild, Say, ensure

#: The tailscale.com release the lab builds (the module version without its "v").
TAILSCALE_VERSION = "1.102.5"
MODULE = f"tailscale.com@v{TAILSCALE_VERSION}"
SOURCE = GO_SOURCES / "tscontrol"
#: Packaging files of the module kept beside tailscaled (tailscale.com v1.102.5
#: release/dist/unixpkgs/pkgs.go takes the deb's units, defaults and scripts from them).
PACKAGING = (
    "cmd/tailscaled/tailscaled.service", "cmd/tailscaled/tailscale-online.target",
    "cmd/tailscaled/tailscale-wait-online.service", "cmd/tailscaled/tailscaled.defaults",
    "release/deb/debian.postinst.sh", "release/deb/debian.prerm.sh",
    "release/deb/debian.postrm.sh",
)
_STAMP = (
    "-s", "-w",
    f"-X tailscale.com/version.shortStamp={TAILSCALE_VERSION}",
    f"-X tailscale.com/version.longStamp={TAILSCALE_VERSION}-k3sfleet-lab",
)
_ENV = {"CGO_ENABLED": "0"}
_PINS = {"tailscale.com": TAILSCALE_VERSION}

TAILSCALED = GoBuild(name="tailscaled", package="tailscale.com/cmd/tailscaled",
                     outputs=("tailscaled",), module_dir=SOURCE, env=_ENV, versions=_PINS,
                     ldflags=_STAMP, module=MODULE, files=PACKAGING)
TAILSCALE = GoBuild(name="tailscale", package="tailscale.com/cmd/tailscale",
                    outputs=("tailscale",), module_dir=SOURCE, env=_ENV, versions=_PINS,
                    ldflags=_STAMP)
TSCONTROL = GoBuild(
    name="tscontrol", package=".", outputs=("tscontrol",), module_dir=SOURCE, env=_ENV,
    versions=_PINS, ldflags=("-s", "-w"), module=MODULE,
    additions={"tstest/integration/testcontrol/labgate.go": "testcontrol_labgate.go.in"},
)
BUILDS = (TAILSCALED, TAILSCALE, TSCONTROL)


@dataclass(frozen=True)
class TailscaleBinaries:
    """The built programs of one version (each in its own cache entry)."""

    tailscaled: Path
    tailscale: Path
    tscontrol: Path
    version: str = TAILSCALE_VERSION

    @property
    def directory(self) -> Path:
        """The tailscaled entry (the packaging files and the packed .deb live there)."""
        return self.tailscaled.parent

    def upstream(self, relative: str) -> Path:
        """A packaging file of the module, e.g. ``cmd/tailscaled/tailscaled.service``."""
        return self.directory / relative


def ensure_tailscale(cache: Path, say: Say = print) -> TailscaleBinaries:
    """The lab's Tailscale programs in ``cache``, built first where missing."""
    return TailscaleBinaries(
        tailscaled=ensure(TAILSCALED, cache, say) / "tailscaled",
        tailscale=ensure(TAILSCALE, cache, say) / "tailscale",
        tscontrol=ensure(TSCONTROL, cache, say) / "tscontrol",
    )
