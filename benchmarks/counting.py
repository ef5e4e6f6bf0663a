"""Run the pyinfra CLI and count what it does over SSH, per host, without debug logging.

    python benchmarks/counting.py COUNTS.json [--nagle] -- -y inventory.py deploys/cluster.py

Counts, written as JSON when the CLI exits: remote commands (``SSHConnector.run_shell_command``)
and file uploads (``put_file``) per host, SSH connections per host (``SSHConnector._connect``)
and SSH handshakes in the whole process (``paramiko.Transport.start_client``, which also
catches any connection made outside the connector). Counting this way keeps pyinfra's
``--debug`` logging, itself a per-command cost, out of the timed run.

``--nagle`` switches off k3sfleet's TCP_NODELAY hook (``k3sfleet.entry``) in this process: the
"before" of that change.
"""

from __future__ import annotations

import atexit
import functools
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _count(counter: Counter[str], key: Any) -> Any:
    """Decorate a connector method so each call adds one to ``counter[host name]``."""

    def wrap(method: Any) -> Any:
        @functools.wraps(method)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            counter[key(self)] += 1
            return method(self, *args, **kwargs)

        return inner

    return wrap


def install(out: Path) -> Callable[[], None]:
    """Patch pyinfra's SSH connector and paramiko in this process; write counts at exit (the
    returned function writes them now)."""
    import paramiko
    from pyinfra.connectors.ssh import SSHConnector

    commands: Counter[str] = Counter()
    uploads: Counter[str] = Counter()
    connections: Counter[str] = Counter()
    handshakes: Counter[str] = Counter()

    def host_name(connector: Any) -> str:
        return str(connector.host.name)

    SSHConnector.run_shell_command = _count(commands, host_name)(SSHConnector.run_shell_command)  # type: ignore[method-assign]
    SSHConnector.put_file = _count(uploads, host_name)(SSHConnector.put_file)  # type: ignore[method-assign]
    SSHConnector._connect = _count(connections, host_name)(SSHConnector._connect)  # type: ignore[method-assign]
    paramiko.Transport.start_client = _count(handshakes, lambda _t: "all")(  # type: ignore[method-assign]
        paramiko.Transport.start_client
    )

    def write() -> None:
        out.write_text(
            json.dumps(
                {
                    "commands": dict(commands),
                    "uploads": dict(uploads),
                    "connections": dict(connections),
                    "handshakes": handshakes["all"],
                }
            )
        )

    atexit.register(write)
    return write


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    own, pyinfra_args = argv[:split], argv[split + 1 :]
    install(Path(own[0]))
    if "--nagle" in own:
        import k3sfleet.entry as entry

        entry.set_host_tcp_nodelay = lambda host: False  # type: ignore[assignment]
    from pyinfra_cli.main import main as pyinfra_main

    sys.argv = ["pyinfra", *pyinfra_args]
    pyinfra_main()


if __name__ == "__main__":
    main(sys.argv[1:])
