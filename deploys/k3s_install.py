"""Install a pinned K3s binary: download it and the release's sha256 file, verify, move in place.

The binary is downloaded next to its destination (a temp file in /usr/local/bin), checked
against ``sha256sum-<arch>.txt`` of the same release, made executable and renamed over
``/usr/local/bin/k3s`` in one ``mv``: a running K3s keeps its old inode, a failed download or a
wrong checksum leaves the old binary untouched. Nothing is downloaded when the wanted version is
already installed. ``deploys/k3s_upgrade.py`` reuses ``k3s_binary``.

Example::

    from k3sfleet.deploys.k3s_install import k3s_binary

    k3s_binary(
        name="Install k3s v1.34.2+k3s1",
        version="v1.34.2+k3s1",
        release_url="https://github.com/k3s-io/k3s/releases/download",
    )
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from urllib.parse import quote

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.server import Arch

from k3sfleet.deploys.readmodel import record, section
from k3sfleet.facts.k3s import K3S_BIN

# `uname -m` -> (binary name in the release, sha256 file suffix)
ARCHES = {
    "x86_64": ("k3s", "amd64"),
    "amd64": ("k3s", "amd64"),
    "aarch64": ("k3s-arm64", "arm64"),
    "arm64": ("k3s-arm64", "arm64"),
    "armv7l": ("k3s-armhf", "arm"),
}



def release_asset_url(release_url: str, version: str, asset: str) -> str:
    """``<release_url>/<version URL-quoted>/<asset>`` (``+`` becomes ``%2B``)."""
    return f"{release_url.rstrip('/')}/{quote(version, safe='')}/{asset}"


def install_script(
    version: str, release_url: str, arch: str = "x86_64", dest: str = K3S_BIN
) -> str:
    """The shell script that downloads, verifies and atomically installs ``version``."""
    if arch not in ARCHES:
        raise ValueError(f"no K3s release binary for architecture {arch!r}")
    binary, suffix = ARCHES[arch]
    directory, _, _ = dest.rpartition("/")
    q = shlex.quote
    return "\n".join(
        [
            "set -eu",
            f"tmp=$(mktemp {q(directory + '/.k3s-download.XXXXXX')})",
            'trap \'rm -f "$tmp" "$tmp.sha256"\' EXIT',
            f'curl -fsSL --retry 3 -o "$tmp" {q(release_asset_url(release_url, version, binary))}',
            f'curl -fsSL --retry 3 -o "$tmp.sha256" '
            f"{q(release_asset_url(release_url, version, f'sha256sum-{suffix}.txt'))}",
            f'want=$(awk -v f={q(binary)} \'$2 == f || $2 == "*" f {{print $1}}\' "$tmp.sha256")',
            f'[ -n "$want" ] || {{ echo {q(f"k3sfleet: no checksum for {binary} in the {version} sha256 file")} >&2; exit 1; }}',  # noqa: E501
            'got=$(sha256sum "$tmp" | cut -d" " -f1)',
            f'[ "$want" = "$got" ] || {{ echo {q(f"k3sfleet: checksum mismatch for {binary} {version}: ")}"expected $want, got $got" >&2; exit 1; }}',  # noqa: E501
            'chmod 0755 "$tmp"',
            f'mv -f "$tmp" {q(dest)}',
        ]
    )


@operation()
def k3s_binary(
    version: str,
    release_url: str,
    arch: str | None = None,
) -> Generator[StringCommand, None, None]:
    """Install K3s ``version`` at /usr/local/bin/k3s unless it is installed already.

    + version: the K3s release (``v1.34.2+k3s1``)
    + release_url: base URL of the releases (the mirror serves ``<version>/k3s`` and
      ``<version>/sha256sum-amd64.txt``)
    + arch: ``uname -m`` of the node; read with the ``Arch`` fact when not given
    """
    if section("k3s")["version"] == version:  # (the host's snapshot)
        host.noop(f"k3s {version} is installed")
        return
    machine = arch or host.get_fact(Arch) or "x86_64"
    record(lambda snap: snap["k3s"].update(version=version))  # (nothing else it watches)
    yield StringCommand("sh", "-c", QuoteString(install_script(version, release_url, machine)))
