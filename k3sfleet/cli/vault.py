"""``k3sfleet vault view [FILE] | edit [FILE] | set KEY``: the project's Ansible Vault (or FILE),
like ``ansible-vault``.

``edit`` opens the decrypted text in ``$VISUAL`` / ``$EDITOR`` (a 0600 file in a private folder,
removed afterwards) and re-encrypts it; a whole-file vault keeps its vault id, an inline
``!vault`` file stays inline. ``set`` reads the value from stdin, never from the command line, and
creates the vault (format 1.1, mode 0600) when it does not exist yet.

Example::

    k3sfleet vault view
    k3sfleet vault view group_vars/all/vault.yml --ask-vault-pass
    printf '%s' "$KEY" | k3sfleet vault set vault_tailscale_auth_key
    EDITOR=nano k3sfleet vault edit
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from k3sfleet.settings import load_env_files
from k3sfleet.vault import (
    VaultError,
    VaultFile,
    find_vault_file,
    needs_password,
    read_vault_file,
    resolve_password,
    save_edited,
    set_value,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("vault", help="view, edit or set values of the Ansible Vault")
    actions = parser.add_subparsers(dest="vault_command", metavar="ACTION")
    actions.required = True
    view = actions.add_parser("view", help="print the decrypted vault (or FILE)")
    view.add_argument("file", nargs="?", default=None, help="a vault file (default: the project's)")
    view.set_defaults(func=run_view)
    edit = actions.add_parser("edit", help="edit the decrypted vault in $EDITOR, re-encrypt it")
    edit.add_argument("file", nargs="?", default=None, help="a vault file (default: the project's)")
    edit.set_defaults(func=run_edit)
    put = actions.add_parser("set", help="set KEY to the value read from stdin")
    put.add_argument("key", help="top-level key, for example vault_tailscale_auth_key")
    put.set_defaults(func=run_set)


def _vault_path(args: argparse.Namespace) -> tuple[Path, Mapping[str, str]]:
    project = Path(args.project_dir)
    env = load_env_files(project, os.environ)
    if getattr(args, "file", None):  # as `ansible-vault view FILE`: relative to the current folder
        return Path(args.file), env
    return find_vault_file(project, env.get("K3SFLEET_VAULT_FILE")), env


def _vault(args: argparse.Namespace) -> tuple[Path, bytes]:
    path, env = _vault_path(args)
    return path, resolve_password(args.vault_password_file, env, Path(args.project_dir))


def run_view(args: argparse.Namespace) -> int:
    path, env = _vault_path(args)
    password = None
    if path.exists() and needs_password(path):  # a plain YAML file needs no password
        password = resolve_password(args.vault_password_file, env, Path(args.project_dir))
    vf = read_vault_file(path, password)
    if vf.kind == "absent":
        raise VaultError(f"{path} does not exist (create it with `k3sfleet vault set KEY`)")
    sys.stdout.write(vf.editable_text())
    return 0


def _editor() -> list[str]:
    for name in ("VISUAL", "EDITOR"):
        if os.environ.get(name):
            return shlex.split(os.environ[name])
    for fallback in ("sensible-editor", "editor", "vi"):
        if shutil.which(fallback):
            return [fallback]
    raise VaultError("no editor: set $EDITOR")


def _edit_text(text: str, suffix: str) -> str:
    """Let the user edit ``text`` in a 0600 file inside a private 0700 folder (tmpfs if any)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    folder = tempfile.mkdtemp(prefix="k3sfleet-vault-", dir=base)
    try:
        path = Path(folder) / f"vault{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        run = subprocess.run([*_editor(), str(path)], check=False)
        if run.returncode != 0:
            raise VaultError(f"the editor exited with {run.returncode}; the vault is unchanged")
        return path.read_text(encoding="utf-8")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_edit(args: argparse.Namespace) -> int:
    path, password = _vault(args)
    vf = read_vault_file(path, password)
    if vf.kind == "absent":
        vf = VaultFile(path, "absent")
    text = vf.editable_text()
    while True:
        text = _edit_text(text, path.suffix or ".yml")
        try:
            changed = save_edited(vf, text, password)
        except VaultError as e:
            if not sys.stdin.isatty():
                raise
            print(f"k3sfleet: {e}", file=sys.stderr)
            if input("Edit again? [Y/n] ").strip().lower() in ("n", "no"):
                raise VaultError(f"{path} is unchanged") from None
            continue
        print(f"k3sfleet: {path} {'re-encrypted' if changed else 'unchanged'}", file=sys.stderr)
        return 0


def run_set(args: argparse.Namespace) -> int:
    path, password = _vault(args)
    if sys.stdin.isatty():
        value = getpass.getpass(f"{args.key}: ")
    else:
        value = sys.stdin.read()
        if value.endswith("\n"):
            value = value[:-1]
            if value.endswith("\r"):
                value = value[:-1]
    if not value:
        raise VaultError(f"no value for {args.key} on stdin")
    changed = set_value(path, args.key, value, password)
    print(f"k3sfleet: {args.key} {'set in' if changed else 'unchanged in'} {path}", file=sys.stderr)
    return 0
