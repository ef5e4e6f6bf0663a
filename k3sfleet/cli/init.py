"""``k3sfleet init [DIR]``: start a project in an empty folder (see ``k3sfleet.project``).

Writes ``inventory.py``, ``.envrc.example``, ``.gitignore``, the charts under ``helm/``, the
Secrets list ``deploys/secrets.py`` and ``vault.yml``, encrypted with the password from
``--vault-password-file`` or typed at ``--ask-vault-pass`` (asked twice when neither is given
on a terminal), as ``ansible-vault create`` does. A password file is recorded in ``.envrc``.

Example::

    k3sfleet init my-cluster --vault-password-file ~/.vault-pass
    cd my-cluster && k3sfleet check bootstrap
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from k3sfleet.project import init
from k3sfleet.vault import VaultError, resolve_password


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("init", help="start a project: inventory, vault, charts, settings")
    parser.add_argument("dir", nargs="?", default=None, help="the folder (default: --project-dir)")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    parser.set_defaults(func=run)


def _password(args: argparse.Namespace) -> bytes:
    if args.vault_password_file or args.ask_vault_pass:
        return resolve_password(args.vault_password_file, {}, None)
    if not sys.stdin.isatty():
        raise VaultError(
            "k3sfleet init encrypts the new vault: give --vault-password-file FILE "
            "or --ask-vault-pass"
        )
    first = getpass.getpass("New vault password: ")
    if not first or first != getpass.getpass("Confirm new vault password: "):
        raise VaultError("the passwords are empty or do not match; nothing was written")
    return first.encode()


def _record_password_file(project: Path, given: str) -> Path:
    path = Path(given).expanduser().absolute()
    try:
        shown = str(path.relative_to(project.absolute()))
    except ValueError:
        shown = str(path)
    envrc = project / ".envrc"
    line = f'export K3SFLEET_VAULT_PASSWORD_FILE="{shown}"\n'
    text = envrc.read_text(encoding="utf-8") if envrc.exists() else ""
    if line not in text:
        envrc.write_text(text + line, encoding="utf-8")
    return envrc


def run(args: argparse.Namespace) -> int:
    project = Path(args.dir if args.dir is not None else args.project_dir)
    password = _password(args)
    written = init(project, password, force=args.force)
    if args.vault_password_file:
        written.append(_record_password_file(project, args.vault_password_file))
    for path in written:
        print(f"k3sfleet: wrote {os.path.relpath(path)}")
    print(
        f"next: edit {os.path.relpath(project / 'inventory.py')}, `k3sfleet vault edit` "
        "(addresses, users, keys), then `k3sfleet check bootstrap`, `k3sfleet hostkeys` and "
        "`k3sfleet deploy bootstrap`",
    )
    return 0
