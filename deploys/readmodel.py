"""One read model per host: its ``HostSnapshot``, read once, consulted by every operation.

pyinfra 3 caches no facts, so an operation that reads its own facts costs a round trip on every
run. Here each host has one model (kept on the pyinfra state): the first ``snapshot()`` reads
``HostSnapshot`` (one remote command), and every operation after that decides from it, at
prepare and again at execute. Once an operation of that host has changed something
(``OperationMeta.did_change``), the snapshot is stale and the next ``snapshot()`` reads it again,
unless the operation said exactly what it changed (``record``): then the model is updated in place
and nothing is re-read.

What is read is what was ``watch``-ed: deploys watch the paths, units and extras their operations
consult before the first one runs (an entry file can watch for several deploys at once), so the
first read has them all. An operation that consults something not watched adds it and reads
again: correct, at the cost of one more command.

Example::

    watch(files=["/etc/timezone"], units=["systemd-timesyncd.service"])
    snapshot()["files"]["/etc/timezone"]        # {"type": "file", "sha256": "...", ...} or None
    file_state("/etc/timezone")                 # the same, watching it first if needed
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.lock
from pyinfra.api.host import Host
from pyinfra.context import ctx_config, ctx_host, ctx_state

from k3sfleet.facts.snapshot import (
    FileState,
    HostSnapshot,
    SnapshotData,
    UnitState,
    empty_section,
)
from k3sfleet.facts.snapshot import unit_state as snapshot_unit_state

Effect = Callable[[SnapshotData], None]


@dataclass
class _Model:
    files: dict[str, None] = field(default_factory=dict)  # ordered sets
    links: dict[str, None] = field(default_factory=dict)
    units: dict[str, None] = field(default_factory=dict)
    extras: dict[str, None] = field(default_factory=dict)
    tailnet: bool = True
    value: SnapshotData | None = None
    read_as: tuple[Any, ...] = ()  # what ``value`` was read with (``spec()`` then)
    seen: set[str] = field(default_factory=set)  # op hashes whose outcome is accounted for
    effects: dict[str, list[Effect]] = field(default_factory=dict)
    lock: gevent.lock.Semaphore = field(default_factory=gevent.lock.Semaphore)

    def add(self, kind: str, items: Iterable[str]) -> None:
        wanted: dict[str, None] = getattr(self, kind)
        wanted.update(dict.fromkeys(i for i in items if i not in wanted))

    def spec(self) -> tuple[Any, ...]:
        """What to read: a value read with less is read again (the host's own prepare and
        another host's plan may read it at the same time, with different watches)."""
        return (tuple(self.files), tuple(self.links), tuple(self.units), tuple(self.extras),
                self.tailnet)

    def catch_up(self, h: Host) -> None:
        """Account for this host's operations that completed since the last look: a change
        with a recorded effect updates the snapshot, any other change (or error) drops it."""
        state = ctx_state.get()
        for op_hash, op_data in state.ops.get(h, {}).items():
            meta = op_data.operation_meta
            if op_hash in self.seen or not meta.is_complete():
                continue
            self.seen.add(op_hash)
            effects = self.effects.pop(op_hash, None)
            if meta.did_error() or (meta.did_change() and effects is None):
                self.value = None
            elif meta.did_change() and self.value is not None:
                for effect in effects or []:
                    effect(self.value)


_STATE_ATTR = "_k3sfleet_read_models"


def _model(h: Host) -> _Model:
    state = ctx_state.get()
    models: dict[str, _Model] = state.__dict__.setdefault(_STATE_ATTR, {})
    return models.setdefault(h.name, _Model())


def _host(h: Host | None) -> Host:
    return h if h is not None else ctx_host.get()


def watch(
    files: Iterable[str] = (),
    links: Iterable[str] = (),
    units: Iterable[str] = (),
    extras: Iterable[str] = (),
    tailnet: bool | None = None,
    h: Host | None = None,
) -> None:
    """Have the snapshot of host ``h`` (default: the current host) read ``files`` (hashed),
    ``links`` (not followed), ``units`` and ``extras`` (``facts.snapshot.EXTRAS``);
    ``tailnet=False``: the ``k3s`` extra leaves out ``tailscale ip``.

    Example::

        watch(files=["/etc/ssh/sshd_config.d/00-k3sfleet.conf"], extras=["ufw"])
    """
    model = _model(_host(h))
    model.add("files", files)
    model.add("links", links)
    model.add("units", units)
    model.add("extras", extras)
    if tailnet is not None:
        model.tailnet = tailnet


def snapshot(h: Host | None = None) -> SnapshotData:
    """The current snapshot of host ``h`` (default: the current host), read when there is
    none or the host changed since (with the host's ``_sudo``, from its data).

    Example::

        snapshot()["files"]          # {path: FileState or None} of the watched paths
    """
    target = _host(h)
    model = _model(target)
    with model.lock:
        if ctx_state.get().is_executing:
            model.catch_up(target)
        while model.value is None or model.read_as != model.spec():
            spec = model.spec()
            files, links, units, extras, tailnet = spec
            model.value = target.get_fact(
                HostSnapshot, files=list(files), links=list(links), units=list(units),
                extras=list(extras), tailnet=tailnet,
            )
            model.read_as = spec
        return model.value


def file_state(path: str, link: bool = False) -> FileState | None:
    """``path`` in the current host's snapshot (watched first if it was not); ``None``: it
    does not exist. ``link``: read without following a symbolic link.

    Example::

        file_state("/etc/localtime", link=True)["link_target"]   # "/usr/share/zoneinfo/UTC"
    """
    if link:
        watch(links=[path])
    else:
        watch(files=[path])
    return snapshot()["files"].get(path)


def unit_state(unit: str) -> UnitState:
    """The systemd ``unit`` in the current host's snapshot (watched first if it was not)."""
    watch(units=[unit])
    found = snapshot()["units"].get(unit)
    return found if found is not None else snapshot_unit_state({})


def section(name: str) -> Any:
    """An extra section (``system``, ``packages``, ``ufw``, ``tailscale``, ``k3s``) of the
    current host's snapshot (watched first if it was not).

    Example::

        section("system")["codename"]     # "bookworm"
    """
    watch(extras=[name])
    found = snapshot().get(name)
    return empty_section(name) if found is None else found


def record(*effects: Effect) -> None:
    """Say what the running operation changes, should it change anything: at execute the
    snapshot is updated with ``effects`` instead of read again. Call it from an operation's
    body before yielding its commands.

    Example::

        record(lambda snap: snap["units"][unit].update(running=True))
    """
    h = _host(None)
    op_hash = h.current_op_hash
    if op_hash is not None:
        _model(h).effects[op_hash] = list(effects)


def set_file(path: str, new: FileState | None) -> Effect:
    """An effect: ``path`` is now ``new`` (``None``: removed)."""

    def effect(snap: SnapshotData) -> None:
        snap["files"][path] = None if new is None else dict(new)  # type: ignore[assignment]

    return effect


def no_change() -> Effect:
    """An effect that touches nothing the snapshot holds (``apt-get update``, a user)."""
    return lambda snap: None


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

