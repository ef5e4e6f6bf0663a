"""The stand-in k3s executable's entry point (its version is baked in by the zipapp).

Upstream (k3s-io/k3s v1.34.2+k3s1; the search index holds nearby revisions of these files, not
that exact commit): ``cmd/k3s/main.go`` and ``cmd/server/main.go`` dispatch ``server``,
``agent`` and ``etcd-snapshot`` (whose bare form is ``save``: ``NewEtcdSnapshotCommand(
etcdsnapshot.Save, ...)``); an error returned by a command ends in ``logrus.Fatal`` (exit
status 1, see :mod:`.log`).

Example::

    main(["--version"], "v1.34.2+k3s1")   # prints "k3s version v1.34.2+k3s1 (8dac81b2)"
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from . import log
from .config import DEFAULT_CONFIG, load_config

FAULT_MARKER = Path("/etc/k3sfleet-lab/fail-start")
# Not found in k3s v1.34.2+k3s1 (the toolchain is not in the tree the index holds); kept
# because `k3s --version` prints a second line "go version <runtime.Version()>" and nothing in
# k3sfleet reads it.
GO_VERSION = "go1.24.4"
# The short commit `k3s --version` prints for a real release: the commit tagged v1.34.2+k3s1
# (k3sfleet.lab.controlplane K3S_COMMIT, from nixpkgs' k3s 1_34 versions.nix), 8 hex digits as
# in released binaries' "k3s version v1.3x.y+k3s1 (xxxxxxxx)". The lab's made-up versions
# (upgrade targets) get a stable stand-in commit derived from the version.
RELEASE_COMMITS = {"v1.34.2+k3s1": "8dac81b2"}


def commit(version: str) -> str:
    return RELEASE_COMMITS.get(version) or hashlib.sha256(version.encode()).hexdigest()[:8]


def version_text(version: str) -> str:
    """``k3s --version``: k3s-io/k3s pkg/cli/cmds/root.go ``NewApp`` (``app.Version`` is
    "<version> (<git commit>)"; ``cli.VersionPrinter`` prints "%s version %s" then
    "go version %s")."""
    return f"k3s version {version} ({commit(version)})\ngo version {GO_VERSION}"


def _check_fault(version: str) -> None:
    """Lab fault injection: the marker makes every version (or the one it names) fail to start;
    holding ``once``, only the next start fails, and the marker goes.

    Lab-only (no upstream source): it stands for a release that cannot start, or a transient
    start failure (``once``)."""
    if FAULT_MARKER.exists():
        wanted = FAULT_MARKER.read_text().strip()
        if wanted == "once":
            FAULT_MARKER.unlink(missing_ok=True)
            log.fatal(f"lab fault injected by {FAULT_MARKER} (once): not starting k3s {version}")
        if not wanted or wanted == version:
            log.fatal(f"lab fault injected by {FAULT_MARKER}: refusing to start k3s {version}")


def _run(argv: list[str], version: str) -> int:
    if not argv or argv[0] in ("-v", "--version", "version"):
        if not argv:  # (urfave/cli prints the app help here; not imitated)
            print(
                f"k3s {version}: usage: k3s [server|agent|etcd-snapshot|--version]", file=sys.stderr
            )
            return 1
        print(version_text(version))
        return 0
    command, rest = argv[0], argv[1:]
    if command == "etcd-snapshot":
        from . import snapshot

        sub = rest[0] if rest and not rest[0].startswith("-") else "save"
        flags = rest[1:] if rest and rest[0] == sub else rest
        if sub == "delete":
            return snapshot.run([sub, *flags], load_config([], DEFAULT_CONFIG))
        return snapshot.run([sub], load_config(flags, DEFAULT_CONFIG))
    if command not in ("server", "agent"):  # (urfave/cli's own wording is not imitated)
        print(f"k3s: unknown command {command!r}", file=sys.stderr)
        return 1
    config = load_config(rest, DEFAULT_CONFIG)
    if command == "server":  # pkg/cli/server/server.go run: "Starting " + Program + " " + Version
        log.info(f"Starting k3s {version} ({commit(version)})")
    if config.get("cluster-reset"):
        from . import snapshot

        return snapshot.cluster_reset(config)
    _check_fault(version)
    if command == "server":
        from . import server

        return server.run(config, version)
    from . import agent

    return agent.run(config, version, commit(version))


def main(argv: list[str], version: str) -> int:
    try:
        return _run(argv, version)
    except log.Fatal as error:
        log.report_fatal(error)
        return 1
    except ValueError as error:
        log.report_fatal(log.Fatal(str(error)))
        return 1
    except KeyboardInterrupt:
        return 0
