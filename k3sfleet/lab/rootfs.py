"""The lab's root filesystem: Debian bookworm built once with debootstrap, cached as tar.zst.

Two cache levels under ``<cache>/rootfs/``:

* ``base-<key>``: debootstrap --variant=minbase with ``LAB_PACKAGES`` plus the lab's fixed
  customisation (the ``k3sfleet`` sudo user, the lxcfs uptime unit, no DNS); ``key`` is the
  sha256 of the package list and ``BASE_RECIPE``. The downloaded .debs are kept next to it as
  a flat apt repository (``debian/``: Packages, Release) that hosts use OFFLINE.
* ``root-<key>``: the base plus the stand-ins' runtime (``standins.install_runtime``); its key
  adds ``standins.runtime_hash()``.

Per lab the tarball is extracted once into a lower dir; each host is an overlay on it, made
unique by ``prepare_host`` (hostname, machine-id, SSH host key, authorized key).

Example::

    root = ensure_root(Path("~/.cache/k3sfleet").expanduser())
    extract(root.tarball, lab_dir / "lower")
"""

from __future__ import annotations

import email.utils
import fcntl
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"

# The packages every lab host has (docs/lab-contract.md). Deploys may install only these.
LAB_PACKAGES: tuple[str, ...] = (
    "openssh-server", "systemd", "systemd-sysv", "dbus", "iproute2", "python3", "python3-venv",
    "sudo", "nftables", "ufw", "curl", "ca-certificates", "iputils-ping", "procps",
    "netcat-openbsd", "gnupg", "unattended-upgrades", "apt-listchanges", "systemd-timesyncd",
    "kmod", "jq", "less",
)

LAB_USER = "k3sfleet"
LAB_UID = 1000

# Bump when the base customisation below changes (it is part of the cache key).
BASE_RECIPE = "3"

UPTIME_UNIT = """\
[Unit]
Description=k3sfleet lab: this host's own uptime from lxcfs (so reboots are visible)
DefaultDependencies=no
Before=sysinit.target
ConditionPathExists=/run/lxcfs/proc/uptime

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount --bind /run/lxcfs/proc/uptime /proc/uptime

[Install]
WantedBy=sysinit.target
"""

SSHD_CONF = """\
# k3sfleet lab: one host key (ed25519), the one the lab wrote into known_hosts.
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
"""

# Units that cannot work in a container and would leave `is-system-running` degraded.
MASKED_UNITS = ("systemd-networkd-wait-online.service",)


@dataclass(frozen=True)
class RootImage:
    """A cached root filesystem: its tarball and the flat apt repository of its packages."""

    key: str
    tarball: Path
    apt_repo: Path


def cache_path(cache_dir: str | Path) -> Path:
    """The cache directory, with ``~`` expanded."""
    return Path(cache_dir).expanduser()


def base_key() -> str:
    """The cache key of the debootstrap base: sha256 of suite, package list and recipe."""
    text = "\n".join([SUITE, BASE_RECIPE, *sorted(LAB_PACKAGES)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def runtime_key() -> str:
    """The stand-ins' runtime hash, or ``none`` while the stand-ins are not there."""
    try:
        from k3sfleet.lab.standins import runtime_hash
    except ImportError:
        return "none"
    return runtime_hash()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(a) for a in argv], check=True, text=True, capture_output=True, **kwargs  # type: ignore[call-overload]
    )


def _mounts_under(path: Path) -> list[str]:
    top = str(path.resolve())
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4] for line in info]
    return [p for p in points if p == top or p.startswith(top + "/")]


@contextmanager
def _build_dir(top: Path) -> Iterator[str]:
    """A scratch directory under ``top``; whatever a failed debootstrap left mounted in it
    (proc, sys, devpts) is unmounted before it is removed, so removal never reaches them."""
    tmp = tempfile.mkdtemp(dir=top, prefix="build-")
    try:
        yield tmp
    finally:
        for point in sorted(_mounts_under(Path(tmp)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)  # noqa: S603
        if not _mounts_under(Path(tmp)):
            shutil.rmtree(tmp, ignore_errors=True)


def pack(root: Path, tarball: Path) -> None:
    """Pack ``root`` into ``tarball`` (tar.zst, numeric owners, xattrs and capabilities kept)."""
    tmp = tarball.with_suffix(".tmp")
    with tmp.open("wb") as out:
        tar = subprocess.Popen(  # noqa: S603
            ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(root),
             "-cf", "-", "."],
            stdout=subprocess.PIPE,
        )
        zstd = subprocess.run(["zstd", "-q", "-T0", "-3"], stdin=tar.stdout, stdout=out)  # noqa: S603
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or zstd.returncode != 0:
            raise RuntimeError(f"packing {root} failed")
    tmp.rename(tarball)


def extract(tarball: Path, dest: Path) -> None:
    """Extract a packed root into ``dest`` (created)."""
    dest.mkdir(parents=True, exist_ok=True)
    zstd = subprocess.Popen(["zstd", "-q", "-d", "-c", str(tarball)], stdout=subprocess.PIPE)  # noqa: S603
    tar = subprocess.run(  # noqa: S603
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(dest), "-xf", "-"],
        stdin=zstd.stdout,
    )
    assert zstd.stdout is not None
    zstd.stdout.close()
    if zstd.wait() != 0 or tar.returncode != 0:
        raise RuntimeError(f"extracting {tarball} failed")


def write_apt_repo(repo: Path) -> None:
    """Write ``Packages``, ``Packages.gz`` and ``Release`` for the .debs in the flat ``repo``."""
    scan = _run("dpkg-scanpackages", "--multiversion", ".", "/dev/null", cwd=str(repo))
    packages = scan.stdout.encode()
    (repo / "Packages").write_bytes(packages)
    with gzip.GzipFile(repo / "Packages.gz", "wb", mtime=0) as gz:
        gz.write(packages)
    lines = ["Origin: k3sfleet-lab", "Label: k3sfleet-lab", "Suite: lab", "Codename: lab",
             f"Date: {email.utils.formatdate(usegmt=True)}", "Architectures: amd64 all",
             "SHA256:"]
    for name in ("Packages", "Packages.gz"):
        data = (repo / name).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    (repo / "Release").write_text("\n".join(lines) + "\n")


def _customise_base(root: Path) -> None:
    """What every lab host shares: the sudo user, the uptime unit, sshd, no DNS, no apt lists."""
    _run("chroot", root, "useradd", "--create-home", "--uid", str(LAB_UID), "--shell",
         "/bin/bash", LAB_USER)
    sudoers = root / "etc/sudoers.d" / LAB_USER
    sudoers.write_text(f"{LAB_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    unit = root / "etc/systemd/system/k3sfleet-lab-uptime.service"
    unit.write_text(UPTIME_UNIT)
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    for name in MASKED_UNITS:
        masked = root / "etc/systemd/system" / name
        masked.unlink(missing_ok=True)
        masked.symlink_to("/dev/null")
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/k3sfleet-lab.conf").write_text(SSHD_CONF)
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("# k3sfleet lab: no nameserver; nothing leaves the lab's bridges\n")
    for path in (root / "etc/ssh").glob("ssh_host_*"):
        path.unlink()
    for path in (root / "etc/machine-id", root / "var/lib/dbus/machine-id"):
        path.unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")
    lists = root / "var/lib/apt/lists"
    for path in lists.glob("*"):
        if path.is_file():
            path.unlink()


def build_base(
    cache: Path, log: Path | None = None, then: Callable[[Path], None] | None = None
) -> RootImage:
    """debootstrap the base root once (locked, so parallel labs build it once).

    ``then(root)`` is called with the fresh tree after the base is packed, only when it was
    built now (so a cold cache builds the next layer without unpacking the base again).
    """
    key = base_key()
    top = cache / "rootfs"
    image = RootImage(key, top / f"base-{key}.tar.zst", top / f"debs-{key}")
    with _locked(top / f"base-{key}.lock"):
        if image.tarball.exists() and (image.apt_repo / "Release").exists():
            return image
        top.mkdir(parents=True, exist_ok=True)
        with _build_dir(top) as tmp:
            root = Path(tmp) / "root"
            # dpkg without fsync while building (a throw-away tree): much faster on busy disks
            unsafe = root / "etc/dpkg/dpkg.cfg.d/k3sfleet-lab-unsafe-io"
            unsafe.parent.mkdir(parents=True)
            unsafe.write_text("force-unsafe-io\n")
            argv = ["debootstrap", "--variant=minbase", f"--include={','.join(LAB_PACKAGES)}",
                    SUITE, str(root), MIRROR]
            out = log.open("a") if log else subprocess.DEVNULL
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
            finally:
                if log:
                    out.close()  # type: ignore[union-attr]
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap failed (exit {done.returncode}); see {log}")
            unsafe.unlink()
            repo = Path(tmp) / "debs"
            repo.mkdir()
            for deb in (root / "var/cache/apt/archives").glob("*.deb"):
                shutil.move(str(deb), repo / deb.name)
            write_apt_repo(repo)
            _customise_base(root)
            pack(root, image.tarball)
            if image.apt_repo.exists():
                shutil.rmtree(image.apt_repo)
            repo.rename(image.apt_repo)
            if then is not None:
                then(root)
    return image


def ensure_root(cache: Path, log: Path | None = None) -> RootImage:
    """The lab's root image: the base plus the stand-ins' runtime, built once and cached.

    On a cold cache the runtime's wheels are downloaded while debootstrap runs.
    """
    rkey = runtime_key()
    if rkey == "none":
        return build_base(cache, log)
    key = f"{base_key()}-{rkey}"
    top = cache / "rootfs"
    image = RootImage(key, top / f"root-{key}.tar.zst", top / f"debs-{base_key()}")
    if image.tarball.exists() and (image.apt_repo / "Release").exists():
        return image
    from k3sfleet.lab.standins import install_runtime
    from k3sfleet.lab.standins.runtime import download_wheels

    with ThreadPoolExecutor(max_workers=1) as pool, _locked(top / f"root-{key}.lock"):
        if image.tarball.exists():
            return image
        wheels = pool.submit(download_wheels, cache)

        def add_runtime(root: Path) -> None:
            wheels.result()
            install_runtime(root, cache)
            pack(root, image.tarball)

        base = build_base(cache, log, then=add_runtime)
        if not image.tarball.exists():  # the base was cached: add the runtime to a copy
            with _build_dir(top) as tmp:
                root = Path(tmp) / "root"
                extract(base.tarball, root)
                add_runtime(root)
    prune(top, keep={image.tarball, base.tarball})
    return image


# A cached build superseded by another key (a root tarball here, a Go program in gobuild) goes
# once unused this long. A week, because file systems mounted relatime (the default) update a
# file's access time at most once a day, and a second checkout on an older recipe (a git
# worktree) must not rebuild what it used yesterday.
PRUNE_AGE = 7 * 24 * 3600


def last_used(path: Path) -> float:
    """The latest modification or access time of ``path`` and, for a directory, of the files in
    it (symbolic links not followed)."""
    status = path.stat()
    times = [status.st_mtime, status.st_atime]
    for inner in path.rglob("*") if path.is_dir() else ():
        if inner.is_file() and not inner.is_symlink():
            status = inner.stat()
            times += [status.st_mtime, status.st_atime]
    return max(times)


def prune(top: Path, keep: set[Path], age: float = PRUNE_AGE) -> list[Path]:
    """Remove cached root tarballs other than ``keep`` unused for ``age`` seconds (a lab
    extracting one right now has it open or finished long before); return what went."""
    gone = []
    now = time.time()
    for tarball in top.glob("*.tar.zst"):
        if tarball in keep or now - last_used(tarball) < age:
            continue
        tarball.unlink(missing_ok=True)
        tarball.with_suffix("").with_suffix(".lock").unlink(missing_ok=True)
        gone.append(tarball)
    return gone


@dataclass(frozen=True)
class HostIdentity:
    """What makes one host unique inside its overlay."""

    name: str
    apt_url: str
    authorized_key: str


def prepare_host(root: Path, ident: HostIdentity) -> str:
    """Make the mounted overlay ``root`` one host; return its SSH host public key line.

    Example: ``prepare_host(hdir / "root", HostIdentity("lab-server-1", ...))`` ->
    ``"ssh-ed25519 AAAA... root@lab-server-1"``
    """
    (root / "etc/hostname").write_text(ident.name + "\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{ident.name}\n::1\tlocalhost ip6-localhost\n"
    )
    for path in (root / "etc/machine-id", root / "var/lib/dbus/machine-id"):
        path.unlink(missing_ok=True)
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    (root / "var/lib/dbus").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    keyfile = root / "etc/ssh/ssh_host_ed25519_key"
    for path in (root / "etc/ssh").glob("ssh_host_*"):
        path.unlink()
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{ident.name}", "-f", keyfile)
    ssh_dir = root / "home" / LAB_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(ident.authorized_key.strip() + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, LAB_UID, LAB_UID)
    (root / "etc/k3sfleet-lab").mkdir(exist_ok=True)  # the lab's markers (fail-start)
    sources = root / "etc/apt/sources.list"
    sources.write_text(f"deb [trusted=yes] {ident.apt_url} ./\n")
    for extra in (root / "etc/apt/sources.list.d").glob("debian.sources"):
        extra.unlink()
    return (keyfile.with_suffix(".pub")).read_text().split(" root@")[0].strip()


def timed(label: str, since: float) -> str:
    """``label: 1.2 s`` since ``since`` (time.monotonic())."""
    return f"{label}: {time.monotonic() - since:.1f} s"
