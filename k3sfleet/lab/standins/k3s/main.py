"""The stand-in k3s executable's entry point (its version is baked in by the zipapp).

Example::

    main(["--version"], "v1.34.2+k3s1")   # prints "k3s version v1.34.2+k3s1 (1a2b3c4d)"
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from . import log
from .config import DEFAULT_CONFIG, load_config

FAULT_MARKER = Path("/etc/k3sfleet-lab/fail-start")
GO_VERSION = "go1.24.4"


def commit(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()[:8]


def version_text(version: str) -> str:
    return f"k3s version {version} ({commit(version)})\ngo version {GO_VERSION}"


def _check_fault(version: str) -> None:
    """Lab fault injection: the marker makes every version (or the one it names) fail to start."""
    if FAULT_MARKER.exists():
        wanted = FAULT_MARKER.read_text().strip()
        if not wanted or wanted == version:
            log.fatal(f"lab fault injected by {FAULT_MARKER}: refusing to start k3s {version}")


def _run(argv: list[str], version: str) -> int:
    if not argv or argv[0] in ("-v", "--version", "version"):
        if not argv:
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
    if command not in ("server", "agent"):
        print(f"k3s: unknown command {command!r}", file=sys.stderr)
        return 1
    config = load_config(rest, DEFAULT_CONFIG)
    log.info(f"Starting k3s {command} {version} ({commit(version)})")
    if config.get("cluster-reset"):
        from . import snapshot

        return snapshot.cluster_reset(config)
    _check_fault(version)
    if command == "server":
        from . import server

        return server.run(config, version)
    from . import agent

    return agent.run(config, version)


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
