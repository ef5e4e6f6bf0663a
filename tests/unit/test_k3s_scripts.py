"""The shell the K3s deploys run, executed for real here: the pinned install (download, sha256
check, atomic move) against a file:// release mirror, and the restart with roll-back against a
stand-in ``systemctl`` whose service fails on a bad config."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from k3sfleet.deploys.k3s_install import install_script, release_asset_url
from k3sfleet.deploys.k3s_node import restart_script

VERSION = "v1.34.2+k3s1"


def make_release(root: Path, version: str, binary: bytes, listed_sum: str | None = None) -> str:
    folder = root / version
    folder.mkdir(parents=True)
    (folder / "k3s").write_bytes(binary)
    digest = listed_sum or hashlib.sha256(binary).hexdigest()
    (folder / "sha256sum-amd64.txt").write_text(
        f"{'0' * 64}  k3s-airgap-images-amd64.tar\n{digest}  k3s\n"
    )
    return f"file://{root}"


def run_sh(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script, in a test
        ["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, env=env
    )


def test_release_url_quotes_the_plus() -> None:
    url = release_asset_url("https://example.invalid/rel/", VERSION, "k3s")
    assert url == "https://example.invalid/rel/v1.34.2%2Bk3s1/k3s"


def test_install_verifies_and_installs_atomically(tmp_path: Path) -> None:
    binary = b"#!/bin/sh\necho 'k3s version v1.34.2+k3s1 (deadbeef)'\n"
    url = make_release(tmp_path / "mirror", VERSION, binary)
    dest = tmp_path / "bin" / "k3s"
    dest.parent.mkdir()
    result = run_sh(install_script(VERSION, url, "x86_64", str(dest)))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == binary
    assert os.access(dest, os.X_OK)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["k3s"]  # no temp file left


def test_install_refuses_a_wrong_checksum_and_keeps_the_old_binary(tmp_path: Path) -> None:
    url = make_release(tmp_path / "mirror", VERSION, b"tampered", listed_sum="ab" * 32)
    dest = tmp_path / "bin" / "k3s"
    dest.parent.mkdir()
    dest.write_bytes(b"old k3s")
    result = run_sh(install_script(VERSION, url, "x86_64", str(dest)))
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr
    assert dest.read_bytes() == b"old k3s"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["k3s"]


def test_install_fails_when_the_release_is_missing(tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    dest = tmp_path / "bin" / "k3s"
    dest.parent.mkdir()
    result = run_sh(install_script(VERSION, f"file://{tmp_path / 'mirror'}", "x86_64", str(dest)))
    assert result.returncode != 0
    assert not dest.exists()


def test_install_unknown_arch() -> None:
    with pytest.raises(ValueError, match="architecture"):
        install_script(VERSION, "https://x.invalid", "sparc64")


FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl stand-in for a unit with Restart=always: a start on a config holding "bad-setting"
# fails every time, one holding "fail-once" fails the first time only. A failed run waits in
# SubState auto-restart under its own InvocationID; the poll after the one that saw it, systemd
# (here: is-active) starts a new run. $FAKE_STATE holds "<SubState> <InvocationID> [seen]".
state="$FAKE_STATE"
start() {
  n=$(( $(cat "$state.n" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$state.n"
  if grep -q bad-setting "$FAKE_CONFIG"; then echo "auto-restart run$n" > "$state"
  elif grep -q fail-once "$FAKE_CONFIG" && [ ! -e "$state.failed-once" ]; then
    touch "$state.failed-once"; echo "auto-restart run$n" > "$state"
  else echo "running run$n" > "$state"; fi
}
case "$1" in
  daemon-reload|reset-failed) exit 0 ;;
  restart) echo restart >> "$state.log"; start; exit 0 ;;
  is-active)
    set -- $(cat "$state" 2>/dev/null)
    if [ "${1:-}" = auto-restart ]; then
      if [ -n "${3:-}" ]; then echo auto >> "$state.log"; start
      else echo "$1 $2 seen" > "$state"; fi
    fi
    [ "$(cut -d' ' -f1 "$state" 2>/dev/null)" = running ] ;;
  show)
    case "$3" in
      SubState) cut -d' ' -f1 "$state" ;;
      InvocationID) cut -d' ' -f2 "$state" ;;
    esac ;;
  *) exit 0 ;;
esac
"""


@pytest.fixture
def fake_node(tmp_path: Path) -> dict[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL)
    systemctl.chmod(0o755)
    return {"bin": bin_dir, "config": tmp_path / "config.yaml", "state": tmp_path / "state"}


def restart(node: dict[str, Path], restore: bool) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        PATH=f"{node['bin']}:{os.environ['PATH']}",
        FAKE_STATE=str(node["state"]),
        FAKE_CONFIG=str(node["config"]),
    )
    script = restart_script(
        "k3s-agent", "agent", restore, timeout=5, settle=0, config=str(node["config"])
    )
    return run_sh(script, env)


def test_restart_healthy(fake_node: dict[str, Path]) -> None:
    fake_node["config"].write_text("node-name: a\n")
    result = restart(fake_node, restore=True)
    assert result.returncode == 0, result.stderr
    assert fake_node["state"].read_text().split()[0] == "running"


def test_one_failed_start_is_left_to_the_units_own_restart(fake_node: dict[str, Path]) -> None:
    """A transient start failure (K3s's unit restarts it) is not a bad config: no roll-back."""
    cfg = fake_node["config"]
    cfg.write_text("node-name: a\nfail-once: true\n")
    Path(f"{cfg}.previous").write_text("node-name: a\n")
    result = restart(fake_node, restore=True)
    assert result.returncode == 0, result.stderr
    assert cfg.read_text().endswith("fail-once: true\n") and not Path(f"{cfg}.failed").exists()
    assert fake_node["state"].read_text().split()[:2] == ["running", "run2"]
    assert Path(f"{fake_node['state']}.log").read_text().split() == ["restart", "auto"]


def test_bad_config_is_rolled_back_and_the_run_fails_clearly(fake_node: dict[str, Path]) -> None:
    cfg = fake_node["config"]
    cfg.write_text("node-name: a\nbad-setting: true\n")
    Path(f"{cfg}.previous").write_text("node-name: a\n")
    result = restart(fake_node, restore=True)
    assert result.returncode == 1
    assert "previous config is restored" in result.stderr
    assert "healthy again" in result.stderr
    assert cfg.read_text() == "node-name: a\n"
    assert Path(f"{cfg}.failed").read_text().endswith("bad-setting: true\n")
    assert fake_node["state"].read_text().split()[0] == "running"
    log = Path(f"{fake_node['state']}.log").read_text().split()
    assert log.count("restart") == 2 and log.count("auto") == 1  # two failed runs, then rolled back


def test_bad_config_without_previous_fails_without_touching_it(fake_node: dict[str, Path]) -> None:
    cfg = fake_node["config"]
    cfg.write_text("bad-setting: true\n")
    result = restart(fake_node, restore=True)
    assert result.returncode == 1
    assert "no previous config" in result.stderr
    assert cfg.read_text() == "bad-setting: true\n"


def test_no_roll_back_when_the_config_did_not_change(fake_node: dict[str, Path]) -> None:
    cfg = fake_node["config"]
    cfg.write_text("bad-setting: true\n")
    Path(f"{cfg}.previous").write_text("old\n")
    result = restart(fake_node, restore=False)
    assert result.returncode == 1
    assert cfg.read_text() == "bad-setting: true\n"  # an old .previous is not put back
