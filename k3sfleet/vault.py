"""Ansible Vault files: whole-file encrypted YAML and inline ``!vault`` values.

Uses the ``ansible-vault`` library (ansible-core's VaultLib), so files written by the
``ansible-vault`` CLI are read as they are, and the CLI reads what we write.

Example::

    password = resolve_password("~/.vault-pass", os.environ)
    data = load_vault(Path("vault.yml"), password)
    data["vault_ansible_hosts"]["vps-aws-1"]
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from k3sfleet.errors import K3sfleetError


class VaultError(K3sfleetError):
    """The vault could not be read: no password, a wrong password, or malformed content."""


def resolve_password(explicit_file: str | None, environ: Mapping[str, str]) -> bytes:
    """The vault password from ``explicit_file``, ``K3SFLEET_VAULT_PASSWORD_FILE`` or
    ``ANSIBLE_VAULT_PASSWORD_FILE``. An executable file is run and its output used, as Ansible does.
    """
    name = (
        explicit_file
        or environ.get("K3SFLEET_VAULT_PASSWORD_FILE")
        or environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    )
    if not name:
        raise VaultError(
            "the vault is encrypted but no password file is set "
            "(K3SFLEET_VAULT_PASSWORD_FILE, ANSIBLE_VAULT_PASSWORD_FILE or --vault-password-file)"
        )
    path = Path(name).expanduser()
    if not path.is_file():
        raise VaultError(f"vault password file {path} does not exist")
    if os.access(path, os.X_OK):
        run = subprocess.run([str(path)], capture_output=True, check=False)
        if run.returncode != 0:
            raise VaultError(f"vault password script {path} exited with {run.returncode}")
        secret = run.stdout.strip()
    else:
        secret = path.read_bytes().strip()
    if not secret:
        raise VaultError(f"vault password file {path} is empty")
    return secret


def _vault_lib(password: bytes) -> Any:
    from ansible_vault.parsing import AnsibleVaultLib

    return AnsibleVaultLib(password).vault


def _decrypt(lib: Any, text: str | bytes, path: Path) -> str:
    from ansible.errors import AnsibleError

    try:
        plain = lib.decrypt(text)
    except AnsibleError as e:
        message = str(e).splitlines()[0]
        if "Decryption failed" in message or "HMAC" in message:
            message = "wrong vault password (decryption failed)"
        raise VaultError(f"cannot decrypt {path}: {message}") from None
    return plain.decode("utf-8") if isinstance(plain, bytes) else str(plain)


def is_encrypted(text: str | bytes) -> bool:
    """Whether ``text`` is a whole-file vault (``$ANSIBLE_VAULT;1.1;AES256`` header)."""
    head = text[:14] if isinstance(text, str) else text[:14].decode("ascii", "replace")
    return head.startswith("$ANSIBLE_VAULT")


def load_vault(path: Path, password: bytes | None) -> dict[str, Any]:
    """Read ``path``: a whole-file vault, or YAML with inline ``!vault`` values."""
    raw = path.read_text(encoding="utf-8")
    lib = _vault_lib(password) if password else None

    def need_lib() -> Any:
        if lib is None:
            raise VaultError(f"{path} holds vaulted values but no vault password is set")
        return lib

    if is_encrypted(raw):
        raw = _decrypt(need_lib(), raw, path)

    class Loader(yaml.SafeLoader):
        pass

    def construct_vault(loader: yaml.SafeLoader, node: yaml.Node) -> str:
        return _decrypt(need_lib(), str(loader.construct_scalar(node)), path)  # type: ignore[arg-type]

    Loader.add_constructor("!vault", construct_vault)
    try:
        data = yaml.load(raw, Loader=Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        raise VaultError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VaultError(f"{path} must hold a mapping of keys, not {type(data).__name__}")
    return data
