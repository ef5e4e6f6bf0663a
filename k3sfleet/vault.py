"""Ansible Vault files: whole-file encrypted YAML and inline ``!vault`` values, read and written.

Uses the ``ansible-vault`` library (ansible-core's VaultLib), so files written by the
``ansible-vault`` CLI are read as they are, and the CLI reads what we write. We write format 1.1
(``$ANSIBLE_VAULT;1.1;AES256``), or 1.2 with the vault-id label the file already had.

Example::

    password = resolve_password("~/.vault-pass", os.environ)
    data = load_vault(Path("vault.yml"), password)
    data["vault_ansible_hosts"]["vps-aws-1"]
    set_value(Path("vault.yml"), "vault_tailscale_auth_key", "tskey-...", password)
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from k3sfleet.errors import K3sfleetError

# Where the Ansible repository keeps its vault; used when the project has no vault.yml.
ANSIBLE_VAULT_FILE = "ansible/inventory/group_vars/all/vault.yml"
VAULT_TAG = "!vault"


class VaultError(K3sfleetError):
    """The vault could not be read: no password, a wrong password, or malformed content."""

    exit_code = 3


def find_vault_file(project: Path, configured: str | None) -> Path:
    """The vault file of ``project``: ``configured`` (K3SFLEET_VAULT_FILE) if set, else
    ``vault.yml``, else the Ansible repository's ``ansible/inventory/group_vars/all/vault.yml``
    when only that one exists."""
    if configured:
        return project / Path(configured).expanduser()
    default = project / "vault.yml"
    legacy = project / ANSIBLE_VAULT_FILE
    if not default.exists() and legacy.exists():
        return legacy
    return default


def needs_password(path: Path) -> bool:
    """Whether reading ``path`` needs the vault password (whole-file or inline ``!vault``)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return is_encrypted(text) or VAULT_TAG in text


_ASKED: list[bytes] = []  # the password typed at --ask-vault-pass, for this command only


def use_password(password: bytes | None) -> None:
    """Use ``password`` (typed at ``--ask-vault-pass``) instead of any password file, until
    called with ``None``."""
    _ASKED.clear()
    if password is not None:
        _ASKED.append(password)


def resolve_password(
    explicit_file: str | None, environ: Mapping[str, str], base: Path | None = None
) -> bytes:
    """The vault password typed at ``--ask-vault-pass``, else from ``explicit_file``,
    ``K3SFLEET_VAULT_PASSWORD_FILE`` or ``ANSIBLE_VAULT_PASSWORD_FILE``. An executable file is
    run and its output used, as Ansible does (also by a relative name such as ``pw.sh``). A
    relative name that is not found from the current folder is looked up under ``base`` (the
    project, whose ``.envrc`` may name it).
    """
    if _ASKED:
        return _ASKED[0]
    name = (
        explicit_file
        or environ.get("K3SFLEET_VAULT_PASSWORD_FILE")
        or environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    )
    if not name:
        raise VaultError(
            "the vault is encrypted but no password file is set "
            "(K3SFLEET_VAULT_PASSWORD_FILE, ANSIBLE_VAULT_PASSWORD_FILE, --vault-password-file "
            "or --ask-vault-pass)"
        )
    path = Path(name).expanduser()
    if not path.is_absolute() and not path.exists() and base is not None:
        path = base / path
    if not path.is_file():
        raise VaultError(f"vault password file {path} does not exist")
    if os.access(path, os.X_OK):
        try:
            # absolute: a bare relative name ("pw.sh") would be looked up on $PATH
            run = subprocess.run(
                [str(path.absolute())], capture_output=True, check=False, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise VaultError(f"vault password script {path} could not run: {e}") from None
        if run.returncode != 0:
            raise VaultError(f"vault password script {path} exited with {run.returncode}")
        secret = run.stdout.strip()
    else:
        secret = path.read_bytes().strip()
    if not secret:
        raise VaultError(f"vault password file {path} is empty")
    return secret


def _import_vault_lib() -> Any:
    """Import ansible-vault's ``AnsibleVaultLib``.

    ansible-core (2.19) probes ``socket.getaddrinfo`` when imported; under the pyinfra CLI,
    which monkey-patches sockets with gevent, that probe fails in a gevent worker and prints a
    stray traceback. The import therefore runs with the unpatched ``getaddrinfo``.
    """
    original = None
    try:
        from gevent import monkey  # in-function: only to see whether pyinfra patched

        if monkey.is_module_patched("socket"):
            original = monkey.get_original("socket", "getaddrinfo")
    except ImportError:  # pragma: no cover - gevent comes with pyinfra
        pass
    patched = socket.getaddrinfo
    if original is not None:
        socket.getaddrinfo = original
    try:
        # in-function: ansible-core's import must run with the unpatched getaddrinfo (above)
        import ansible.constants
        import ansible.parsing.vault  # noqa: F401 - imported here, used by AnsibleVaultLib
        from ansible_vault.parsing import AnsibleVaultLib
    finally:
        socket.getaddrinfo = patched
    return AnsibleVaultLib


def _vault_lib(password: bytes) -> Any:
    return _import_vault_lib()(password).vault


def _decrypt(lib: Any, text: str | bytes, path: Path) -> str:
    from ansible.errors import AnsibleError  # in-function: after _import_vault_lib's import

    try:
        plain = lib.decrypt(text)
    except AnsibleError as e:
        message = str(e).splitlines()[0]
        if "Decryption failed" in message or "HMAC" in message:
            message = "wrong vault password (decryption failed)"
        else:
            message = f"malformed vault data ({message})"
        raise VaultError(f"cannot decrypt {path}: {message}") from None
    return plain.decode("utf-8") if isinstance(plain, bytes) else str(plain)


def encrypt(plaintext: str, password: bytes, vault_id: str | None = None) -> str:
    """``plaintext`` as vault text: format 1.1, or 1.2 labelled ``vault_id`` when given."""
    lib = _vault_lib(password)
    out = lib.encrypt(plaintext, vault_id=vault_id) if vault_id else lib.encrypt(plaintext)
    return out.decode("ascii") if isinstance(out, bytes) else str(out)


def is_encrypted(text: str | bytes) -> bool:
    """Whether ``text`` is a whole-file vault (``$ANSIBLE_VAULT;1.1;AES256`` header)."""
    head = text[:14] if isinstance(text, str) else text[:14].decode("ascii", "replace")
    return head.startswith("$ANSIBLE_VAULT")


def vault_id_of(text: str) -> str | None:
    """The vault-id label of a format 1.2 vault text (``$ANSIBLE_VAULT;1.2;AES256;prod``)."""
    header = text.lstrip().split("\n", 1)[0].strip().split(";")
    if len(header) >= 4 and header[1] == "1.2" and header[3]:
        return header[3]
    return None


class VaultedStr(str):
    """A value read from an inline ``!vault`` scalar; remembers its ciphertext so an unchanged
    value is written back byte for byte (no diff noise from fresh salts)."""

    ciphertext: str

    def __new__(cls, value: str, ciphertext: str) -> VaultedStr:
        obj = super().__new__(cls, value)
        obj.ciphertext = ciphertext
        return obj


@dataclass
class VaultFile:
    """A vault file as read: ``kind`` is ``file`` (whole-file vault), ``inline`` (YAML with
    ``!vault`` values), ``plain`` (YAML without any) or ``absent``."""

    path: Path
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    plaintext: str = ""  # the decrypted text of a whole-file vault, or the raw YAML otherwise
    vault_id: str | None = None
    mode: int = 0o600

    def editable_text(self) -> str:
        """What the user edits: the decrypted text (inline values shown decrypted)."""
        if self.kind == "inline":
            return _dump(_plain(self.data))
        return self.plaintext


def _loader(path: Path, lib: Any | None) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def construct_vault(loader: yaml.SafeLoader, node: yaml.Node) -> str:
        if lib is None:
            raise VaultError(f"{path} holds !vault values but no vault password is set")
        ciphertext = str(loader.construct_scalar(node))  # type: ignore[arg-type]
        return VaultedStr(_decrypt(lib, ciphertext, path), ciphertext)

    Loader.add_constructor(VAULT_TAG, construct_vault)
    return Loader


def _parse(text: str, path: Path, lib: Any | None) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_loader(path, lib))  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise VaultError(f"{path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VaultError(f"{path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def read_vault_file(path: Path, password: bytes | None) -> VaultFile:
    """Read ``path`` (which may not exist yet) into a ``VaultFile``."""
    if not path.exists():
        return VaultFile(path, "absent")
    raw = path.read_text(encoding="utf-8")
    mode = path.stat().st_mode & 0o777
    lib = _vault_lib(password) if password else None
    if is_encrypted(raw):
        if lib is None:
            raise VaultError(f"{path} is encrypted but no vault password is set")
        plain = _decrypt(lib, raw, path)
        return VaultFile(path, "file", _parse(plain, path, lib), plain, vault_id_of(raw), mode)
    data = _parse(raw, path, lib)
    kind = "inline" if _has_vaulted(data) else "plain"
    return VaultFile(path, kind, data, raw, _first_vault_id(data), mode)


def load_vault(path: Path, password: bytes | None) -> dict[str, Any]:
    """Read ``path``: a whole-file vault, or YAML with inline ``!vault`` values."""
    return read_vault_file(path, password).data


def _has_vaulted(value: Any) -> bool:
    if isinstance(value, VaultedStr):
        return True
    if isinstance(value, dict):
        return any(_has_vaulted(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_vaulted(v) for v in value)
    return False


def _first_vault_id(value: Any) -> str | None:
    if isinstance(value, VaultedStr):
        return vault_id_of(value.ciphertext)
    children: Any = value.values() if isinstance(value, dict) else value
    if not isinstance(value, dict | list):
        return None
    for child in children:
        found = _first_vault_id(child)
        if found:
            return found
    return None


def _plain(value: Any) -> Any:
    """``value`` with every ``VaultedStr`` turned back into a plain ``str`` (for dumping)."""
    if isinstance(value, VaultedStr):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Vaulted:
    """A leaf to be written as ``!vault |`` with this ciphertext."""

    def __init__(self, ciphertext: str) -> None:
        self.ciphertext = ciphertext


class _Dumper(yaml.SafeDumper):
    pass


def _represent_vaulted(dumper: yaml.SafeDumper, value: _Vaulted) -> yaml.Node:
    return dumper.represent_scalar(VAULT_TAG, value.ciphertext.strip() + "\n", style="|")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_str(str(value))


_Dumper.add_representer(_Vaulted, _represent_vaulted)
_Dumper.add_representer(VaultedStr, _represent_str)


def _dump(data: Any) -> str:
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def _revault(new: Any, old: Any, password: bytes, vault_id: str | None) -> Any:
    """Prepare ``new`` for an inline vault file whose previous content was ``old``.

    A string leaf stays plain only where ``old`` had a plain leaf at the same place; every other
    string leaf is vaulted, reusing the old ciphertext when the value did not change.
    """
    if isinstance(new, dict):
        old_map = old if isinstance(old, dict) else {}
        return {k: _revault(v, old_map.get(k), password, vault_id) for k, v in new.items()}
    if isinstance(new, list):
        old_list = old if isinstance(old, list) else []
        return [
            _revault(v, old_list[i] if i < len(old_list) else None, password, vault_id)
            for i, v in enumerate(new)
        ]
    if not isinstance(new, str):
        return new
    if isinstance(old, VaultedStr):
        if str(old) == str(new):
            return _Vaulted(old.ciphertext)
        return _Vaulted(encrypt(str(new), password, vault_id))
    if old is not None and not isinstance(old, dict | list):
        return str(new)
    return _Vaulted(encrypt(str(new), password, vault_id))


def render(vf: VaultFile, data: dict[str, Any], password: bytes) -> str:
    """The file text holding ``data`` in the same form as ``vf`` (whole-file or inline)."""
    if vf.kind in ("inline", "plain"):
        return _dump(_revault(data, vf.data, password, vf.vault_id))
    return encrypt(_dump(_plain(data)), password, vf.vault_id)


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_edited(vf: VaultFile, text: str, password: bytes) -> bool:
    """Store the user's edited ``text`` of ``vf``; return whether the file changed.

    A whole-file vault keeps the text as written (comments included), re-encrypted with the
    same vault id; an inline file keeps its values inline. Bad YAML raises ``VaultError`` and
    leaves the file as it was.
    """
    data = _parse(text, vf.path, None)
    if vf.kind in ("inline", "plain"):
        if data == _plain(vf.data):
            return False
        write_atomic(vf.path, render(vf, data, password), vf.mode)
        return True
    if text == vf.plaintext or (vf.kind == "absent" and not text.strip()):
        return False
    write_atomic(vf.path, encrypt(text, password, vf.vault_id), vf.mode)
    return True


def _replace_top_level(text: str, key: str, block: str) -> str | None:
    """``text`` with the top-level entry ``key:`` replaced by ``block`` (or appended), keeping
    every other line and comment; ``None`` when the layout is not simple enough."""
    lines = text.splitlines(keepends=True)
    pattern = re.compile(rf"^{re.escape(key)}\s*:(\s|$)")
    starts = [i for i, line in enumerate(lines) if pattern.match(line)]
    if len(starts) > 1:
        return None
    if not starts:  # append (set_value checks that the result parses to what it wants)
        prefix = text if not text or text.endswith("\n") else text + "\n"
        return prefix + block
    start = starts[0]
    end = start + 1
    while end < len(lines) and (lines[end][:1] in (" ", "\t") or not lines[end].strip()):
        end += 1
    while end - 1 > start and not lines[end - 1].strip():
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def set_value(path: Path, key: str, value: str, password: bytes) -> bool:
    """Set the top-level ``key`` of the vault at ``path`` to ``value``; create the file (a
    whole-file vault, format 1.1, mode 0600) if absent. In an inline file the value is written
    as an inline ``!vault``. Comments and other entries are kept. Returns whether it changed.
    """
    vf = read_vault_file(path, password)
    old = vf.data.get(key)
    if old == value and (vf.kind in ("file", "absent") or isinstance(old, VaultedStr)):
        return False
    wanted = dict(_plain(vf.data))
    wanted[key] = value
    if vf.kind in ("inline", "plain"):
        if isinstance(old, VaultedStr) and old == value:
            leaf: Any = _Vaulted(old.ciphertext)
        else:
            leaf = _Vaulted(encrypt(value, password, vf.vault_id))
    else:
        leaf = value
    block = _dump({key: leaf})
    new_text = _replace_top_level(vf.plaintext, key, block)
    if new_text is not None:
        try:
            check: dict[str, Any] | None = _parse(new_text, path, _vault_lib(password))
        except VaultError:
            check = None
        if check is None or _plain(check) != wanted:
            new_text = None
    if new_text is None:  # an unusual layout: write the data back in canonical form
        if vf.kind in ("inline", "plain"):
            new_text = _dump({**_revault(vf.data, vf.data, password, vf.vault_id), key: leaf})
        else:
            new_text = _dump(wanted)
    if vf.kind in ("file", "absent"):
        new_text = encrypt(new_text, password, vf.vault_id)
    write_atomic(path, new_text, vf.mode)
    return True
