"""``k3sfleet db``: per-application PostgreSQL databases (``appDatabases`` in helm/apps).

``generate-passwords`` gives each declared app without a password a new 32-character one in the
vault (``vault_app_db_passwords``); existing passwords never change, so it is safe to re-run.
``list`` shows the declared apps, their namespaces and whether each has a password (never the
password). ``pyinfra inventory.py deploys/databases.py`` then writes their Secrets, from which
the CloudNativePG operator makes the roles and databases the apps chart declares.

Example::

    k3sfleet db generate-passwords
    k3sfleet db list
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from k3sfleet.databases import VAULT_KEY, generate_passwords, load_apps
from k3sfleet.settings import load_env_files
from k3sfleet.vault import find_vault_file, read_vault_file, resolve_password


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("db", help="per-application PostgreSQL databases")
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION")
    actions.required = True
    gen = actions.add_parser(
        "generate-passwords", help="add a vault password for every new app (existing kept)"
    )
    gen.set_defaults(func=run_generate)
    listing = actions.add_parser("list", help="the declared apps, namespaces, password present")
    listing.set_defaults(func=run_list)


def _context(args: argparse.Namespace) -> tuple[Path, Path, bytes, str]:
    project = Path(args.project_dir)
    env = load_env_files(project, os.environ)
    vault_path = find_vault_file(project, env.get("K3SFLEET_VAULT_FILE"))
    password = resolve_password(args.vault_password_file, env)
    apps_path = env.get("GITOPS_APPS_PATH") or "helm/apps"
    return project, vault_path, password, apps_path


def run_generate(args: argparse.Namespace) -> int:
    project, vault_path, password, apps_path = _context(args)
    added, kept = generate_passwords(project, vault_path, password, apps_path)
    for name in added:
        print(f"{name}: new password stored in {vault_path} ({VAULT_KEY}.{name})")
    for name in kept:
        print(f"{name}: password kept")
    if not added:
        print("nothing to do: every app already has a password")
    return 0


def run_list(args: argparse.Namespace) -> int:
    project, vault_path, password, apps_path = _context(args)
    stored = read_vault_file(vault_path, password).data.get(VAULT_KEY) or {}
    for app in load_apps(project, apps_path):
        has = "yes" if isinstance(stored, dict) and stored.get(app.name) else "NO"
        print(
            f"{app.name:24} namespace={app.namespace:16} database={app.database:20} "
            f"user={app.username:20} password={has}"
        )
    return 0
