"""The lab's offline artifact services: a k3s release mirror and a signed Tailscale apt repo.

Laid out like the real download locations, so deploys use them by base URL alone:

    k3s/<version>/k3s, k3s/<version>/sha256sum-amd64.txt   (github.com/k3s-io/k3s/releases/download)
    tailscale/debian/bookworm.noarmor.gpg                  (pkgs.tailscale.com/stable/debian/...)
    tailscale/debian/dists/bookworm/{InRelease,Release,Release.gpg}
    tailscale/debian/dists/bookworm/main/binary-amd64/Packages(.gz)
    tailscale/debian/pool/tailscale_<version>_amd64.deb    (the real one, k3sfleet.lab.tailnet)
    tailscale/debian/pool/tailscale-archive-keyring_1.35.181_all.deb

The stand-in k3s executables are zipapps of k3sfleet.lab.standins.k3s with the version baked in
(byte-for-byte reproducible, so a rebuilt lab serves the same checksums). The apt repository is
signed with a lab key generated once into the cache; apt keeps checking signatures.

Example::

    binaries = ensure_tailscale(cache)                     # k3sfleet.lab.tailnet
    artifacts = build_artifacts(Path("/var/lib/k3sfleet-lab/lab1/artifacts"), cache, binaries)
    server = serve(artifacts.root, "10.123.1.1", 0)
    server.url + "/k3s"              # the lab's k3s_release_url
    server.url + "/tailscale"        # the lab's tailscale_apt_url
    server.stop()
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from k3sfleet.lab.standins import LAB_K3S_VERSIONS, RUNTIME_PYTHON
from k3sfleet.lab.standins.k3s.main import version_text
from k3sfleet.lab.tailnet import TailscaleBinaries

STANDINS = Path(__file__).parent / "standins"
DIST = "bookworm"
KEY_UID = "k3sfleet lab apt signing key <lab-apt@k3sfleet.invalid>"
_ZIP_TIME = (2025, 1, 1, 0, 0, 0)


# -- k3s release mirror ----------------------------------------------------------------------
def _deterministic_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def build_k3s_executable(version: str) -> bytes:
    """The stand-in k3s for ``version``: a zipapp run by the lab runtime's Python."""
    files = {
        f"k3s_standin/{path.name}": path.read_bytes()
        for path in sorted((STANDINS / "k3s").glob("*.py"))
    }
    # ``--version`` is answered before the stand-in's modules are imported: the real k3s
    # answers it in milliseconds, and K3sState asks it on every run of every node.
    files["__main__.py"] = (
        '"""Stand-in k3s (k3sfleet lab): not the real k3s."""\n'
        "import sys\n\n"
        'if sys.argv[1:2] in (["--version"], ["-v"], ["version"]):\n'
        f"    print({version_text(version)!r})\n"
        "    sys.exit(0)\n\n"
        "from k3s_standin.main import main\n\n"
        f"sys.exit(main(sys.argv[1:], {version!r}))\n"
    ).encode()
    return f"#!{RUNTIME_PYTHON}\n".encode() + _deterministic_zip(files)


def write_k3s_release(directory: Path, version: str) -> str:
    """<directory>/<version>/k3s and its sha256sum-amd64.txt; returns the sha256."""
    target = directory / version
    target.mkdir(parents=True, exist_ok=True)
    binary = build_k3s_executable(version)
    (target / "k3s").write_bytes(binary)
    (target / "k3s").chmod(0o755)
    digest = hashlib.sha256(binary).hexdigest()
    (target / "sha256sum-amd64.txt").write_text(f"{digest}  k3s\n")
    return digest


# -- packages ------------------------------------------------------------------------------
def _pack(root: Path, files: dict[str, tuple[str | bytes, int]], deb: Path) -> Path:
    """Write ``files`` (path -> content, mode) under ``root`` and build ``deb`` reproducibly."""
    for name, (content, mode) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        path.chmod(mode)
    for directory in [root, *root.rglob("*")]:
        if directory.is_dir():
            directory.chmod(0o755)
        os.utime(directory, (1735689600, 1735689600), follow_symlinks=False)
    deb.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1735689600"}
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
        env=env,
    )
    return deb


#: The keyring package's version: the one the real tailscale package recommends at least
#: (tailscale.com v1.102.5 release/dist/unixpkgs/pkgs.go: "tailscale-archive-keyring (>=
#: 1.35.181)").
LAB_KEYRING_VERSION = "1.35.181"


def build_keyring_deb(outdir: Path, keyring: bytes, version: str = LAB_KEYRING_VERSION) -> Path:
    """tailscale-archive-keyring_<version>_all.deb: the repository's signing key at the path
    apt's ``signed-by`` names, as Tailscale's own package ships it (its installer,
    tailscale.com v1.102.5 scripts/installer.sh, installs it next to ``tailscale`` so a key
    rotation arrives as a package upgrade)."""
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, tuple[str | bytes, int]] = {
            "usr/share/keyrings/tailscale-archive-keyring.gpg": (keyring, 0o644),
            "DEBIAN/control": (
                f"Package: tailscale-archive-keyring\nVersion: {version}\nSection: misc\n"
                "Priority: optional\nArchitecture: all\n"
                "Maintainer: k3sfleet lab <lab@k3sfleet.invalid>\n"
                "Description: GnuPG keys of the Tailscale package repository\n"
                " Stand-in for the k3sfleet lab: the lab repository's signing key.\n",
                0o644,
            ),
        }
        return _pack(Path(tmp) / "pkg", files,
                     outdir / f"tailscale-archive-keyring_{version}_all.deb")


# -- the real tailscale package (built from tailscale.com by k3sfleet.lab.tailnet) -----------
#: Where tailscale.com's release/dist/unixpkgs/pkgs.go (v1.102.5, the deb target) puts each file:
#: (source in the module, path in the package, mode, conffile).
DEB_FILES: tuple[tuple[str, str, int, bool], ...] = (
    ("cmd/tailscaled/tailscaled.service", "lib/systemd/system/tailscaled.service", 0o644, False),
    ("cmd/tailscaled/tailscale-online.target", "lib/systemd/system/tailscale-online.target",
     0o644, False),
    ("cmd/tailscaled/tailscale-wait-online.service",
     "lib/systemd/system/tailscale-wait-online.service", 0o644, False),
    ("cmd/tailscaled/tailscaled.defaults", "etc/default/tailscaled", 0o644, True),
    ("release/deb/debian.postinst.sh", "DEBIAN/postinst", 0o755, False),
    ("release/deb/debian.prerm.sh", "DEBIAN/prerm", 0o755, False),
    ("release/deb/debian.postrm.sh", "DEBIAN/postrm", 0o755, False),
)


def _deb_control(version: str) -> str:
    """The control file: pkgs.go's nfpm.Info for the deb (Maintainer says who built it)."""
    return (
        f"Package: tailscale\nVersion: {version}\nSection: net\nPriority: extra\n"
        "Architecture: amd64\nMaintainer: k3sfleet lab <lab@k3sfleet.invalid>\n"
        f"Depends: iptables\nRecommends: tailscale-archive-keyring (>= {LAB_KEYRING_VERSION}), "
        "iproute2\nReplaces: tailscale-relay\nConflicts: tailscale-relay\n"
        "Homepage: https://www.tailscale.com\n"
        "Description: The easiest, most secure, cross platform way to use WireGuard + oauth2 + "
        "2FA/SSO\n Built for the k3sfleet lab from the tailscale.com Go module.\n"
    )


def build_tailscale_deb(outdir: Path, binaries: TailscaleBinaries) -> Path:
    """tailscale_<version>_amd64.deb laid out as Tailscale's own package (DEB_FILES, plus
    /usr/bin/tailscale and /usr/sbin/tailscaled)."""
    files: dict[str, tuple[str | bytes, int]] = {
        "usr/bin/tailscale": (binaries.tailscale.read_bytes(), 0o755),
        "usr/sbin/tailscaled": (binaries.tailscaled.read_bytes(), 0o755),
        **{dst: (binaries.upstream(src).read_bytes(), mode)
           for src, dst, mode, _ in DEB_FILES},
        "DEBIAN/conffiles": ("".join(f"/{dst}\n" for _, dst, _, conf in DEB_FILES
                                     if conf), 0o644),
        "DEBIAN/control": (_deb_control(binaries.version), 0o644),
    }
    with tempfile.TemporaryDirectory() as tmp:
        return _pack(Path(tmp) / "pkg", files,
                     outdir / f"tailscale_{binaries.version}_amd64.deb")


def cached_tailscale_deb(binaries: TailscaleBinaries) -> Path:
    """The real package, built once beside the binaries it is made of (xz of ~50 MB of Go
    binaries takes a minute on a loaded machine; every lab serves the same file), in a folder
    named by a hash of the package's recipe (DEB_FILES and the control file)."""
    recipe = json.dumps([DEB_FILES, _deb_control(binaries.version),
                         binaries.tailscale.parent.name]).encode()
    folder = binaries.directory / f"deb-{hashlib.sha256(recipe).hexdigest()[:12]}"
    deb = folder / f"tailscale_{binaries.version}_amd64.deb"
    if not deb.exists():
        with _locked(binaries.directory / "deb.lock"):
            if not deb.exists():
                with tempfile.TemporaryDirectory(dir=binaries.directory) as tmp:
                    built = build_tailscale_deb(Path(tmp) / "deb", binaries)
                    built.parent.rename(folder)
    return deb


# -- signing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SigningKey:
    """The lab's apt signing key (GnuPG home in the cache, no passphrase)."""

    home: Path
    fingerprint: str

    def gpg(self, *args: str, input: bytes | None = None) -> bytes:  # noqa: A002
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        done = subprocess.run(
            [
                "gpg",
                "--batch",
                "--yes",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                *args,
            ],
            input=input,
            capture_output=True,
            check=True,
            env=env,
        )
        return done.stdout

    def stop_agent(self) -> None:
        """gpg starts an agent for signing: end it so the lab leaves no process behind."""
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
            env={**os.environ, "GNUPGHOME": str(self.home)},
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def signing_key(cache: Path) -> SigningKey:
    """The lab key, generated once into ``cache/apt-gpg`` (ed25519, signing only)."""
    home = cache / "apt-gpg"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    key = SigningKey(home, "")
    listed = key.gpg("--with-colons", "--list-secret-keys").decode()
    if "fpr:" not in listed:
        try:
            key.gpg("--quick-generate-key", KEY_UID, "ed25519", "sign", "never")
        finally:
            key.stop_agent()
        listed = key.gpg("--with-colons", "--list-secret-keys").decode()
    fingerprint = next(
        line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:")
    )
    return SigningKey(home, fingerprint)


def _release(dist_dir: Path, indexes: list[str]) -> str:
    lines = [
        "Origin: Tailscale",
        "Label: Tailscale",
        f"Suite: {DIST}",
        f"Codename: {DIST}",
        "Architectures: amd64",
        "Components: main",
        "Description: Tailscale packages for Debian bookworm (k3sfleet lab)",
        f"Date: {email.utils.formatdate(usegmt=True)}",
    ]
    for field_name, algorithm in (("MD5Sum", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256")):
        lines.append(f"{field_name}:")
        for index in indexes:
            data = (dist_dir / index).read_bytes()
            lines.append(f" {hashlib.new(algorithm, data).hexdigest()} {len(data):>8} {index}")
    return "\n".join(lines) + "\n"


def build_apt_repository(
    directory: Path, cache: Path, binaries: TailscaleBinaries
) -> tuple[Path, str]:
    """A signed repository like pkgs.tailscale.com/stable/debian holding the tailscale package
    made of ``binaries`` (k3sfleet.lab.tailnet); returns (keyring, fingerprint)."""
    debian = directory / "debian"
    if debian.exists():
        shutil.rmtree(debian)
    deb = debian / "pool" / cached_tailscale_deb(binaries).name
    deb.parent.mkdir(parents=True)
    shutil.copyfile(cached_tailscale_deb(binaries), deb)
    with _locked(cache / "apt-gpg.lock"):  # labs are built in parallel; one gpg home
        key = signing_key(cache)
        exported = key.gpg("--export", key.fingerprint)
        build_keyring_deb(debian / "pool", exported)
        packages = subprocess.run(
            ["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"],
            cwd=debian,
            capture_output=True,
            check=True,
        ).stdout
        binary = debian / "dists" / DIST / "main" / "binary-amd64"
        binary.mkdir(parents=True)
        (binary / "Packages").write_bytes(packages)
        (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        dist = debian / "dists" / DIST
        (dist / "Release").write_text(
            _release(dist, ["main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"])
        )
        try:
            key.gpg(
                "--local-user",
                key.fingerprint,
                "--clearsign",
                "--digest-algo",
                "SHA512",
                "--output",
                str(dist / "InRelease"),
                str(dist / "Release"),
            )
            key.gpg(
                "--local-user",
                key.fingerprint,
                "--armor",
                "--detach-sign",
                "--digest-algo",
                "SHA512",
                "--output",
                str(dist / "Release.gpg"),
                str(dist / "Release"),
            )
        finally:
            key.stop_agent()
        keyring = debian / f"{DIST}.noarmor.gpg"
        keyring.write_bytes(exported)
        (debian / f"{DIST}.gpg").write_bytes(key.gpg("--armor", "--export", key.fingerprint))
    (debian / f"{DIST}.tailscale-keyring.list").write_text(
        "# Tailscale packages for debian bookworm (k3sfleet lab)\n"
        "deb [signed-by=/usr/share/keyrings/tailscale-archive-keyring.gpg] "
        f"@BASE@/debian {DIST} main\n"
    )
    assert deb.exists()
    return keyring, key.fingerprint


# -- everything together ---------------------------------------------------------------------
@dataclass(frozen=True)
class Artifacts:
    """What build_artifacts laid out under ``root`` (serve ``root`` over HTTP)."""

    root: Path
    k3s_versions: tuple[str, ...]
    k3s_sha256: dict[str, str]
    tailscale_version: str
    keyring: Path
    key_fingerprint: str

    @property
    def k3s_dir(self) -> Path:
        return self.root / "k3s"

    @property
    def tailscale_dir(self) -> Path:
        return self.root / "tailscale"

    def k3s_release_url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/k3s"

    def tailscale_apt_url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/tailscale"

    def corrupt_checksum(self, version: str) -> None:
        """Fault injection: serve a wrong sha256 for ``version`` (undo with restore_checksum)."""
        corrupt_checksum(self.root, version)

    def restore_checksum(self, version: str) -> None:
        restore_checksum(self.root, version)


def corrupt_checksum(root: Path, version: str) -> None:
    """Fault injection on a served mirror (``root`` = what is served, e.g. ``<lab dir>/www``):
    ``<root>/k3s/<version>/sha256sum-amd64.txt`` names a wrong sha256 for ``k3s``."""
    wrong = hashlib.sha256(b"corrupted:" + version.encode()).hexdigest()
    (Path(root) / "k3s" / version / "sha256sum-amd64.txt").write_text(f"{wrong}  k3s\n")


def restore_checksum(root: Path, version: str) -> None:
    """Undo corrupt_checksum: the checksum file names the served binary's sha256 again."""
    folder = Path(root) / "k3s" / version
    digest = hashlib.sha256((folder / "k3s").read_bytes()).hexdigest()
    (folder / "sha256sum-amd64.txt").write_text(f"{digest}  k3s\n")


def build_artifacts(
    outdir: Path,
    cache: Path,
    tailscale: TailscaleBinaries,
    versions: tuple[str, ...] = LAB_K3S_VERSIONS,
) -> Artifacts:
    """Lay out the k3s mirror and the signed Tailscale apt repository (the package made of
    ``tailscale``) under ``outdir``."""
    outdir, cache = Path(outdir), Path(cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    shas = {version: write_k3s_release(outdir / "k3s", version) for version in versions}
    keyring, fingerprint = build_apt_repository(outdir / "tailscale", cache, tailscale)
    return Artifacts(outdir, tuple(versions), shas, tailscale.version, keyring, fingerprint)


# -- serving ---------------------------------------------------------------------------------
class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Served requests are counted, not printed."""
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@dataclass
class Server:
    """A running artifact server (a ThreadingHTTPServer in a daemon thread)."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread
    url: str
    requests: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def serve(directory: Path, host: str, port: int = 0) -> Server:
    """Serve ``directory`` over plain HTTP on host:port (0 = a free port); stop() ends it."""
    handler = partial(_QuietHandler, directory=str(directory))
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    requests: list[str] = []
    httpd.requests = requests  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="lab-artifacts")
    thread.start()
    return Server(httpd, thread, f"http://{host}:{httpd.server_address[1]}", requests)


# -- Tailscale auth keys the lab's control server accepts ------------------------------------
def lab_auth_key(lab_name: str = "lab") -> str:
    """A new valid auth key for a lab (its sha256 goes into tscontrol's config)."""
    safe = "".join(c for c in lab_name.lower() if c.isalnum())[:12] or "lab"
    return f"tskey-auth-lab{safe}-{secrets.token_hex(16)}"


def auth_key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
