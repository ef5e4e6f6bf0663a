"""First contact with fresh servers: fetch their SSH host keys, show the fingerprints, record them.

k3sfleet checks host keys strictly (``k3sfleet.kube.ssh_client``, pyinfra's
``ssh_strict_host_key_checking=yes``), so a new VPS is refused until its keys are in the
known_hosts file k3sfleet uses (``K3SFLEET_KNOWN_HOSTS``). As ``ssh`` does on a first connection,
the keys are fetched over the address k3sfleet connects to, their fingerprints printed the way
``ssh-keygen -lf`` prints them (``256 SHA256:... vps-1 (ED25519)``) to compare with the provider's
console, and recorded only once confirmed. A host already recorded with another key is refused,
never overwritten (remove the old line with ``ssh-keygen -R HOST -f FILE`` if the server was
rebuilt).

Example::

    for scan in scan_host(HostInfo("vps-1", "203.0.113.5")):
        print(fingerprint(scan.key, "vps-1"))
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from k3sfleet.errors import K3sfleetError
from k3sfleet.kube import DEFAULT_TIMEOUT, HostInfo

# One key of each family, in paramiko's order of preference (paramiko/transport.py
# Transport._preferred_keys): recording each lets any negotiation find its key.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512")
# ssh-keygen's type names in its -l output (OpenSSH sshkey.c sshkey_type(): ED25519, ECDSA, RSA)
TYPE_NAMES = {"ssh-ed25519": "ED25519", "ecdsa-sha2-nistp256": "ECDSA", "ssh-rsa": "RSA"}


class HostKeyError(K3sfleetError):
    """A host's keys could not be fetched, or differ from the recorded ones."""


@dataclass(frozen=True)
class Scan:
    """What one host offered, and what the known_hosts file already says about it."""

    host: HostInfo
    keys: tuple[paramiko.PKey, ...]
    recorded: tuple[paramiko.PKey, ...]

    @property
    def entry(self) -> str:
        """The host's name in known_hosts: ``addr``, or ``[addr]:port`` off port 22."""
        return known_hosts_entry(self.host)

    @property
    def new(self) -> list[paramiko.PKey]:
        return [k for k in self.keys if k not in self.recorded]

    @property
    def changed(self) -> list[paramiko.PKey]:
        """Offered keys of a type already recorded with another value (a rebuilt server, or
        someone in between)."""
        types = {k.get_name(): k for k in self.recorded}
        return [k for k in self.keys if k.get_name() in types and types[k.get_name()] != k]


def known_hosts_entry(host: HostInfo) -> str:
    return host.hostname if host.port == 22 else f"[{host.hostname}]:{host.port}"


def fingerprint(key: paramiko.PKey, comment: str) -> str:
    """The line ``ssh-keygen -lf`` prints: bits, SHA256 of the key blob (base64, unpadded),
    comment, type."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    kind = TYPE_NAMES.get(key.get_name(), key.get_name().upper())
    return f"{key.get_bits()} SHA256:{digest} {comment} ({kind})"


def _fetch(host: HostInfo, key_type: str, timeout: float) -> paramiko.PKey | None:
    sock = socket.create_connection((host.hostname, host.port), timeout=timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.get_security_options().key_types = (key_type,)
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except paramiko.SSHException:
        return None  # the server has no key of this type
    finally:
        transport.close()


def scan_host(host: HostInfo, timeout: float = DEFAULT_TIMEOUT) -> Scan:
    """The host keys ``host`` offers (one per family it has) and those recorded for it."""
    keys: list[paramiko.PKey] = []
    try:
        for key_type in KEY_TYPES:
            key = _fetch(host, key_type, timeout)
            if key is not None:
                keys.append(key)
    except OSError as e:
        raise HostKeyError(f"{host.name} ({host.hostname}:{host.port}): {e}") from None
    if not keys:
        raise HostKeyError(f"{host.name} ({host.hostname}:{host.port}) offered no host key")
    return Scan(host, tuple(keys), tuple(recorded_keys(host)))


def known_hosts_file(host: HostInfo) -> Path:
    return Path(host.known_hosts or "~/.ssh/known_hosts").expanduser()


def recorded_keys(host: HostInfo) -> list[paramiko.PKey]:
    path = known_hosts_file(host)
    if not path.is_file():
        return []
    known = paramiko.HostKeys(str(path))
    entry = known.lookup(known_hosts_entry(host))
    return list(entry.values()) if entry else []


def record(scans: Sequence[Scan]) -> list[str]:
    """Append the new keys of ``scans`` to their known_hosts files (created 0600 in a 0700
    folder); returns the lines written. Refuses, writing nothing, if any key changed."""
    changed = [s for s in scans if s.changed]
    if changed:
        raise HostKeyError("\n".join(
            f"{s.host.name}: the host key of {s.entry} differs from the one in "
            f"{known_hosts_file(s.host)} (rebuilt server, or someone in between?); nothing "
            f"was recorded. If the server was rebuilt: ssh-keygen -R '{s.entry}' -f "
            f"{known_hosts_file(s.host)}, then run this again"
            for s in changed
        ))
    written = []
    for scan in scans:
        lines = [f"{scan.entry} {k.get_name()} {k.get_base64()}\n" for k in scan.new]
        if not lines:
            continue
        path = known_hosts_file(scan.host)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            text = path.read_text(encoding="utf-8") if path.stat().st_size else ""
            if text and not text.endswith("\n"):
                out.write("\n")
            out.writelines(lines)
        written += lines
    return written
