"""The stand-in k3s's own Python runtime, installed into the lab's root filesystem.

The stand-in k3s executable is a zipapp whose shebang is ``RUNTIME_PYTHON``; it needs PyYAML (to
read config.yaml and manifests) and cryptography (to make its CA and serving certificates). Those
are installed OFFLINE into a virtualenv made by the root's own ``python3 -m venv``, from wheels
downloaded once on the machine into the cache (a chroot has neither the machine's pip settings
nor its CA bundle, so it cannot reach the registry itself).

Example::

    install_runtime(Path("/var/lib/k3sfleet-lab/rootfs"), Path.home() / ".cache/k3sfleet")
    # root/opt/k3sfleet-standin/venv/bin/python -c "import yaml, cryptography" works in the root
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

RUNTIME_PREFIX = "/opt/k3sfleet-standin"
RUNTIME_PYTHON = f"{RUNTIME_PREFIX}/venv/bin/python"

# Pinned so that the root filesystem's cache key (runtime_hash) changes only when they do.
# Debian bookworm's python3 is 3.11, like the machine's, so cp311 / abi3 manylinux wheels fit.
RUNTIME_REQUIREMENTS: tuple[str, ...] = (
    "PyYAML==6.0.3",
    "cryptography==48.0.0",
    "cffi==2.0.0",
    "pycparser==3.0",
)
_TARGET_PYTHON = "3.11"
_TARGET_PLATFORMS = (
    "manylinux_2_34_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def runtime_hash() -> str:
    """Hash of what decides the runtime in a root: install_runtime's source and the wheel list.

    (How the wheels are fetched does not matter to the root, so it is left out.)
    Example: ``runtime_hash()[:16]`` is part of the lab's root filesystem cache key.
    """
    digest = hashlib.sha256()
    digest.update(inspect.getsource(install_runtime).encode())
    digest.update(f"{RUNTIME_PREFIX}\n{_TARGET_PYTHON}\n".encode())
    digest.update("\n".join(RUNTIME_REQUIREMENTS).encode())
    return digest.hexdigest()


def download_wheels(cache: Path) -> Path:
    """Download the runtime's wheels for the root's Python into ``cache/standin-wheels/<hash>``.

    Done once: a folder that already holds every wheel is reused without touching the registry.
    """
    key = hashlib.sha256("\n".join(RUNTIME_REQUIREMENTS).encode()).hexdigest()[:16]
    folder = cache / "standin-wheels" / key
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:  # two labs may build roots at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _download(folder)
            done.write_text("\n".join(RUNTIME_REQUIREMENTS) + "\n")
    return folder


def _download(folder: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(folder),
        "--python-version",
        _TARGET_PYTHON,
        "--implementation",
        "cp",
    ]
    for platform in _TARGET_PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *RUNTIME_REQUIREMENTS], check=True)


def install_runtime(root: Path, cache: Path) -> None:
    """Install the stand-in runtime into the debootstrapped bookworm root at ``root``.

    Creates ``root/opt/k3sfleet-standin/venv`` with the root's own ``python3 -m venv`` (inside a
    chroot) and installs the pinned wheels offline. Idempotent: a root whose runtime already
    carries this runtime_hash() is left alone.
    """
    root = Path(root)
    prefix = root / RUNTIME_PREFIX.lstrip("/")
    stamp = prefix / "runtime-hash"
    if stamp.exists() and stamp.read_text().strip() == runtime_hash():
        return
    wheels = download_wheels(Path(cache).expanduser())
    if prefix.exists():
        shutil.rmtree(prefix)
    (prefix / "wheels").mkdir(parents=True)
    for wheel in wheels.glob("*.whl"):
        shutil.copy2(wheel, prefix / "wheels" / wheel.name)
    chroot = ["chroot", str(root)]
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    subprocess.run(
        [*chroot, "python3", "-m", "venv", f"{RUNTIME_PREFIX}/venv"], check=True, env=env
    )
    subprocess.run(
        [
            *chroot,
            RUNTIME_PYTHON,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-cache-dir",
            "--find-links",
            f"{RUNTIME_PREFIX}/wheels",
            *RUNTIME_REQUIREMENTS,
        ],
        check=True,
        env=env,
    )
    subprocess.run(
        [*chroot, RUNTIME_PYTHON, "-c", "import yaml, cryptography.x509"], check=True, env=env
    )
    shutil.rmtree(prefix / "wheels")
    stamp.write_text(runtime_hash() + "\n")
