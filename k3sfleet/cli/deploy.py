"""``k3sfleet deploy ENTRY [pyinfra options]``: run an entry file with the pyinfra CLI.

ENTRY is a name (``bootstrap``, ``cluster``, ``secrets`` ...) or a path. The project's own copy
(``deploys/<name>.py``, as ``k3sfleet init`` writes for ``secrets``) wins; else the installed
entry file is used, so a project made with ``k3sfleet init`` needs no clone. The command is
``pyinfra INVENTORY ENTRY_FILE [options]`` run in the project folder; its exit code is pyinfra's.
An inventory that is not valid Python is reported here, before pyinfra runs.

Example::

    k3sfleet deploy bootstrap --dry --diff
    k3sfleet deploy cluster --limit vps-hetzner-1
    k3sfleet deploy --list
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from k3sfleet.kube import check_syntax
from k3sfleet.project import entry_file, entry_names, entry_summary
from k3sfleet.vault import VaultError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "deploy", help="run an entry file (bootstrap, cluster ...) with pyinfra: deploy ENTRY"
    )
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    parser.add_argument(
        "--list", action="store_true", help="list the entry files (one line each) and exit"
    )
    parser.add_argument("--print-path", action="store_true", help="print the entry file's path")
    parser.add_argument("entry", nargs="?", help="bootstrap, cluster, init_cluster, secrets ...")
    parser.add_argument("pyinfra_args", nargs=argparse.REMAINDER, help="passed on to pyinfra")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = Path(args.project_dir)
    if args.list:
        for name in entry_names():
            print(f"{name:14} {entry_summary(entry_file(name, project))}")
        return 0
    if not args.entry:
        print("k3sfleet deploy: name an entry file (k3sfleet deploy --list)", file=sys.stderr)
        return 2
    path = entry_file(args.entry, project)
    if args.print_path:
        print(path)
        return 0
    inventory = project / args.inventory
    check_syntax(inventory)
    env = dict(os.environ)
    if args.vault_password_file:  # the inventory reads the vault with the same password file
        env["K3SFLEET_VAULT_PASSWORD_FILE"] = str(Path(args.vault_password_file).absolute())
    if args.ask_vault_pass:
        raise VaultError("k3sfleet deploy runs pyinfra: give the vault password as a file "
                         "(--vault-password-file or K3SFLEET_VAULT_PASSWORD_FILE)")
    command = [sys.executable, "-m", "pyinfra", args.inventory, str(path), *args.pyinfra_args]
    return subprocess.call(command, cwd=project, env=env)
