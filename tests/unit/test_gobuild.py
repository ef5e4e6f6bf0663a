"""k3sfleet.lab.gobuild: a Go program is built once per recipe into the cache.

Builds a tiny program of our own (no network: standard library only) with ``go build``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from k3sfleet.lab import gobuild
from k3sfleet.lab.gobuild import GoBuild, cache_key, cached, ensure, go_binary, installed_name

needs_go = pytest.mark.skipif(go_binary() is None, reason="no Go toolchain")

MAIN = 'package main\n\nimport "fmt"\n\nvar stamp = "unset"\n\nfunc main() { fmt.Println(stamp) }\n'


def _module(directory: Path, main: str = MAIN) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "go.mod").write_text("module example.invalid/hello\n\ngo 1.22\n")
    (directory / "main.go").write_text(main)
    return directory


def _hello(module: Path, stamp: str = "v1") -> GoBuild:
    return GoBuild(
        "hello", ".", outputs=("hello", "hello-too"), module_dir=module,
        ldflags=(f"-X main.stamp={stamp}",), env={"CGO_ENABLED": "0"}, versions={"hello": stamp},
    )


def test_installed_name_is_the_last_path_element_without_major_version() -> None:
    assert installed_name("github.com/k3s-io/kine@v0.14.6") == "kine"
    assert installed_name("sigs.k8s.io/kwok/cmd/kwok@v0.8.0") == "kwok"
    assert installed_name("example.com/tool/v2@v2.1.0") == "tool"


def test_key_follows_recipe_sources_and_toolchain(tmp_path: Path) -> None:
    module = _module(tmp_path / "m")
    key = cache_key(_hello(module), "go1.26.8")
    assert cache_key(_hello(module), "go1.26.8") == key
    assert cache_key(_hello(module, "v2"), "go1.26.8") != key
    assert cache_key(_hello(module), "go1.27.0") != key
    (module / "main.go").write_text(MAIN.replace("unset", "other"))
    assert cache_key(_hello(module), "go1.26.8") != key


@needs_go
def test_builds_once_stamps_and_links_outputs(tmp_path: Path) -> None:
    module = _module(tmp_path / "m")
    cache = tmp_path / "cache"
    said: list[str] = []
    assert cached(_hello(module), cache) is None

    entry = ensure(_hello(module), cache, say=said.append)
    binary = entry / "hello"
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "v1\n"  # noqa: S603
    assert (entry / "hello-too").stat().st_ino == binary.stat().st_ino  # one multi-call binary
    assert any("building" in line for line in said) and any("built in" in line for line in said)
    assert cached(_hello(module), cache) == entry

    said.clear()
    mtime = binary.stat().st_mtime_ns
    assert ensure(_hello(module), cache, say=said.append) == entry
    assert said == [] and binary.stat().st_mtime_ns == mtime  # cached: nothing built

    other = ensure(_hello(module, "v2"), cache, say=said.append)
    assert other != entry
    assert subprocess.run([other / "hello"], capture_output=True, text=True).stdout == "v2\n"  # noqa: S603


@needs_go
def test_a_new_build_removes_superseded_entries_unused_for_a_week(tmp_path: Path) -> None:
    """Only the same program's other keys go, and only when unused for PRUNE_AGE."""
    module = _module(tmp_path / "m")
    cache = tmp_path / "cache"
    top = cache / "go"
    week_ago = time.time() - gobuild.PRUNE_AGE - 60

    def entry(name: str, used: float | None = None) -> Path:
        (top / name).mkdir(parents=True)
        (top / name / "hello").write_text("old build\n")
        (top / f"{name}.lock").touch()
        if used is not None:
            os.utime(top / name / "hello", (used, used))
            os.utime(top / name, (used, used))
        return top / name

    stale = entry("hello-0123456789abcdef", used=week_ago)
    recent = entry("hello-fedcba9876543210")  # used just now
    read_lately = entry("hello-00000000000000aa", used=week_ago)
    os.utime(read_lately / "hello", (time.time() - 3600, week_ago))  # read an hour ago
    others = [entry("hello-too-0123456789abcdef", used=week_ago),  # another program's
              entry("hellox-0123456789abcdef", used=week_ago),
              entry("hello-not-a-key", used=week_ago)]

    said: list[str] = []
    new = ensure(_hello(module), cache, say=said.append)
    assert not stale.exists() and not stale.with_suffix(".lock").exists()
    assert any(f"removed {stale.name}" in line for line in said), said
    assert recent.is_dir() and read_lately.is_dir() and all(o.is_dir() for o in others)
    assert (new / "hello").is_file()
    # the entry in use is never removed, however old; a cached build prunes nothing
    for path in (new, *new.iterdir()):
        os.utime(path, (week_ago, week_ago))
    assert gobuild.prune(_hello(module), cache, keep=new) == []
    assert ensure(_hello(module), cache, say=said.append) == new and recent.is_dir()


@needs_go
def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    module = _module(tmp_path / "m", "package main\n\nfunc main() { undefined() }\n")
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="undefined"):
        ensure(_hello(module), cache, say=lambda _: None)
    assert cached(_hello(module), cache) is None
    assert [p.name for p in (cache / "go").iterdir() if not p.name.endswith(".lock")] == []



@needs_go
def test_files_only_entry_holds_the_module_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No outputs: nothing is compiled, the entry holds the named files of the module."""
    source = tmp_path / "module"
    (source / "crds").mkdir(parents=True)
    (source / "crds" / "a.yaml").write_text("kind: CustomResourceDefinition\n")
    asked: list[str] = []
    monkeypatch.setattr(gobuild, "module_source", lambda m: asked.append(m) or source)
    crds = GoBuild("crds", "", outputs=(), module="example.invalid/m@v1.0.0",
                   files=("crds/a.yaml",))
    cache = tmp_path / "cache"
    assert cached(crds, cache) is None
    entry = ensure(crds, cache, say=lambda _: None)
    assert (entry / "crds" / "a.yaml").read_text() == "kind: CustomResourceDefinition\n"
    assert asked == ["example.invalid/m@v1.0.0"]
    assert cached(crds, cache) == entry
    assert sorted(p.name for p in entry.iterdir()) == [".build.log", "crds"]
