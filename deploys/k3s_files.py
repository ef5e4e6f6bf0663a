"""Files K3s reads, written the way secrets need: root-owned, compared by sha256, never shown.

* ``private_file`` writes a 0600 root file (config.yaml, the vpn-auth file) without its content
  ever being on a command line, in a world-readable temp file, or in pyinfra's output (no diff
  is printed, unlike ``files.put`` with ``--diff``).
* ``managed_file`` writes a non-secret file (a systemd unit) only when its sha256 differs.

Both take the sha256 the caller already read (``K3sState``) to save a round trip.

Example::

    private_file(name="vpn-auth", path="/etc/rancher/k3s/vpn-auth", content=Secret("..."))
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Generator
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import Sha256File
from pyinfra.operations import files

from k3sfleet.deploys.preread import UNSET
from k3sfleet.secret import Secret, reveal


def sha256_text(text: str) -> str:
    """The hex sha256 of ``text`` (UTF-8), as ``sha256sum`` prints it."""
    return hashlib.sha256(text.encode()).hexdigest()


@operation()
def private_file(
    path: str,
    content: Secret | str,
    current_sha256: str | None = UNSET,
    keep_previous: bool = False,
) -> Generator[Any, None, None]:
    """A root-owned 0600 file with ``content``, written without exposing it.

    The upload goes to a temp file created 0600 for the SSH user, is copied into a 0600
    ``<path>.k3sfleet-new`` and renamed over ``path``; with ``keep_previous`` the old file
    becomes ``<path>.previous``.

    + path: destination
    + content: the text (a ``Secret`` stays masked in every output)
    + current_sha256: sha256 of the file now if the caller read it (``K3sState``); read with
      ``sha256sum`` otherwise
    + keep_previous: keep the replaced file as ``<path>.previous``
    """
    text = reveal(content) or ""
    want = sha256_text(text)
    have = host.get_fact(Sha256File, path=path) if current_sha256 is UNSET else current_sha256
    if have == want:
        host.noop(f"{path} is up to date")
        return
    staged = f"{path}.k3sfleet-new"
    upload = host.get_temp_filename(f"k3sfleet-private-{path}")
    directory = path.rpartition("/")[0] or "/"
    yield StringCommand("mkdir", "-p", QuoteString(directory))
    yield StringCommand(
        "install", "-m", "600", "-o", '"${SUDO_USER:-$(id -un)}"', "/dev/null", QuoteString(upload)
    )
    yield StringCommand("install", "-m", "600", "-o", "root", "/dev/null", QuoteString(staged))
    yield FileUploadCommand(io.StringIO(text), staged, remote_temp_filename=upload)
    yield StringCommand("rm", "-f", QuoteString(upload))
    if keep_previous and have:
        yield StringCommand("cp", "-p", QuoteString(path), QuoteString(f"{path}.previous"))
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(path))


@operation()
def managed_file(
    path: str, text: str, current_sha256: str | None = UNSET, mode: str = "644"
) -> Generator[Any, None, None]:
    """A root-owned, non-secret file (a systemd unit) with ``text``; nothing done when equal.

    + path: destination
    + text: the content
    + current_sha256: sha256 of the file now if the caller read it; read otherwise
    + mode: file mode
    """
    have = host.get_fact(Sha256File, path=path) if current_sha256 is UNSET else current_sha256
    if have == sha256_text(text):
        host.noop(f"{path} is up to date")
        return
    yield from files.put._inner(  # type: ignore[attr-defined]
        src=io.StringIO(text), dest=path, user="root", group="root", mode=mode
    )
