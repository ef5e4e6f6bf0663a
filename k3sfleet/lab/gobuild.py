"""Build Go programs for the lab once per version and recipe, cached beside the root filesystem.

A :class:`GoBuild` names one program: either a package of a module we keep in this repository
(``k3sfleet/lab/go/<name>``, built with ``go build`` there, its go.mod pinning every version) or
a published ``module/cmd@version`` without replace directives (``go install`` builds it in
module mode, ignoring any go.mod here). Its cache key is the sha256 of everything that decides
the bytes: the package and versions, ldflags, tags, environment, the Go toolchain's version,
:data:`RECIPE` and the content of our module's files. The binaries land in
``<cache>/go/<name>-<key>/`` (built into a temporary directory and renamed, under a lock, so
parallel labs build once and never see half a binary). Only a fresh machine, or a changed
recipe, pays the build; ``scripts/setup.sh`` runs ``python -m k3sfleet.lab.gobuild`` to pay it
up front, with progress output. A new build removes the entries of the same program that it
supersedes once they have not been used for :data:`PRUNE_AGE` (see :func:`prune`).

Example::

    hello = GoBuild("hello", "example.com/hello@v1.0.0", outputs=("hello",))
    binary = ensure(hello, Path("~/.cache/k3sfleet").expanduser()) / "hello"
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# the cache's flock and age rule (artifacts imports this module)
from k3sfleet.lab.rootfs import PRUNE_AGE, _locked, last_used

# Bump when how builds are run changes in a way that changes the binaries.
RECIPE = "1"

GO_SOURCES = Path(__file__).parent / "go"

# Modules whose ``BUILDS`` tuple lists the lab's Go programs (``python -m k3sfleet.lab.gobuild``).
PROVIDERS: tuple[str, ...] = ("k3sfleet.lab.controlplane", "k3sfleet.lab.tailnet")

Say = Callable[[str], None]


@dataclass(frozen=True)
class GoBuild:
    """One Go program for the lab.

    ``package`` is ``module/path@version`` (``go install``; the module must have no replace
    directives) or, with ``module_dir``, a package path inside our own module (``go build``).
    ``outputs`` are the file names the program is installed under in the cache entry: the
    first is the built binary, the others are hard links to it (multi-call binaries that pick
    their behaviour by ``os.Args[0]``). ``files`` are copied from the source of ``module``
    (``path@version``, as the Go module proxy serves it) into the entry, keeping their paths:
    data a program needs that its project ships beside the code (never copied into this
    repository). ``additions`` (path in ``module`` -> file of ours in ``module_dir``) builds
    against a copy of ``module`` with those files added (``go build -modfile`` replacing it;
    ``-overlay`` refuses files in GOMODCACHE): code of ours that must live in one of its
    packages. With no ``outputs`` nothing is compiled: the entry holds only ``files`` (data a
    project publishes in its module, such as CRD manifests, fetched at that exact version).

    Example::

        GoBuild("kine", "github.com/k3s-io/kine@v0.14.6", outputs=("kine",),
                env={"CGO_ENABLED": "1"}, ldflags=("-s", "-w"))
        GoBuild("crds-argocd", "", outputs=(), module="github.com/argoproj/argo-cd/v3@v3.2.0",
                files=("manifests/crds/application-crd.yaml",))
    """

    name: str
    package: str
    outputs: tuple[str, ...]
    module_dir: Path | None = None
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    module: str | None = None
    files: tuple[str, ...] = ()
    additions: Mapping[str, str] = field(default_factory=dict)

    def argv(self, output: Path, modfile: Path | None = None) -> list[str]:
        """The ``go`` command line that builds the first output at ``output``."""
        flags = ["-trimpath", "-v"]
        if modfile is not None:
            flags.append(f"-modfile={modfile}")
        if self.tags:
            flags.append("-tags=" + ",".join(self.tags))
        if self.ldflags:
            flags.append("-ldflags=" + " ".join(self.ldflags))
        if self.module_dir is None:
            # `go install pkg@version` writes to GOBIN under the command's own name.
            return [_go(), "install", *flags, self.package]
        return [_go(), "build", *flags, "-o", str(output), self.package]


def installed_name(package: str) -> str:
    """The file name ``go install package@version`` gives its binary (``/vN`` dropped)."""
    parts = package.split("@")[0].split("/")
    if len(parts) > 1 and parts[-1][:1] == "v" and parts[-1][1:].isdigit():
        parts.pop()
    return parts[-1]


def go_binary() -> str | None:
    """The ``go`` command: on PATH, else Go's default /usr/local/go/bin/go; None if neither."""
    found = shutil.which("go") or "/usr/local/go/bin/go"
    return found if Path(found).exists() else None


def _go() -> str:
    go = go_binary()
    if go is None:
        raise FileNotFoundError("no Go toolchain: install Go or put `go` on PATH")
    return go


def go_version() -> str:
    """The Go toolchain's version (``go1.26.8``), part of every cache key."""
    result = subprocess.run(  # noqa: S603
        [_go(), "env", "GOVERSION"], check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _sources_digest(build: GoBuild) -> str | None:
    """What of ``build.module_dir`` decides its bytes: the whole tree when the package is the
    module's own (``.``); only go.mod and go.sum (and the ``additions``) when it is a package
    of another module resolved through them, so editing our main.go rekeys only that build."""
    if build.module_dir is None:
        return None
    if build.package == ".":
        return _tree_digest(build.module_dir)
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", *sorted(build.additions.values())):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256((build.module_dir / name).read_bytes()).digest())
    return digest.hexdigest()


def cache_key(build: GoBuild, toolchain: str) -> str:
    """The first 16 hex digits of the sha256 of everything that decides ``build``'s bytes."""
    recipe = {
        "recipe": RECIPE,
        "go": toolchain,
        "package": build.package,
        "outputs": list(build.outputs),
        "ldflags": list(build.ldflags),
        "tags": list(build.tags),
        "env": dict(sorted(build.env.items())),
        "versions": dict(sorted(build.versions.items())),
        "sources": _sources_digest(build),
        "module": build.module,
        "files": list(build.files),
        "additions": dict(sorted(build.additions.items())),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def entry_dir(build: GoBuild, cache: Path, toolchain: str | None = None) -> Path:
    """``<cache>/go/<name>-<key>``: where ``build``'s outputs are (or will be) cached."""
    key = cache_key(build, toolchain or go_version())
    return cache.expanduser() / "go" / f"{build.name}-{key}"


def prune(build: GoBuild, cache: Path, keep: Path, age: float = PRUNE_AGE) -> list[Path]:
    """Remove ``build``'s other cache entries (``<name>-<key>``, made for another version or
    recipe) unused for ``age`` seconds, with their lock files; return what went.

    Entries of other programs are never touched; neither is one being built (its lock is held).

    Example::

        prune(kube, Path("~/.cache/k3sfleet"), keep=entry_dir(kube, cache))  # [...-0123...]
    """
    gone = []
    now = time.time()
    for entry in sorted((cache.expanduser() / "go").glob(f"{build.name}-*")):
        key = entry.name[len(build.name) + 1 :]
        if entry == keep or not entry.is_dir() or len(key) != 16:
            continue
        if any(c not in "0123456789abcdef" for c in key) or now - last_used(entry) < age:
            continue
        lock = entry.with_suffix(".lock")
        with _locked(lock):
            shutil.rmtree(entry, ignore_errors=True)
        lock.unlink(missing_ok=True)
        gone.append(entry)
    return gone


def cached(build: GoBuild, cache: Path) -> Path | None:
    """The cache entry of ``build`` when it is complete, else None (nothing is built)."""
    try:
        directory = entry_dir(build, cache)
    except (OSError, subprocess.CalledProcessError):
        return None
    return directory if _complete(build, directory) else None


def _complete(build: GoBuild, directory: Path) -> bool:
    return all((directory / name).is_file() for name in (*build.outputs, *build.files))


def module_source(module: str) -> Path:
    """The source directory of ``module`` (``path@version``), downloaded if needed."""
    result = subprocess.run(  # noqa: S603
        [_go(), "mod", "download", "-json", module],
        check=True, capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )
    return Path(json.loads(result.stdout)["Dir"])


def _modfile_with_additions(build: GoBuild, workdir: Path) -> Path:
    """A copy of ``build.module`` with ``build.additions`` in it, and a go.mod (returned) of
    ``build.module_dir`` that replaces the module with the copy."""
    assert build.module and build.module_dir, f"{build.name}: additions= need module="
    path = build.module.split("@")[0]
    copy = workdir / "module"
    shutil.copytree(module_source(build.module), copy)
    for item in [copy, *copy.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    for inside, ours in build.additions.items():
        shutil.copyfile(build.module_dir / ours, copy / inside)
    modfile = workdir / "go.mod"
    modfile.write_text((build.module_dir / "go.mod").read_text() + f"\nreplace {path} => {copy}\n")
    shutil.copyfile(build.module_dir / "go.sum", workdir / "go.sum")
    return modfile


def _run_go(build: GoBuild, workdir: Path, say: Say, every: float) -> None:
    env = {**os.environ, **build.env, "GOBIN": str(workdir), "GOFLAGS": "-trimpath"}
    patched = Path(tempfile.mkdtemp(dir=workdir.parent, prefix=f".{build.name}-module-"))
    try:
        modfile = _modfile_with_additions(build, patched) if build.additions else None
        _run_go_argv(build, build.argv(workdir / build.outputs[0], modfile), workdir, env, say,
                     every)
    finally:
        shutil.rmtree(patched, ignore_errors=True)


def _run_go_argv(
    build: GoBuild, argv: list[str], workdir: Path, env: dict[str, str], say: Say, every: float
) -> None:
    cwd = build.module_dir or workdir
    log = workdir / "build.log"
    compiled = 0
    started = time.monotonic()
    done = threading.Event()

    def report() -> None:
        while not done.wait(every):
            done_what = f"{compiled} packages compiled" if compiled else "fetching modules"
            say(f"{build.name}: {done_what}, {time.monotonic() - started:.0f} s")

    ticker = threading.Thread(target=report, daemon=True)
    with log.open("w") as out:
        # nice: the lab machine's cores are shared; a build must not starve the tests.
        proc = subprocess.Popen(  # noqa: S603
            ["nice", "-n", "10", *argv], cwd=cwd, env=env,  # noqa: S607
            stdout=out, stderr=subprocess.PIPE, text=True,
        )
        ticker.start()
        assert proc.stderr is not None
        for line in proc.stderr:
            out.write(line)
            if line.strip() and " " not in line.strip():
                compiled += 1  # `go build -v` names each package it compiles on a line
        code = proc.wait()
    done.set()
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{build.name}: {' '.join(argv)} failed ({code}):\n{tail}")


def ensure(build: GoBuild, cache: Path, say: Say = print, every: float = 30.0) -> Path:
    """The cache directory holding ``build.outputs``, building them first when missing.

    Prints progress every ``every`` seconds and the time taken; a cached build prints nothing.
    """
    toolchain = go_version()
    directory = entry_dir(build, cache, toolchain)
    if _complete(build, directory):
        return directory
    with _locked(directory.with_suffix(".lock")):
        if _complete(build, directory):
            return directory  # another process built it while we waited
        started = time.monotonic()
        what = build.package or f"files of {build.module}"
        if build.module_dir is not None:
            pins = ", ".join(f"{k} {v}" for k, v in build.versions.items())
            name = build.module_dir.name if build.package == "." else build.package
            what = f"{name} ({pins})" if pins else name
        say(f"{build.name}: building {what} with {toolchain} (once; cached in {directory})")
        work = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{build.name}-"))
        try:
            if build.outputs:
                _run_go(build, work, say, every)
                first = work / build.outputs[0]
                if build.module_dir is None:
                    (work / installed_name(build.package)).rename(first)
                for other in build.outputs[1:]:
                    os.link(first, work / other)
            else:
                (work / "build.log").write_text(f"files of {build.module}\n")
            if build.files:
                assert build.module, f"{build.name}: files= needs module="
                source = module_source(build.module)
                for name in build.files:
                    (work / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source / name, work / name)
            (work / "build.log").rename(work / ".build.log")
            work.chmod(0o755)  # mkdtemp made it 0700
            shutil.rmtree(directory, ignore_errors=True)
            work.rename(directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        made = build.outputs[:1] or build.files
        size = sum((directory / name).stat().st_size for name in made)
        say(
            f"{build.name}: built in {time.monotonic() - started:.0f} s "
            f"({size / 1e6:.0f} MB, {', '.join(build.outputs) or f'{len(build.files)} files'})"
        )
    for old in prune(build, cache, keep=directory):
        days = PRUNE_AGE // 86400
        say(f"{build.name}: removed {old.name}, superseded and unused for {days} days")
    return directory


def lab_builds() -> list[GoBuild]:
    """Every Go program the lab uses, from each module in :data:`PROVIDERS`."""
    builds: list[GoBuild] = []
    for module in PROVIDERS:
        builds.extend(importlib.import_module(module).BUILDS)
    return builds


def main(argv: list[str] | None = None) -> int:
    """``python -m k3sfleet.lab.gobuild [--cache DIR] [NAME ...]``: build what is missing."""
    parser = argparse.ArgumentParser(
        prog="python -m k3sfleet.lab.gobuild", description=main.__doc__
    )
    parser.add_argument("--cache", help="cache directory (default: K3SFLEET_LAB_CACHE_DIR)")
    parser.add_argument("names", nargs="*", help="only these builds (default: all)")
    args = parser.parse_args(argv)
    if go_binary() is None:
        print("gobuild: no Go toolchain: the lab's Go programs cannot be built", file=sys.stderr)
        return 1
    if args.cache is None:
        from k3sfleet.settings import Settings

        args.cache = Settings.load(".", use_vault=False).k3sfleet_lab_cache_dir
    cache = Path(args.cache).expanduser()
    builds = [b for b in lab_builds() if not args.names or b.name in args.names]
    unknown = set(args.names) - {b.name for b in builds}
    if unknown:
        print(f"gobuild: no such build: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    started = time.monotonic()
    for build in builds:
        directory = ensure(build, cache, say=lambda m: print(f"gobuild: {m}", flush=True))
        print(f"gobuild: {build.name} ready in {directory}", flush=True)
    print(f"gobuild: all ready in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
