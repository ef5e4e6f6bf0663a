"""deploys/readmodel.py: one HostSnapshot read per host, consulted by every operation at prepare and
execute, read again only after a change the operation did not describe, or for something not
watched yet.

Runs prepare and execute as the CLI does (pyinfra's ``@fake`` connector carries the host; its
commands go to ``FakeNode``, a node with files, packages and units that answers ``HostSnapshot``'s
command by its sections).
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from k3s_harness import fake_connection
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage
from pyinfra.connectors.util import CommandOutput, OutputLine
from pyinfra.context import ctx_host
from pyinfra.operations import python, server

from k3sfleet.deploys import ops
from k3sfleet.deploys.readmodel import file_state, snapshot, watch

A, B = "/etc/k3sfleet/a.conf", "/etc/k3sfleet/b.conf"
UNIT = "tailscaled.service"


@dataclass
class FakeNode:
    files: dict[str, str] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    commands: list[str] = field(default_factory=list)
    reads: list[list[str]] = field(default_factory=list)  # the paths each snapshot asked for

    def snapshot_lines(self, words: list[str]) -> list[str]:
        wanted = [words[i + 2:words.index(";", i)] for i, w in enumerate(words)
                  if w == "printf" and words[i + 1] == "want %s\\n"]
        paths, units = (wanted + [[], []])[:2] if len(wanted) > 1 else (wanted + [[]])[:1] + [[]]
        self.reads.append(paths)
        lines = ["@@k3sfleet system", "@@k3sfleet packages"]
        lines += [f"ii  {p}  1.0  amd64  x" for p in sorted(self.packages)]
        lines.append("@@k3sfleet files")
        for path in paths:
            lines.append(f"want {path}")
            if path in self.files:
                digest = hashlib.sha256(self.files[path].encode()).hexdigest()
                lines += [f"{digest}  {path}", f"stat f root root 644 {path}\t"]
        lines.append("@@k3sfleet units")
        lines += [f"want {u}" for u in units]
        for i, unit in enumerate(units):
            sub = "running" if unit in self.running else "dead"
            lines += [f"unit{i}.SubState={sub}", f"unit{i}.UnitFileState=enabled"]
        return lines

    def run(self, text: str) -> tuple[bool, CommandOutput]:
        self.commands.append(text)
        out: list[str] = []
        ok = True
        if "echo @@k3sfleet files" in text:
            out = self.snapshot_lines(shlex.split(text))
        else:
            words = shlex.split(text)
            if words[:2] == ["mv", "-f"]:
                self.files[words[3]] = self.files.pop(words[2])
            elif "install" in words and "apt-get" in words:
                self.packages.update(words[words.index("install") + 1:])
                self.running.add(UNIT)  # (the package starts its daemon)
            elif words[:1] == ["false"]:
                ok = False
        return ok, CommandOutput([OutputLine("stdout", line) for line in out])


def run(deploy: Callable[[], None], node: FakeNode) -> State:
    """Prepare and execute ``deploy`` on one ``@fake`` host backed by ``node``."""
    inventory = Inventory(([("@fake/node-1", {"fake_delay": 0, "fake_delay_jitter": 0})], {}))
    state = State(inventory, Config())

    def shell(connector: Any, command: Any, **kwargs: Any) -> Any:
        return node.run(command if isinstance(command, str) else command.get_raw_value())

    def put(connector: Any, src: Any, remote: str, *args: Any, **kwargs: Any) -> bool:
        node.files[remote] = src.getvalue() if isinstance(src, StringIO) else ""
        return True

    with fake_connection(state, shell, put):
        state.set_stage(StateStage.Connect)
        connect_all(state)
        state.set_stage(StateStage.Prepare)
        target = inventory.get_host("@fake/node-1")
        with ctx_host.use(target):
            deploy()  # (as the CLI runs a deploy file for the host)
        state.set_stage(StateStage.Execute)
        run_ops(state)
    return state


def deploy() -> None:
    watch(files=[A, B], units=[UNIT], extras=["packages"])
    ops.file(name="a", path=A, content="a\n")
    ops.packages(name="tailscale", packages=["tailscale"])
    ops.file(name="b", path=B, content="b\n")
    ops.service(name="tailscaled", unit=UNIT)


def reads(node: FakeNode) -> int:
    return len(node.reads)


def test_a_converged_host_is_read_once_for_prepare_and_execute() -> None:
    node = FakeNode(files={A: "a\n", B: "b\n"}, packages={"tailscale"}, running={UNIT})
    run(deploy, node)
    assert reads(node) == 1
    assert node.commands == [node.commands[0]]  # nothing but the snapshot


def test_a_described_change_updates_the_model_an_undescribed_one_makes_it_read_again() -> None:
    node = FakeNode()
    run(deploy, node)
    # prepare: 1; execute: the file a's write is recorded (no read), the install is not: the
    # next operation (file b) reads the host again, and sees what the install started
    assert reads(node) == 2
    install = next(i for i, c in enumerate(node.commands) if "apt-get" in c)
    second = [i for i, c in enumerate(node.commands) if "echo @@k3sfleet files" in c][1]
    assert second > install
    assert not any(c.startswith("systemctl start") for c in node.commands)  # already running
    assert node.files == {A: "a\n", B: "b\n"}


def test_the_model_after_a_recorded_write_is_what_the_write_made() -> None:
    node = FakeNode()
    seen: dict[str, Any] = {}

    def write_then_look() -> None:
        watch(files=[A])
        ops.file(name="a", path=A, content="a\n", mode="0600")
        python.call(name="look", function=lambda: seen.update(
            a=file_state(A)))

    run(write_then_look, node)
    assert reads(node) == 1
    assert seen["a"]["sha256"] == hashlib.sha256(b"a\n").hexdigest()
    assert seen["a"]["mode"] == "600"


def test_something_not_watched_is_added_and_read_again() -> None:
    node = FakeNode(files={A: "a\n", B: "b\n"})

    def late() -> None:
        watch(files=[A])
        assert snapshot()["files"][A] is not None
        assert file_state(B) is not None  # not watched: read again, with both

    run(late, node)
    assert node.reads == [[A], [A, B]]


def test_a_failed_operation_drops_the_model() -> None:
    node = FakeNode(files={A: "a\n"})

    def failing() -> None:
        watch(files=[A])
        ops.file(name="a", path=A, content="a\n")
        server.shell(name="fails", commands=["false"], _ignore_errors=True)
        ops.file(name="a again", path=A, content="a\n")

    run(failing, node)
    assert reads(node) == 2  # prepare, then after the failure


def test_a_watch_made_while_the_host_is_read_is_read_too() -> None:
    """Hosts prepare in parallel: another host's plan may watch more on this host while this
    host's own read is under way; the answer read with less is not handed out."""
    node = FakeNode(files={A: "a\n", B: "b\n"})
    original = node.snapshot_lines

    def read_while_watching(words: list[str]) -> list[str]:
        if len(node.reads) == 0:
            watch(files=[B])  # (as cluster_plan does for another host)
        return original(words)

    node.snapshot_lines = read_while_watching  # type: ignore[method-assign]

    def first() -> None:
        watch(files=[A])
        assert snapshot()["files"][B] is not None

    run(first, node)
    assert node.reads == [[A], [A, B]]
