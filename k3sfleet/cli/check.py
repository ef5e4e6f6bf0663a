"""``k3sfleet check [ENTRY]``: every check that runs before a host is contacted, and nothing else.

The inventory is executed as pyinfra would execute it for ``pyinfra inventory.py ENTRY_FILE``,
inside ``k3sfleet.inventory.running`` (so ``groups()`` runs the entry file's own ``PREFLIGHT``):
settings, vault, nodes, labels, addresses, host data and what the entry file needs. No
connection is made.

Example::

    k3sfleet check bootstrap        # exit 0: nothing to fix; exit 3: every problem listed
    k3sfleet check                  # the inventory, settings and vault only
"""

from __future__ import annotations

import argparse
from pathlib import Path

from k3sfleet.inventory import running
from k3sfleet.kube import check_syntax, inventory_from_file
from k3sfleet.project import entry_file


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "check", help="check inventory, settings and vault for an entry file; contacts no host"
    )
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    parser.add_argument("entry", nargs="?", default=None, help="bootstrap, cluster, ... or a path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = Path(args.project_dir)
    inventory = (project / args.inventory).resolve()
    entry = entry_file(args.entry, project) if args.entry else None
    if entry is not None:
        check_syntax(entry)
    with running([entry] if entry else []):
        hosts = list(inventory_from_file(inventory))
    what = f"{args.inventory} for {entry.name}" if entry else args.inventory
    print(f"k3sfleet check: {what}: no problems, {len(hosts)} host(s); no host was contacted")
    return 0
