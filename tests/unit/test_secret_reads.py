"""A secret read from a node at run time (the node-token) never reaches pyinfra's output.

pyinfra prints every fact's stdout at ``-vvv`` (``state.print_fact_output``; see
``k3sfleet.secret``): the control below proves it still does, so the test keeps meaning
something when pyinfra changes. ``read_secret_file`` reads the same file and prints nothing
at ``-vvv`` or ``--debug``. Runs the real pyinfra CLI on ``@local``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "K10c0ffee::server:7d3c1b2a9e8f4a6b"


def pyinfra(project: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(project),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, sys.path)]),
    }
    run = subprocess.run(  # noqa: S603 - the pyinfra CLI
        [sys.executable, "-m", "pyinfra", "-y", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    return out


@pytest.fixture
def project(tmp_path: Path) -> Path:
    token = tmp_path / "node-token"
    token.write_text(SECRET + "\n")
    token.chmod(0o600)
    (tmp_path / "inventory.py").write_text('local = ["@local"]\n')
    (tmp_path / "fact_read.py").write_text(textwrap.dedent(f"""\
        from pyinfra import host
        from pyinfra.api import FactBase

        class Cat(FactBase):
            def command(self):
                return "cat {token}"

        assert host.get_fact(Cat)
    """))
    (tmp_path / "secret_read.py").write_text(textwrap.dedent(f"""\
        from pyinfra import host
        from pyinfra.operations import server

        from k3sfleet.secret import Secret, read_secret_file

        value = read_secret_file(host, "{token}")
        assert isinstance(value, Secret) and value.unmask() == {SECRET!r}
        assert read_secret_file(host, "{tmp_path}/missing") is None
        server.shell(name="use it", commands=["true"])
    """))
    return tmp_path


def test_a_fact_prints_what_it_reads_at_vvv(project: Path) -> None:
    """The control: reading a secret with a fact leaks it at -vvv (what the node-token fact did)."""
    assert SECRET in pyinfra(project, "-vvv", "inventory.py", "fact_read.py")


@pytest.mark.parametrize("flags", [("-vvv",), ("-vvv", "--debug"), ("--debug-all",)])
def test_read_secret_file_prints_nothing_at_any_verbosity(
    project: Path, flags: tuple[str, ...]
) -> None:
    out = pyinfra(project, *flags, "inventory.py", "secret_read.py")
    assert "node-token" in out or "--debug-all" in flags  # -vv and up show the command
    assert SECRET not in out and SECRET.rsplit(":", 1)[-1] not in out
