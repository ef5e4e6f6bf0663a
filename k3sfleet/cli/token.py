"""``k3sfleet token save``: keep the cluster token in the vault (``vault_k3s_token``).

Example::

    k3sfleet token save                        # from the first server of inventory.py
    k3sfleet token save --server vps-aws-2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from k3sfleet.errors import ConfigError
from k3sfleet.kube import hosts_from_inventory
from k3sfleet.settings import load_env_files
from k3sfleet.token import VAULT_KEY, save
from k3sfleet.vault import find_vault_file, resolve_password


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("token", help="keep the cluster token in the vault")
    actions = parser.add_subparsers(dest="token_command", metavar="ACTION")
    actions.required = True
    keep = actions.add_parser(
        "save",
        help=f"read the cluster token from a server and store it in the vault as {VAULT_KEY}",
    )
    keep.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    keep.add_argument("--server", default=None, help="server to read from (default: first)")
    keep.set_defaults(func=run_save)


def run_save(args: argparse.Namespace) -> int:
    project = Path(args.project_dir)
    inventory = project / args.inventory
    servers = [h for h in hosts_from_inventory(inventory) if h.role == "server"]
    if args.server:
        servers = [h for h in servers if h.name == args.server]
    if not servers:
        raise ConfigError(f"k3sfleet: no server {args.server or ''} in {inventory}")
    env = load_env_files(project, os.environ)
    vault = find_vault_file(project, env.get("K3SFLEET_VAULT_FILE"))
    password = resolve_password(args.vault_password_file, env, project)
    outcome = save(servers[0], vault, password)
    what = "stored in" if outcome == "stored" else "already in"
    print(f"k3sfleet: the cluster token of {servers[0].name} is {what} {vault} ({VAULT_KEY})",
          file=sys.stderr)  # fmt: skip
    return 0
