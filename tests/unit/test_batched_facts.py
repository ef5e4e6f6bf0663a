"""facts/files.py ManagedFiles and facts/systemd.py SystemdUnits: their commands in a real shell
(against a scratch directory, and a stand-in ``systemctl``), and their parsing."""

from __future__ import annotations

import getpass
import grp
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from k3sfleet.facts.files import ManagedFiles
from k3sfleet.facts.systemd import SystemdUnits


def run(command: str, env: dict[str, str] | None = None) -> list[str]:
    """A fact's command in ``/bin/sh``, as pyinfra runs it: its stdout lines (it must exit 0)."""
    out = subprocess.run(  # noqa: S603 - the fact's own command, in a test
        ["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30, check=True,
        env=env,
    )
    return out.stdout.splitlines()


def test_managed_files_reads_sha_owner_mode_and_link_targets(tmp_path: Path) -> None:
    config = tmp_path / "conf.d" / "00-k3sfleet.conf"
    config.parent.mkdir()
    config.write_text("PasswordAuthentication no\n")
    config.chmod(0o640)
    spaced = tmp_path / "with space.list"
    spaced.write_text("deb x\n")
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/UTC")  # (dangling here: not followed)
    missing = tmp_path / "sudoers.d" / "90-admins"
    paths = [str(config), str(spaced), str(missing), str(tmp_path / "conf.d")]
    fact = ManagedFiles()
    command = fact.command(paths=paths, links=[str(link), str(tmp_path / "no-link")])
    files = fact.process(run(command.get_raw_value()))
    me, group = getpass.getuser(), grp.getgrgid(os.getegid()).gr_name
    assert files[str(config)] == {
        "type": "file", "sha256": hashlib.sha256(b"PasswordAuthentication no\n").hexdigest(),
        "user": me, "group": group, "mode": "640", "link_target": None,
    }
    assert files[str(spaced)] is not None
    assert files[str(spaced)]["sha256"] == hashlib.sha256(b"deb x\n").hexdigest()
    assert files[str(link)] == {"type": "link", "sha256": None, "user": me, "group": group,
                                "mode": "777", "link_target": "/usr/share/zoneinfo/UTC"}
    assert files[str(tmp_path / "conf.d")]["type"] == "directory"  # type: ignore[index]
    # every path asked for has a key: None when it does not exist
    assert files[str(missing)] is None and files[str(tmp_path / "no-link")] is None
    assert len(files) == 6


def test_managed_files_when_nothing_exists_and_when_nothing_is_asked(tmp_path: Path) -> None:
    fact = ManagedFiles()
    command = fact.command(paths=[str(tmp_path / "a")], links=[str(tmp_path / "b")])
    assert run(command.get_raw_value()) == []
    # pyinfra gives the fact's default() when there is no output at all
    assert fact.default() == {str(tmp_path / "a"): None, str(tmp_path / "b"): None}
    empty = ManagedFiles()
    assert empty.command().get_raw_value() == "true"  # (no sha256sum reading stdin)
    assert empty.default() == {}


def test_managed_files_quotes_paths_and_wants_them_absolute(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    odd = f"{tmp_path}/a b; touch {marker}"
    fact = ManagedFiles()
    files = fact.process(run(fact.command(paths=[odd], links=[odd]).get_raw_value()))
    assert files == {odd: None} and not marker.exists()
    with pytest.raises(ValueError, match="absolute"):
        ManagedFiles().command(paths=["-delete"])


def test_managed_files_a_symlinked_config_is_not_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "real.conf"
    target.write_text("x\n")
    link = tmp_path / "linked.conf"
    link.symlink_to(target)
    fact = ManagedFiles()
    files = fact.process(run(fact.command(paths=[str(link)]).get_raw_value()))
    state = files[str(link)]
    assert state is not None and state["type"] == "link"
    assert state["sha256"] == hashlib.sha256(b"x\n").hexdigest()  # sha256sum follows it


SYSTEMCTL = """#!/bin/sh
# stand-in: prints a block per unit named on the command line, as `systemctl show -p...` does
first=1
for unit in "$@"; do
  case "$unit" in -*) continue ;; show) continue ;; esac
  [ $first = 1 ] || echo
  first=0
  case "$unit" in
    tailscaled.service) printf 'ActiveState=active\\nSubState=running\\nUnitFileState=enabled\\n' ;;
    systemd-timesyncd.service)
      printf 'ActiveState=inactive\\nSubState=dead\\nUnitFileState=disabled\\n' ;;
    oneshot.service) printf 'ActiveState=active\\nSubState=exited\\nUnitFileState=static\\n' ;;
    *) printf 'ActiveState=inactive\\nSubState=dead\\nUnitFileState=\\n' ;;
  esac
done
"""


def test_systemd_units_numbers_the_blocks_in_argument_order(tmp_path: Path) -> None:
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(SYSTEMCTL)
    systemctl.chmod(0o755)
    units = ["systemd-timesyncd.service", "nope.service", "tailscaled.service", "oneshot.service"]
    fact = SystemdUnits()
    command = fact.command(units=units).get_raw_value()
    output = run(command, env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert output[0] == "unit0.ActiveState=inactive"
    states = fact.process(output)
    assert list(states) == units
    assert states["tailscaled.service"] == {
        "active_state": "active", "sub_state": "running", "unit_file_state": "enabled",
        "running": True, "enabled": True,
    }
    assert not states["systemd-timesyncd.service"]["running"]
    assert not states["systemd-timesyncd.service"]["enabled"]
    assert states["nope.service"]["unit_file_state"] == ""
    assert not states["nope.service"]["running"] and not states["nope.service"]["enabled"]
    # as pyinfra's SystemdStatus / SystemdEnabled decide: "exited" runs, "static" is enabled
    assert states["oneshot.service"]["running"] and states["oneshot.service"]["enabled"]


def test_systemd_units_without_output_and_bad_names() -> None:
    fact = SystemdUnits()
    fact.command(units=["tailscaled.service"])
    assert fact.default()["tailscaled.service"]["running"] is False
    with pytest.raises(ValueError, match="full unit names"):
        SystemdUnits().command(units=["tailscaled"])
    with pytest.raises(ValueError, match="full unit names"):
        SystemdUnits().command(units=["a.service; reboot"])
