"""Run a bootstrap deploy's prepare stage against fact values given in the test; list the commands.

Every fact the deploy (or a pyinfra operation it calls) reads is answered from a table keyed by
the fact class name; a fact missing from the table fails the test, so the tests name every fact
a deploy depends on. ``HostSnapshot`` (the read model) is put together from its sections'
entries: ``ManagedFiles`` (``managed_files``), ``SystemdUnits`` (``systemd_units``), and as its
extras ask ``SystemInfo``, ``DebPackages``, ``UfwStatus``, ``TailscaleStatus``, ``K3sState``
(the last three must be in the table; the others default to an empty node). ``reads`` (a
Counter) counts the reads of each fact. Nothing connects anywhere.

Example::

    reads: Counter[str] = Counter()
    ops = generate(firewall, FRESH_FACTS, {"ssh_user": "admin"}, reads=reads)
    ops["ufw rules and policy"]     # ["ufw allow 22/tcp", ...]
    reads["UfwStatus"]              # 1
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from io import StringIO
from typing import Any
from unittest.mock import patch

from pyinfra.api import Config, FileUploadCommand, Inventory, State, StringCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_state

from k3sfleet.facts.os import SystemInfo

FactTable = Mapping[str, Any]

BASE_DATA: dict[str, Any] = {
    "ssh_user": "k3sfleet",
    "_sudo": True,  # as k3sfleet.inventory.sudo_data gives a node logged in as k3sfleet
    "k3s_role": "server",
    "k3s_node_labels": {},
    "common_timezone": "UTC",
    "common_unattended_upgrades": True,
    "common_ssh_permit_root_login": "no",
    "common_journald_max_use": "500M",
    "tailscale_apt_url": "https://pkgs.tailscale.com/stable",
    "tailscale_up_by": "deploy",
    "tailscale_tags": "",
    "tailscale_accept_routes": False,
}


class MissingFact(AssertionError):
    pass


#: HostSnapshot's extras and the table entries that give them
EXTRA_FACTS = {"ufw": "UfwStatus", "tailscale": "TailscaleStatus", "k3s": "K3sState"}


def snapshot_answer(table: FactTable) -> Callable[..., Any]:
    """A ``HostSnapshot`` answer made of the table's section entries (see the module doc)."""

    def answer(files: Sequence[str] = (), links: Sequence[str] = (), units: Sequence[str] = (),
               extras: Sequence[str] = (), tailnet: bool = True) -> Any:
        found = table.get("ManagedFiles", managed_files({}))
        snap: dict[str, Any] = {
            "files": found(paths=files, links=links),
            "units": table.get("SystemdUnits", systemd_units({}))(units=units),
        }
        if "system" in extras:
            snap["system"] = table.get("SystemInfo") or SystemInfo().process([])
        if "packages" in extras:
            snap["packages"] = table.get("DebPackages", {})
        for name in [e for e in extras if e in EXTRA_FACTS]:
            fact = EXTRA_FACTS[name]
            if fact not in table:
                raise MissingFact(f"the test gives no value for {fact} (HostSnapshot {name})")
            value = table[fact]
            snap[name] = value(tailnet=tailnet) if callable(value) else value
        return copy.deepcopy(snap)

    return answer


def _answer(table: FactTable, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name = cls.__name__ if isinstance(cls, type) else str(cls)
    if name == "HostSnapshot" and name not in table:
        table = {**table, name: snapshot_answer(table)}
    if name not in table:
        raise MissingFact(f"the test gives no value for fact {name} ({args} {kwargs})")
    value = table[name]
    if callable(value):
        fact_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
        return value(*args, **fact_kwargs)
    return value


def render(command: Any) -> str:
    """A command as text; an upload as ``upload <dest> <sha256 of content>``."""
    if isinstance(command, FileUploadCommand):
        src = command.src
        text = src.getvalue() if isinstance(src, StringIO) else str(src)
        return f"upload {command.dest} {hashlib.sha256(text.encode()).hexdigest()}"
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    return str(command)


def generate(
    deploy: Callable[..., Any],
    facts: FactTable,
    data: Mapping[str, Any] | None = None,
    *,
    name: str = "node-1",
    servers: int = 1,
    uploads: dict[str, str] | None = None,
    config: Config | None = None,
    sudo: dict[str, bool] | None = None,
    reads: Counter[str] | None = None,
    **deploy_kwargs: Any,
) -> dict[str, list[str]]:
    """Operation name -> the commands it generates on host ``name`` (operations with none too).

    ``uploads`` (if given) collects path -> uploaded text; ``sudo`` operation name -> _sudo;
    ``reads`` fact class name -> times read (each operation runs twice: prepare, execute).
    """
    host_data = {**BASE_DATA, **(data or {})}
    server_names = [name] + [f"server-{i}" for i in range(2, servers + 1)]
    inventory = Inventory(
        ([(name, host_data)] + [(n, dict(BASE_DATA)) for n in server_names[1:]], {}),
        k3s_servers=(server_names, {}),
    )
    state = State(inventory, config or Config())
    target = inventory.get_host(name)

    def fake_get_fact(self: Host, cls: Any, *args: Any, **kwargs: Any) -> Any:
        if reads is not None:
            reads[cls.__name__ if isinstance(cls, type) else str(cls)] += 1
        return _answer(facts, cls, args, kwargs)

    result: dict[str, list[str]] = {}
    with patch.object(Host, "get_fact", fake_get_fact):
        add_deploy(state, deploy, host=target, **deploy_kwargs)
        with ctx_state.use(state), ctx_host.use(target):
            for op_hash in state.get_op_order():
                if op_hash not in state.ops[target]:
                    continue
                op_name = ", ".join(sorted(state.get_op_meta(op_hash).names))
                op_data = state.get_op_data_for_host(target, op_hash)
                if sudo is not None:
                    sudo[op_name] = bool(op_data.global_arguments.get("_sudo"))
                commands = list(op_data.command_generator())
                for c in commands:
                    if uploads is not None and isinstance(c, FileUploadCommand):
                        uploads[c.dest] = c.src.getvalue() if isinstance(c.src, StringIO) else ""
                result[op_name] = [render(c) for c in commands]
    return result


def changed(ops: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Only the operations that generate commands."""
    return {k: v for k, v in ops.items() if v}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def files_fact(contents: Mapping[str, tuple[str, int]]) -> dict[str, Callable[..., Any]]:
    """File / Sha256File / FileContents answers for files that hold ``contents``.

    ``contents``: path -> (text, mode as pyinfra's File fact gives it, e.g. 644).
    """

    def file(path: str, **_: Any) -> Any:
        if path not in contents:
            return None
        return {"mode": contents[path][1], "user": "root", "group": "root", "size": 1}

    def digest(path: str, **_: Any) -> Any:
        return sha(contents[path][0]) if path in contents else None

    def text(path: str, **_: Any) -> Any:
        return contents[path][0].splitlines() if path in contents else None

    return {"File": file, "Sha256File": digest, "FileContents": text}


def managed_files(
    contents: Mapping[str, tuple[str, int]],
    links: Mapping[str, str] | None = None,
    owner: str = "root",
) -> Callable[..., Any]:
    """A ``ManagedFiles`` answer: regular files holding ``contents`` (path -> (text, mode as
    ``stat %a`` prints it, e.g. 644)) and symbolic ``links`` (path -> target), owned by
    ``owner``; every other path asked for does not exist.
    """
    targets = dict(links or {})

    def answer(paths: Sequence[str] = (), links: Sequence[str] = (), **_: Any) -> Any:
        found: dict[str, Any] = {}
        for path in [*paths, *links]:
            if path in contents:
                text, mode = contents[path]
                found[path] = {"type": "file", "sha256": sha(text), "user": owner,
                               "group": owner, "mode": str(mode), "link_target": None}
            elif path in targets:
                found[path] = {"type": "link", "sha256": None, "user": "root", "group": "root",
                               "mode": "777", "link_target": targets[path]}
            else:
                found[path] = None
        return found

    return answer


def systemd_units(states: Mapping[str, tuple[bool, bool]]) -> Callable[..., Any]:
    """A ``SystemdUnits`` answer: unit -> (running, enabled); other units do not exist."""

    def answer(units: Sequence[str] = (), **_: Any) -> Any:
        found: dict[str, Any] = {}
        for unit in units:
            running, enabled = states.get(unit, (False, False))
            found[unit] = {
                "active_state": "active" if running else "inactive",
                "sub_state": "running" if running else "dead",
                "unit_file_state": "enabled" if enabled else ("disabled" if unit in states else ""),
                "running": running, "enabled": enabled,
            }
        return found

    return answer
