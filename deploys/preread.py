"""Operations that decide from state read beforehand, so a converged node costs no round trip.

pyinfra 3 caches no facts: ``apt.packages``, ``systemd.service``, ``server.hostname``,
``files.line``, ``files.link``, ``files.file`` and ``files.download`` each read their own facts
when they run, one or two remote commands per operation even when nothing is to change. Each
operation here takes the value the entry file read once for the whole run (``DebPackages``,
``ManagedFiles``, ``SystemdUnits``, ``SystemInfo``), reports "no change" when it shows the node
as wanted, and otherwise runs pyinfra's own operation (which reads its facts then, so what it
does on a change is exactly what it always did). ``deb_packages`` builds pyinfra's apt command
itself, so ``DebPackages`` is read once per run even when packages are missing.

Example::

    installed = host.get_fact(DebPackages)
    deb_packages(name="base packages", packages=["curl", "jq"], installed=installed)
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any

import gevent
from pyinfra import host
from pyinfra.api import operation
from pyinfra.context import ctx_config, ctx_host
from pyinfra.facts.apt import noninteractive_apt
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util.packaging import ensure_packages

from k3sfleet.facts.files import FileState
from k3sfleet.facts.systemd import UnitState

#: Default of a ``current=`` / ``installed=`` parameter: the caller did not read the value, so
#: the operation reads it (``None`` is a value: "the file does not exist").
UNSET: Any = object()


def read_at_once(reads: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Each of ``reads`` (key -> a function reading a fact) run at the same time, in the
    caller's host and config context: one round trip of waiting instead of one per fact.

    Example::

        state = read_at_once({"info": lambda: host.get_fact(SystemInfo),
                              "installed": lambda: host.get_fact(DebPackages)})
        state["info"]["codename"]       # "bookworm"
    """
    current, config = ctx_host.get(), ctx_config.get()

    def in_context(read: Callable[[], Any]) -> tuple[Any, Exception | None]:
        # (pyinfra's host and config contexts are greenlet-local; an error is returned, to be
        # raised in the caller as a serial read would, not printed by gevent's hub)
        with ctx_host.use(current), ctx_config.use(config):
            try:
                return read(), None
            except Exception as e:  # noqa: BLE001 - raised in the caller below
                return None, e

    jobs = {key: gevent.spawn(in_context, read) for key, read in reads.items()}
    gevent.joinall(list(jobs.values()))  # all of them, so none is left running on an error
    results = {key: job.get() for key, job in jobs.items()}
    for _, error in results.values():
        if error is not None:
            raise error
    return {key: value for key, (value, _) in results.items()}


def needs_read(value: Mapping[str, Any] | None, keys: Iterable[str]) -> bool:
    """Whether a pre-read fact value (``ManagedFiles``, ``SystemdUnits``) is missing or lacks
    one of ``keys``: then the deploy reads the fact itself.

    Example::

        needs_read({"/etc/timezone": None}, ["/etc/timezone"])   # False: known to be missing
    """
    return value is None or any(k not in value for k in keys)


@operation()
def deb_packages(
    packages: Sequence[str], installed: Mapping[str, Any]
) -> Generator[Any, None, None]:
    """``apt-get install`` the ``packages`` missing from ``installed`` (the ``DebPackages``
    fact), with the command ``apt.packages`` would run.

    Example::

        deb_packages(packages=["ufw"], installed={"curl": {"7.88.1-10"}})
        # DEBIAN_FRONTEND=noninteractive apt-get -y ... install ufw
    """
    yield from ensure_packages(
        host, list(packages), dict(installed), True,
        install_command=noninteractive_apt("install"),
        uninstall_command=noninteractive_apt("remove"),
        upgrade_command=noninteractive_apt("install"),
        version_join="=",
    )


@operation()
def systemd_unit(
    unit: str, state: UnitState, running: bool | None = True, enabled: bool | None = True
) -> Generator[Any, None, None]:
    """The systemd ``unit`` running (``None``: either way) and enabled, as ``systemd.service``
    would leave it; ``state`` is its ``SystemdUnits`` value.

    Example::

        systemd_unit(unit="tailscaled.service", state=units["tailscaled.service"])
    """
    if (running is None or state["running"] == running) and (
        enabled is None or state["enabled"] == enabled
    ):
        words = [w for w, want in (("running", running), ("enabled", enabled)) if want]
        host.noop(f"{unit} is {' and '.join(words) or 'as wanted'}")
        return
    # Read again now: a package installed earlier in this run may have started it already.
    yield from systemd.service._inner(service=unit, running=running, enabled=enabled)


@operation()
def hostname(hostname: str, current: str, hostnamectl: bool = True
             ) -> Generator[Any, None, None]:
    """The node's hostname is ``hostname`` (``current``: ``uname -n`` read before), as
    ``server.hostname`` sets it.

    Without hostnamectl ``server.hostname`` also rewrites /etc/hostname: then it always runs.

    Example::

        hostname(hostname="vps-1", current=info["hostname"], hostnamectl=info["hostnamectl"])
    """
    if hostnamectl and current == hostname:
        host.noop("hostname is set")
        return
    yield from server.hostname._inner(hostname=hostname)


@operation()
def file_line(
    path: str, line: str, replace: str, current: Sequence[str] | None
) -> Generator[Any, None, None]:
    """``path`` has ``replace`` as the line(s) matching the regular expression ``line``, as
    ``files.line`` makes it; ``current`` are the matching lines read before.

    Example::

        file_line(path="/etc/hosts", line=r"^127\\.0\\.1\\.1\\s.*$", replace="127.0.1.1 vps-1",
                  current=info["hosts_lines"])
    """
    if current and all(found == replace for found in current):
        host.noop(f'line "{replace}" exists in {path}')
        return
    yield from files.line._inner(path=path, line=line, replace=replace)


@operation()
def symlink(path: str, target: str, current: FileState | None) -> Generator[Any, None, None]:
    """``path`` is a symbolic link to ``target``, as ``files.link`` makes it; ``current`` is
    its ``ManagedFiles`` value (read as a link).

    Example::

        symlink(path="/etc/localtime", target="/usr/share/zoneinfo/UTC",
                current=files["/etc/localtime"])
    """
    if current and current["type"] == "link" and current["link_target"] == target:
        host.noop(f"link {path} already exists")
        return
    yield from files.link._inner(path=path, target=target)


@operation()
def absent_file(path: str, current: FileState | None) -> Generator[Any, None, None]:
    """No file at ``path``, as ``files.file(present=False)`` makes it; ``current`` is its
    ``ManagedFiles`` value.

    Example::

        absent_file(path="/etc/sudoers.d/90-old", current=files["/etc/sudoers.d/90-old"])
    """
    if current is None:
        host.noop(f"file {path} does not exist")
        return
    yield from files.file._inner(path=path, present=False)


@operation()
def downloaded_file(
    src: str, dest: str, current: FileState | None, mode: str | None = None
) -> Generator[Any, None, None]:
    """``dest`` downloaded from ``src`` when it does not exist, and given ``mode``, as
    ``files.download`` does it; ``current`` is its ``ManagedFiles`` value.

    Example::

        downloaded_file(src="https://pkgs.tailscale.com/stable/debian/bookworm.noarmor.gpg",
                        dest="/usr/share/keyrings/tailscale-archive-keyring.gpg",
                        current=files["/usr/share/keyrings/tailscale-archive-keyring.gpg"],
                        mode="0644")
    """
    if (
        current is not None
        and current["type"] == "file"
        and (mode is None or int(current["mode"]) == int(mode))
    ):
        host.noop(f"{dest} exists")
        return
    yield from files.download._inner(src=src, dest=dest, mode=mode)
