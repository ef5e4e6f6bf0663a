"""facts/snapshot.py HostSnapshot: its command in a real shell (its files and units sections
against a scratch directory and a stand-in ``systemctl``; the release and packages of this
machine), and its parsing; every section of one command."""

from __future__ import annotations

import getpass
import grp
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from k3sfleet.facts.snapshot import HostSnapshot, SnapshotData


def run(command: str, env: dict[str, str] | None = None) -> list[str]:
    """A fact's command in ``/bin/sh``, as pyinfra runs it: its stdout lines (it must exit 0)."""
    out = subprocess.run(  # noqa: S603 - the fact's own command, in a test
        ["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30, check=True,
        env=env,
    )
    return out.stdout.splitlines()


def snapshot(env: dict[str, str] | None = None, **kwargs: object) -> SnapshotData:
    """``HostSnapshot`` of this machine with ``kwargs``, its command run in ``/bin/sh``."""
    fact = HostSnapshot()
    return fact.process(run(fact.command(**kwargs).get_raw_value(), env))  # type: ignore[arg-type]


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
    files = snapshot(files=paths, links=[str(link), str(tmp_path / "no-link")])["files"]
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
    files = snapshot(files=[str(tmp_path / "a")], links=[str(tmp_path / "b")])["files"]
    assert files == {str(tmp_path / "a"): None, str(tmp_path / "b"): None}
    empty = HostSnapshot().command().get_raw_value()
    assert "sha256sum" not in empty and "find" not in empty  # (no sha256sum reading stdin)
    assert snapshot()["files"] == {} and snapshot()["units"] == {}


def test_managed_files_quotes_paths_and_wants_them_absolute(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    odd = f"{tmp_path}/a b; touch {marker}"
    files = snapshot(files=[odd], links=[odd])["files"]
    assert files == {odd: None} and not marker.exists()
    with pytest.raises(ValueError, match="not a valid entry of files"):
        HostSnapshot().command(files=["-delete"])


def test_managed_files_a_symlinked_config_is_not_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "real.conf"
    target.write_text("x\n")
    link = tmp_path / "linked.conf"
    link.symlink_to(target)
    state = snapshot(files=[str(link)])["files"][str(link)]
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
    command = HostSnapshot().command(units=units).get_raw_value()
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    output = run(command, env)
    assert output[output.index("@@k3sfleet units") + 1 + len(units)] == (
        "unit0.ActiveState=inactive")
    states = HostSnapshot().process(output)["units"]
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


def test_systemd_units_without_output_and_bad_names(tmp_path: Path) -> None:
    # a node without systemctl: the unit is known to be neither running nor enabled
    env = {**os.environ, "PATH": str(tmp_path)}
    fact = HostSnapshot()
    output = run(fact.command(units=["tailscaled.service"]).get_raw_value().replace(
        "systemctl show", f"{tmp_path}/no-systemctl show"), env)
    assert fact.process(output)["units"]["tailscaled.service"]["running"] is False
    with pytest.raises(ValueError, match="not a valid entry of units"):
        HostSnapshot().command(units=["tailscaled"])
    with pytest.raises(ValueError, match="not a valid entry of units"):
        HostSnapshot().command(units=["a.service; reboot"])


def test_every_section_in_one_command(tmp_path: Path) -> None:
    """The release and packages of this machine, and the extras: each section parsed by the
    fact that owns its shell (SystemInfo, DebPackages, UfwStatus, TailscaleStatus, K3sState),
    one failing section (no ufw, no tailscale here) leaving the others whole."""
    with_extras = snapshot(files=["/etc/os-release"],
                           extras=["system", "packages", "ufw", "tailscale", "k3s"], tailnet=False)
    assert with_extras["system"]["id"]  # this machine's /etc/os-release
    assert with_extras["files"]["/etc/os-release"] is not None
    if Path("/usr/bin/dpkg").exists():
        assert "bash" in with_extras["packages"]
    assert with_extras["ufw"]["rules"] == [] or Path("/usr/sbin/ufw").exists()
    assert with_extras["tailscale"]["backend_state"] == "NoState"  # no tailscaled here
    assert with_extras["k3s"]["version"] is None and with_extras["k3s"]["tailnet_ip"] is None
    plain = snapshot()
    assert set(plain) == {"files", "units"}  # extras only when asked
    assert "sshd -T" not in HostSnapshot().command().get_raw_value()
    with pytest.raises(ValueError, match="not a valid entry of extras"):
        HostSnapshot().command(extras=["etcd"])


def test_a_section_printed_without_a_final_newline_ends_at_the_next_mark(tmp_path: Path) -> None:
    """`tailscale status --json` ends its JSON without a newline: the next section's mark must
    still start a line of its own."""
    tailscale = tmp_path / "tailscale"
    tailscale.write_text('#!/bin/sh\nprintf \'{"BackendState": "Running", "Self": '
                         '{"HostName": "vps-1", "TailscaleIPs": ["100.64.0.1"]}}\'\n')
    tailscale.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    snap = snapshot(env, extras=["tailscale", "k3s"], tailnet=False)
    assert snap["tailscale"]["backend_state"] == "Running"
    assert snap["k3s"]["version"] is None
