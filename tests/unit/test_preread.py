"""deploys/preread.py: no fact read and no command on converged state; on fresh or drifted state
the commands pyinfra's own operation gives (read from its facts then)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from bootstrap_harness import generate, managed_files, sha
from pyinfra.operations import apt, files, systemd

from k3sfleet.deploys import common as c
from k3sfleet.deploys import preread as p

OP = "op"


def ops_of(call: Callable[[], Any], facts: dict[str, Any] | None = None,
           reads: Counter[str] | None = None) -> list[str]:
    """The commands of the one operation ``call`` adds (facts answered from ``facts``)."""
    return generate(lambda: call(), facts or {}, reads=reads)[OP]


def file_state(mode: str = "644", kind: str = "file", target: str | None = None,
               text: str = "x") -> dict[str, Any]:
    return {"type": kind, "sha256": sha(text), "user": "root", "group": "root", "mode": mode,
            "link_target": target}


# -- deb_packages ----------------------------------------------------------------------------


def test_deb_packages_installs_what_is_missing_with_apt_packages_own_command() -> None:
    installed = {"curl": {"7.88.1-10"}}
    reads: Counter[str] = Counter()
    ours = ops_of(lambda: p.deb_packages(name=OP, packages=["curl", "jq", "ufw"],
                                         installed=installed), reads=reads)
    theirs = ops_of(lambda: apt.packages(name=OP, packages=["curl", "jq", "ufw"]),
                    {"DebPackages": installed})
    assert ours == theirs
    assert ours[0].startswith("DEBIAN_FRONTEND=noninteractive apt-get -y")
    assert ours[0].endswith(" install jq ufw")
    assert reads == Counter()  # the caller's read, never its own


def test_deb_packages_converged_and_pinned_versions() -> None:
    installed = {"jq": {"1.6-2.1"}}
    assert ops_of(lambda: p.deb_packages(name=OP, packages=["jq"], installed=installed)) == []
    pinned = ops_of(lambda: p.deb_packages(name=OP, packages=["jq=1.7"], installed=installed))
    assert pinned[0].endswith(" install jq=1.7")


# -- systemd_unit ----------------------------------------------------------------------------

UNIT = "tailscaled.service"


def unit(running: bool, enabled: bool) -> dict[str, Any]:
    return {"active_state": "", "sub_state": "", "unit_file_state": "", "running": running,
            "enabled": enabled}


def live(running: bool, enabled: bool) -> dict[str, Any]:
    return {"SystemdStatus": {UNIT: running}, "SystemdEnabled": {UNIT: enabled}}


def test_systemd_unit_converged_reads_nothing() -> None:
    assert ops_of(lambda: p.systemd_unit(name=OP, unit=UNIT, state=unit(True, True))) == []
    assert ops_of(lambda: p.systemd_unit(name=OP, unit=UNIT, state=unit(False, True),
                                         running=None)) == []


@pytest.mark.parametrize(("running", "enabled"), [(False, False), (True, False), (False, True)])
def test_systemd_unit_drifted_gives_systemd_service_commands(running: bool, enabled: bool
                                                             ) -> None:
    ours = ops_of(lambda: p.systemd_unit(name=OP, unit=UNIT, state=unit(running, enabled)),
                  live(running, enabled))
    theirs = ops_of(lambda: systemd.service(name=OP, service=UNIT, running=True, enabled=True),
                    live(running, enabled))
    assert ours == theirs and ours


def test_systemd_unit_read_before_a_package_started_it_does_nothing_now() -> None:
    # read before `apt-get install tailscale` (which starts and enables tailscaled)
    ops = ops_of(lambda: p.systemd_unit(name=OP, unit=UNIT, state=unit(False, False)),
                 live(True, True))
    assert ops == []


# -- hostname, file_line ---------------------------------------------------------------------


def test_hostname() -> None:
    assert ops_of(lambda: p.hostname(name=OP, hostname="vps-1", current="vps-1")) == []
    facts = {"Hostname": "debian", "Which": "/usr/bin/hostnamectl"}
    assert ops_of(lambda: p.hostname(name=OP, hostname="vps-1", current="debian"), facts) == [
        "hostnamectl set-hostname vps-1"]
    # without hostnamectl, server.hostname also keeps /etc/hostname: it always runs
    facts = {"Hostname": "vps-1", "Which": None, "Os": "Linux", "Sha256File": None,
             "File": None, "TmpDir": "/tmp",
             "Directory": lambda path, **_: None if path == "/etc/hostname" else {"mode": 755}}
    ops = ops_of(lambda: p.hostname(name=OP, hostname="vps-1", current="vps-1",
                                    hostnamectl=False), facts)
    assert any("/etc/hostname" in x for x in ops)


LINE = r"^127\.0\.1\.1\s.*$"


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (["127.0.1.1 vps-1"], []),
        ([], ["echo '127.0.1.1 vps-1' >> /etc/hosts"]),
        (["127.0.1.1 debian"], None),  # sed replaces it
        (["127.0.1.1 vps-1 "], None),  # a trailing blank is a difference too
        (["127.0.1.1 vps-1", "127.0.1.1 debian"], None),
    ],
)
def test_file_line(current: list[str], expected: list[str] | None) -> None:
    facts = {"FindInFile": lambda pattern, **_: current if pattern == LINE else []}
    ours = ops_of(lambda: p.file_line(name=OP, path="/etc/hosts", line=LINE,
                                      replace="127.0.1.1 vps-1", current=current), facts)
    theirs = ops_of(lambda: files.line(name=OP, path="/etc/hosts", line=LINE,
                                       replace="127.0.1.1 vps-1"), facts)
    assert ours == theirs
    if expected is not None:
        assert ours == expected
    else:
        assert ours[0].startswith("sed -i")


# -- symlink, absent_file, downloaded_file ---------------------------------------------------

ZONE = "/usr/share/zoneinfo/UTC"


def test_symlink() -> None:
    right = file_state("777", "link", ZONE)
    assert ops_of(lambda: p.symlink(name=OP, path=c.LOCALTIME, target=ZONE, current=right)) == []
    wrong = file_state("777", "link", "/usr/share/zoneinfo/Europe/Berlin")
    facts = {"Link": {"link_target": wrong["link_target"], "user": "root", "group": "root"}}
    assert ops_of(lambda: p.symlink(name=OP, path=c.LOCALTIME, target=ZONE, current=wrong),
                  facts) == [f"rm -f {c.LOCALTIME}", f"ln -s {ZONE} {c.LOCALTIME}"]
    facts = {"Link": None, "Directory": {"mode": 755}}
    assert ops_of(lambda: p.symlink(name=OP, path=c.LOCALTIME, target=ZONE, current=None),
                  facts)[-1] == f"ln -s {ZONE} {c.LOCALTIME}"


def test_absent_file() -> None:
    assert ops_of(lambda: p.absent_file(name=OP, path=c.SUDOERS_FILE, current=None)) == []
    facts = {"File": {"mode": 440, "user": "root", "group": "root"}}
    assert ops_of(lambda: p.absent_file(name=OP, path=c.SUDOERS_FILE, current=file_state("440")),
                  facts) == [f"rm -f {c.SUDOERS_FILE}"]


KEY_URL = "https://pkgs.tailscale.com/stable/debian/bookworm.noarmor.gpg"
KEYRING = "/usr/share/keyrings/tailscale-archive-keyring.gpg"


def test_downloaded_file_exists_so_no_download_and_no_read() -> None:
    ops = ops_of(lambda: p.downloaded_file(name=OP, src=KEY_URL, dest=KEYRING, mode="0644",
                                           current=file_state("644")))
    assert ops == []


def test_downloaded_file_missing_is_downloaded() -> None:
    facts = {"File": None, "Which": "/usr/bin/curl", "TmpDir": "/tmp"}
    ops = ops_of(lambda: p.downloaded_file(name=OP, src=KEY_URL, dest=KEYRING, mode="0644",
                                           current=None), facts)
    assert ops[0].startswith(f"curl -sSLf {KEY_URL} -o ")
    assert ops[1].endswith(f" {KEYRING}") and ops[1].startswith("mv ")
    assert ops[2] == f"chmod 644 {KEYRING}"


def test_downloaded_file_with_the_wrong_mode_is_only_chmodded() -> None:
    facts = {"File": {"mode": 600, "user": "root", "group": "root"}}
    ops = ops_of(lambda: p.downloaded_file(name=OP, src=KEY_URL, dest=KEYRING, mode="0644",
                                           current=file_state("600")), facts)
    assert ops == [f"chmod 644 {KEYRING}"]


# -- config_file / sshd_drop_in with and without the pre-read state --------------------------


def test_config_file_uses_the_given_state_and_reads_one_fact_without_it() -> None:
    path, text = c.JOURNALD_DROP_IN, c.journald_content("500M")
    reads: Counter[str] = Counter()
    assert ops_of(lambda: c.config_file(name=OP, path=path, content=text,
                                        current=file_state(text=text)), reads=reads) == []
    assert reads == Counter()
    facts = {"ManagedFiles": managed_files({path: (text, 644)})}
    assert ops_of(lambda: c.config_file(name=OP, path=path, content=text), facts, reads) == []
    assert reads == Counter({"ManagedFiles": 2})  # once per evaluation (prepare, execute)
    fresh = ops_of(lambda: c.config_file(name=OP, path=path, content=text, current=None))
    assert fresh[0] == "mkdir -p /etc/systemd/journald.conf.d"
    assert fresh[-1] == f"mv -f {path}.k3sfleet-new {path}"


def test_sshd_drop_in_uses_the_given_state() -> None:
    text = "PasswordAuthentication no\n"
    assert ops_of(lambda: c.sshd_drop_in(name=OP, path=c.SSHD_DROP_IN, content=text,
                                         current=file_state(text=text))) == []
    ops = ops_of(lambda: c.sshd_drop_in(name=OP, path=c.SSHD_DROP_IN, content=text,
                                        current=file_state(text="old\n")))
    assert ops[-1] == "systemctl try-reload-or-restart ssh.service"


def test_needs_read() -> None:
    assert p.needs_read(None, ["/a"])
    assert p.needs_read({"/b": None}, ["/a"])
    assert not p.needs_read({"/a": None}, ["/a"])


def test_read_at_once_runs_the_reads_together_in_the_callers_host_context() -> None:
    import time

    import gevent
    from pyinfra.context import host as context_host

    seen: list[str] = []

    def read(value: int) -> int:
        gevent.sleep(0.2)  # a round trip
        seen.append(context_host.name)
        return value

    def deploy() -> None:
        started = time.monotonic()
        values = p.read_at_once({"a": lambda: read(1), "b": lambda: read(2),
                                 "c": lambda: read(3)})
        assert values == {"a": 1, "b": 2, "c": 3}
        assert time.monotonic() - started < 0.45  # one wait, not three
        with pytest.raises(ZeroDivisionError):
            p.read_at_once({"bad": lambda: 1 // 0, "good": lambda: read(4)})

    generate(deploy, {}, name="vps-1")
    assert seen == ["vps-1"] * 4
