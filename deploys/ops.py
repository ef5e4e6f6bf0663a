"""Operations that decide from the host's read model (``deploys.readmodel``), self-contained.

Each looks the node up in its snapshot, reports "no change" when the node is as wanted, and
otherwise yields its commands and ``record``-s what they change, so the snapshot stays current
without a re-read. pyinfra's own operations read one or two facts each, every run; these cost
nothing on a converged node beyond the one ``HostSnapshot`` read.

* ``file``: the one file primitive: content or template, mode, owner, ``Secret`` content
  (masked, never on a command line, 0600), a validate command, keep the previous file, commands
  to run after a change; ``present=False`` removes it.
* ``link``, ``download``: a symbolic link; a file fetched when missing.
* ``packages``, ``service``, ``hostname``, ``line``, ``apt_update``.

Example::

    file(name="journald size cap", path="/etc/systemd/journald.conf.d/00-k3sfleet.conf",
         template="common/journald.conf.j2", context={"max_use": "500M"},
         then=["systemctl restart systemd-journald.service"])
    file(name="vpn-auth", path="/etc/rancher/k3s/vpn-auth", content=Secret("..."))
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.apt import noninteractive_apt
from pyinfra.facts.files import FileContents
from pyinfra.operations import apt, files, server
from pyinfra.operations.util.files import generate_color_diff
from pyinfra.operations.util.packaging import ensure_packages

from k3sfleet.deploys.readmodel import file_state, no_change, record, section, set_file, unit_state
from k3sfleet.facts.snapshot import FileState, SnapshotData
from k3sfleet.secret import Secret, reveal
from k3sfleet.templating import render

#: What the login user may own while an upload is staged with sudo (``$SUDO_USER``, the user
#: sudo ran for; without sudo the login user is the one running the command).
LOGIN_USER = '"${SUDO_USER:-$(id -un)}"'


def sha256_text(text: str) -> str:
    """The hex sha256 of ``text`` (UTF-8), as ``sha256sum`` prints it."""
    return hashlib.sha256(text.encode()).hexdigest()


def _same_mode(have: str, want: str) -> bool:
    return have.lstrip("0") == want.lstrip("0")


def _show_diff(path: str, content: str) -> None:
    current = host.get_fact(FileContents, path=path) or []
    host.log(f"Will modify {path}", logger.info)
    for line in generate_color_diff([f"{x}\n" for x in current], content.splitlines(True)):
        logger.info("  %s", line)


def _reject(validate: Sequence[str], candidate: str, path: str) -> StringCommand:
    """``validate`` run on ``candidate``; on refusal the candidate goes and the op fails."""
    return StringCommand(
        *[QuoteString(a) for a in validate], QuoteString(candidate), "||",
        "{", "rm", "-f", QuoteString(candidate), ";",
        "echo", QuoteString(f"k3sfleet: {validate[0]} rejected the new {path}; "
                            "the old file was kept"), ">&2", ";", "exit", "1", ";", "}",
    )


@operation()
def file(
    path: str,
    content: str | Secret | None = None,
    template: str | None = None,
    context: Mapping[str, Any] | None = None,
    present: bool = True,
    mode: str = "0644",
    user: str = "root",
    group: str = "root",
    validate: Sequence[str] | Callable[[str], StringCommand] = (),
    then: Sequence[str | StringCommand] = (),
    keep_previous: bool = False,
    staging: str | None = None,
) -> Generator[Any, None, None]:
    """The file ``path`` holds exactly ``content`` (or ``template`` rendered with ``context``),
    with ``mode`` and ``user``:``group``; on a change the ``then`` commands run after it.

    The new text goes to a staging file (``<path>.k3sfleet-new`` or ``staging``), is validated
    there (``validate``: an argv prefix the staging path is appended to, or a function giving
    the whole command for it) and replaces ``path`` in one ``mv``; with ``keep_previous`` the old
    file becomes ``<path>.previous``. A ``Secret`` content is written 0600: uploaded into a file
    created 0600 for the login user, never on a command line, never in a diff. Only the mode or
    owner wrong: fixed without rewriting. ``present=False``: no file at ``path``.

    Example::

        file(name="admins' sudo", path="/etc/sudoers.d/90-admins", mode="0440",
             content="alice ALL=(ALL:ALL) NOPASSWD: ALL\\n", validate=["visudo", "-cf"])
    """
    current = file_state(path)
    if not present:
        yield from _absent(path, current)
        return
    secret = isinstance(content, Secret)
    if secret:
        mode = "0600"
    text = render(template, **(context or {})) if template else reveal(content) or ""
    new: FileState = {"type": "file", "sha256": sha256_text(text), "user": user, "group": group,
                      "mode": mode.lstrip("0") or "0", "link_target": None}
    is_file = current is not None and current["type"] == "file"
    if current is not None and is_file and current["sha256"] == new["sha256"]:
        yield from _fix_in_place(path, current, mode, user, group, new)
        return
    record(set_file(path, new))
    if not secret and host.state.config.DIFF:
        _show_diff(path, text)
    staged = staging or f"{path}.k3sfleet-new"
    # the directory made when the file is new: before staging there, else before the move
    mkdir = StringCommand("mkdir", "-p", QuoteString(posixpath.dirname(path) or "/"))
    staged_beside = posixpath.dirname(staged) == posixpath.dirname(path)
    if secret:
        yield from _write_secret(text, staged)
    else:
        if not is_file and staged_beside:
            yield mkdir
        yield from _stage(text, staged, mode, user, group)
    if validate:
        yield validate(staged) if callable(validate) else _reject(validate, staged, path)
    if not is_file and not staged_beside:
        yield mkdir
    if keep_previous and is_file:
        yield StringCommand("cp", "-p", QuoteString(path), QuoteString(f"{path}.previous"))
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(path))
    for command in then:
        yield command if isinstance(command, StringCommand) else StringCommand(command)


def _absent(path: str, current: FileState | None) -> Generator[Any, None, None]:
    """No file at ``path`` (``file(present=False)``)."""
    if current is None:
        host.noop(f"file {path} does not exist")
        return
    record(set_file(path, None))
    yield StringCommand("rm", "-f", QuoteString(path))


def _fix_in_place(
    path: str, current: FileState, mode: str, user: str, group: str, new: FileState
) -> Generator[Any, None, None]:
    """The content is right: only a wrong mode or owner is fixed, without rewriting."""
    fixes = []
    if not _same_mode(str(current["mode"]), mode):
        fixes.append(StringCommand("chmod", mode, QuoteString(path)))
    if (current["user"], current["group"]) != (user, group):
        fixes.append(StringCommand("chown", f"{user}:{group}", QuoteString(path)))
    if not fixes:
        host.noop(f"{path} is up to date")
        return
    record(set_file(path, new))
    yield from fixes


def _stage(text: str, staged: str, mode: str, user: str, group: str) -> Generator[Any, None, None]:
    """``text`` uploaded to ``staged`` with its final owner and mode (not a secret)."""
    yield FileUploadCommand(
        io.StringIO(text), staged, remote_temp_filename=host.get_temp_filename(staged)
    )
    yield StringCommand("chown", f"{user}:{group}", QuoteString(staged), "&&",
                        "chmod", mode, QuoteString(staged))


def _write_secret(text: str, staged: str) -> Generator[Any, None, None]:
    """``text`` into a root 0600 ``staged`` file: through a 0600 upload file of the login user
    (with sudo pyinfra uploads as that user, then copies), never on a command line."""
    upload = host.get_temp_filename(f"k3sfleet-private-{staged}")
    yield StringCommand("mkdir", "-p", QuoteString(posixpath.dirname(staged) or "/"))
    yield StringCommand("install", "-m", "600", "-o", LOGIN_USER, "/dev/null", QuoteString(upload))
    yield StringCommand("install", "-m", "600", "-o", "root", "/dev/null", QuoteString(staged))
    yield FileUploadCommand(io.StringIO(text), staged, remote_temp_filename=upload)
    yield StringCommand("rm", "-f", QuoteString(upload))


@operation()
def link(path: str, target: str) -> Generator[Any, None, None]:
    """``path`` is a symbolic link to ``target``, as ``files.link`` makes it.

    Example::

        link(path="/etc/localtime", target="/usr/share/zoneinfo/UTC")
    """
    current = file_state(path, link=True)
    if current and current["type"] == "link" and current["link_target"] == target:
        host.noop(f"link {path} already exists")
        return
    record(set_file(path, {"type": "link", "sha256": None, "user": "root", "group": "root",
                           "mode": "777", "link_target": target}))
    yield from files.link._inner(path=path, target=target)


@operation()
def download(src: str, dest: str, mode: str = "0644") -> Generator[Any, None, None]:
    """``dest`` fetched from ``src`` when it is missing, with ``mode``, as ``files.download``
    does it.

    Example::

        download(src="https://pkgs.tailscale.com/stable/debian/bookworm.noarmor.gpg",
                 dest="/usr/share/keyrings/tailscale-archive-keyring.gpg")
    """
    current = file_state(dest)
    if current is not None and current["type"] == "file" and _same_mode(current["mode"], mode):
        host.noop(f"{dest} exists")
        return
    record(set_file(dest, {"type": "file", "sha256": None, "user": "root", "group": "root",
                           "mode": mode.lstrip("0"), "link_target": None}))  # (sha256 unknown)
    yield from files.download._inner(src=src, dest=dest, mode=mode)


@operation()
def packages(packages: Sequence[str], present: bool = True) -> Generator[Any, None, None]:
    """The Debian ``packages`` installed (``present=False``: removed), with the command
    ``apt.packages`` would run. What an install changes is not known: the snapshot is read
    again afterwards.

    Example::

        packages(packages=["ufw"])   # DEBIAN_FRONTEND=noninteractive apt-get -y ... install ufw
    """
    yield from ensure_packages(
        host, list(packages), dict(section("packages")), present,
        install_command=noninteractive_apt("install"),
        uninstall_command=noninteractive_apt("remove"),
        upgrade_command=noninteractive_apt("install"),
        version_join="=",
    )


@operation()
def apt_update(cache_time: int = 0) -> Generator[Any, None, None]:
    """``apt-get update`` unless the lists are younger than ``cache_time`` seconds, as
    ``apt.update`` does it (nothing the snapshot holds changes)."""
    record(no_change())
    yield from apt.update._inner(cache_time=cache_time)


@operation()
def service(
    unit: str, running: bool | None = True, enabled: bool | None = True
) -> Generator[Any, None, None]:
    """The systemd ``unit`` running (``None``: either way) and enabled (``None``: either way),
    with the commands ``systemd.service`` gives.

    Example::

        service(unit="tailscaled.service", running=True, enabled=True)
    """
    now = unit_state(unit)
    commands = []
    if running is not None and now["running"] != running:
        commands.append(StringCommand("systemctl", "start" if running else "stop",
                                      QuoteString(unit)))
    if enabled is not None and now["enabled"] != enabled:
        commands.append(StringCommand("systemctl", "enable" if enabled else "disable",
                                      QuoteString(unit)))
    if not commands:
        words = [w for w, want in (("running", running), ("enabled", enabled)) if want]
        host.noop(f"{unit} is {' and '.join(words) or 'as wanted'}")
        return

    def effect(snap: SnapshotData) -> None:
        state = snap["units"][unit]
        if running is not None:
            state["running"] = running
        if enabled is not None:
            state["enabled"] = enabled

    record(effect)
    yield from commands


@operation()
def hostname(hostname: str) -> Generator[Any, None, None]:
    """The node's hostname is ``hostname``, as ``server.hostname`` sets it (without hostnamectl
    it also rewrites /etc/hostname: then it always runs).

    Example::

        hostname(hostname="vps-1")
    """
    system = section("system")
    if system["hostnamectl"] and system["hostname"] == hostname:
        host.noop("hostname is set")
        return

    def effect(snap: SnapshotData) -> None:
        snap["system"]["hostname"] = hostname

    record(effect)
    yield from server.hostname._inner(hostname=hostname)


@operation()
def hosts_line(line: str, replace: str) -> Generator[Any, None, None]:
    """/etc/hosts has ``replace`` as the line(s) matching ``line`` (``SystemInfo``'s
    ``HOSTS_LINE_RE``), as ``files.line`` makes it.

    Example::

        hosts_line(line=r"^127\\.0\\.1\\.1\\s.*$", replace="127.0.1.1 vps-1")
    """
    found = section("system")["hosts_lines"]
    if found and all(have == replace for have in found):
        host.noop(f'line "{replace}" exists in /etc/hosts')
        return

    def effect(snap: SnapshotData) -> None:
        snap["system"]["hosts_lines"] = [replace]

    record(effect)
    yield from files.line._inner(path="/etc/hosts", line=line, replace=replace)
