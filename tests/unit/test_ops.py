"""deploys/ops.py: on a converged node no read but the host's snapshot and no command; on a fresh
or drifted one the commands pyinfra's own operation gives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from bootstrap_harness import generate, managed_files, systemd_units
from pyinfra.operations import apt, files, systemd

from k3sfleet.deploys import common as c
from k3sfleet.deploys import ops as p
from k3sfleet.deploys import readmodel

OP = "op"


def ops_of(call: Callable[[], Any], facts: dict[str, Any] | None = None,
           reads: Counter[str] | None = None) -> list[str]:
    """The commands of the one operation ``call`` adds (facts answered from ``facts``)."""
    return generate(lambda: call(), facts or {}, reads=reads)[OP]


def holding(path: str, text: str = "x", mode: int = 644) -> dict[str, Any]:
    """Snapshot sections of a node where ``path`` holds ``text`` with ``mode``."""
    return {"ManagedFiles": managed_files({path: (text, mode)})}


def linked(path: str, target: str) -> dict[str, Any]:
    return {"ManagedFiles": managed_files({}, {path: target})}


# -- packages --------------------------------------------------------------------------------


def test_deb_packages_installs_what_is_missing_with_apt_packages_own_command() -> None:
    installed = {"curl": {"7.88.1-10"}}
    reads: Counter[str] = Counter()
    ours = ops_of(lambda: p.packages(name=OP, packages=["curl", "jq", "ufw"]),
                  {"DebPackages": installed}, reads=reads)
    theirs = ops_of(lambda: apt.packages(name=OP, packages=["curl", "jq", "ufw"]),
                    {"DebPackages": installed})
    assert ours == theirs
    assert ours[0].startswith("DEBIAN_FRONTEND=noninteractive apt-get -y")
    assert ours[0].endswith(" install jq ufw")
    assert reads == Counter({"HostSnapshot": 1})  # the host's snapshot, no fact of its own


def test_deb_packages_converged_and_pinned_versions() -> None:
    installed = {"jq": {"1.6-2.1"}}
    table = {"DebPackages": installed}
    assert ops_of(lambda: p.packages(name=OP, packages=["jq"]), table) == []
    pinned = ops_of(lambda: p.packages(name=OP, packages=["jq=1.7"]), table)
    assert pinned[0].endswith(" install jq=1.7")


# -- service ---------------------------------------------------------------------------------

UNIT = "tailscaled.service"


def unit(running: bool, enabled: bool) -> dict[str, Any]:
    return {"SystemdUnits": systemd_units({UNIT: (running, enabled)})}


def live(running: bool, enabled: bool) -> dict[str, Any]:
    return {"SystemdStatus": {UNIT: running}, "SystemdEnabled": {UNIT: enabled}}


def test_service_converged_reads_nothing_else() -> None:
    reads: Counter[str] = Counter()
    assert ops_of(lambda: p.service(name=OP, unit=UNIT), unit(True, True), reads) == []
    assert ops_of(lambda: p.service(name=OP, unit=UNIT, running=None), unit(False, True)) == []
    assert reads == Counter({"HostSnapshot": 1})


@pytest.mark.parametrize(("running", "enabled"), [(False, False), (True, False), (False, True)])
def test_service_drifted_gives_systemd_service_commands(running: bool, enabled: bool) -> None:
    ours = ops_of(lambda: p.service(name=OP, unit=UNIT), unit(running, enabled))
    theirs = ops_of(lambda: systemd.service(name=OP, service=UNIT, running=True, enabled=True),
                    live(running, enabled))
    assert ours == theirs and ours


# -- hostname, hosts_line --------------------------------------------------------------------


def test_hostname() -> None:
    def named(name: str, hostnamectl: bool = True) -> dict[str, Any]:
        return {"SystemInfo": {"hostname": name, "hostnamectl": hostnamectl}}

    assert ops_of(lambda: p.hostname(name=OP, hostname="vps-1"), named("vps-1")) == []
    facts = {"Hostname": "debian", "Which": "/usr/bin/hostnamectl", **named("debian")}
    assert ops_of(lambda: p.hostname(name=OP, hostname="vps-1"), facts) == [
        "hostnamectl set-hostname vps-1"]
    # without hostnamectl, server.hostname also keeps /etc/hostname: it always runs
    facts = {"Hostname": "vps-1", "Which": None, "Os": "Linux", "Sha256File": None,
             "File": None, "TmpDir": "/tmp",
             "Directory": lambda path, **_: None if path == "/etc/hostname" else {"mode": 755},
             **named("vps-1", hostnamectl=False)}
    ops = ops_of(lambda: p.hostname(name=OP, hostname="vps-1"), facts)
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
    ours = ops_of(lambda: p.hosts_line(name=OP, line=LINE, replace="127.0.1.1 vps-1"),
                  {**facts, "SystemInfo": {"hosts_lines": current}})
    theirs = ops_of(lambda: files.line(name=OP, path="/etc/hosts", line=LINE,
                                       replace="127.0.1.1 vps-1"), facts)
    assert ours == theirs
    if expected is not None:
        assert ours == expected
    else:
        assert ours[0].startswith("sed -i")


# -- link, file(present=False), download -----------------------------------------------------

ZONE = "/usr/share/zoneinfo/UTC"


def test_link() -> None:
    assert ops_of(lambda: p.link(name=OP, path=c.LOCALTIME, target=ZONE),
                  linked(c.LOCALTIME, ZONE)) == []
    berlin = "/usr/share/zoneinfo/Europe/Berlin"
    facts = {"Link": {"link_target": berlin, "user": "root", "group": "root"},
             **linked(c.LOCALTIME, berlin)}
    assert ops_of(lambda: p.link(name=OP, path=c.LOCALTIME, target=ZONE),
                  facts) == [f"rm -f {c.LOCALTIME}", f"ln -s {ZONE} {c.LOCALTIME}"]
    facts = {"Link": None, "Directory": {"mode": 755}}
    assert ops_of(lambda: p.link(name=OP, path=c.LOCALTIME, target=ZONE),
                  facts)[-1] == f"ln -s {ZONE} {c.LOCALTIME}"


def test_absent_file() -> None:
    assert ops_of(lambda: p.file(name=OP, path=c.SUDOERS_FILE, present=False)) == []
    assert ops_of(lambda: p.file(name=OP, path=c.SUDOERS_FILE, present=False),
                  holding(c.SUDOERS_FILE, mode=440)) == [f"rm -f {c.SUDOERS_FILE}"]


KEY_URL = "https://pkgs.tailscale.com/stable/debian/bookworm.noarmor.gpg"
KEYRING = "/usr/share/keyrings/tailscale-archive-keyring.gpg"


def test_downloaded_file_exists_so_no_download_and_no_read() -> None:
    reads: Counter[str] = Counter()
    ops = ops_of(lambda: p.download(name=OP, src=KEY_URL, dest=KEYRING, mode="0644"),
                 holding(KEYRING), reads)
    assert ops == []
    assert reads == Counter({"HostSnapshot": 1})


def test_downloaded_file_missing_is_downloaded() -> None:
    facts = {"File": None, "Which": "/usr/bin/curl", "TmpDir": "/tmp"}
    ops = ops_of(lambda: p.download(name=OP, src=KEY_URL, dest=KEYRING, mode="0644"), facts)
    assert ops[0].startswith(f"curl -sSLf {KEY_URL} -o ")
    assert ops[1].endswith(f" {KEYRING}") and ops[1].startswith("mv ")
    assert ops[2] == f"chmod 644 {KEYRING}"


def test_downloaded_file_with_the_wrong_mode_is_only_chmodded() -> None:
    facts = {"File": {"mode": 600, "user": "root", "group": "root"}}
    ops = ops_of(lambda: p.download(name=OP, src=KEY_URL, dest=KEYRING, mode="0644"),
                 {**facts, **holding(KEYRING, mode=600)})
    assert ops == [f"chmod 644 {KEYRING}"]


# -- file: the one file primitive -----------------------------------------------------------


def test_file_decides_from_the_snapshot_alone() -> None:
    path, text = c.JOURNALD_DROP_IN, c.journald_content("500M")
    reads: Counter[str] = Counter()
    assert ops_of(lambda: p.file(name=OP, path=path, content=text), holding(path, text),
                  reads) == []
    assert reads == Counter({"HostSnapshot": 1})  # once for prepare and execute
    fresh = ops_of(lambda: p.file(name=OP, path=path, content=text))
    assert fresh[0] == "mkdir -p /etc/systemd/journald.conf.d"
    assert fresh[-1] == f"mv -f {path}.k3sfleet-new {path}"


def test_sshd_drop_in_through_the_file_primitive() -> None:
    text = "PasswordAuthentication no\n"

    def drop_in() -> None:
        p.file(name=OP, path=c.SSHD_DROP_IN, content=text, staging=c.SSHD_CANDIDATE,
               validate=c.sshd_validate, then=["systemctl try-reload-or-restart ssh.service"])

    assert ops_of(drop_in, holding(c.SSHD_DROP_IN, text)) == []
    ops = ops_of(drop_in, holding(c.SSHD_DROP_IN, "old\n"))
    assert ops[-1] == "systemctl try-reload-or-restart ssh.service"


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
        values = readmodel.read_at_once({"a": lambda: read(1), "b": lambda: read(2),
                                 "c": lambda: read(3)})
        assert values == {"a": 1, "b": 2, "c": 3}
        assert time.monotonic() - started < 0.45  # one wait, not three
        with pytest.raises(ZeroDivisionError):
            readmodel.read_at_once({"bad": lambda: 1 // 0, "good": lambda: read(4)})

    generate(deploy, {}, name="vps-1")
    assert seen == ["vps-1"] * 4


def test_file_secret_is_uploaded_0600_never_on_a_command_line_and_keeps_the_previous() -> None:
    from k3sfleet.secret import Secret

    path, secret = "/etc/rancher/k3s/config.yaml", "token: K10-SECRET-VALUE\n"
    uploads: dict[str, str] = {}
    old = holding(path, "token: old\n", 600)
    ops = generate(lambda: p.file(name=OP, path=path, content=Secret(secret), keep_previous=True),
                   old, uploads=uploads)[OP]
    staged = f"{path}.k3sfleet-new"
    assert not any("K10-SECRET-VALUE" in x for x in ops)
    assert uploads[staged] == secret
    assert ops[1].startswith('install -m 600 -o "${SUDO_USER:-$(id -un)}" /dev/null ')
    assert ops[2] == f"install -m 600 -o root /dev/null {staged}"
    assert ops[3].startswith(f"upload {staged} ")
    assert ops[-2:] == [f"cp -p {path} {path}.previous", f"mv -f {staged} {path}"]
    # the same secret: nothing; no previous file to keep on a new node
    assert generate(lambda: p.file(name=OP, path=path, content=Secret(secret)),
                    holding(path, secret, 600))[OP] == []
    fresh = generate(lambda: p.file(name=OP, path=path, content=Secret(secret),
                                    keep_previous=True), {})[OP]
    assert not any(x.startswith("cp -p") for x in fresh)


def test_file_fixes_mode_and_owner_in_place_and_validates_before_the_move() -> None:
    path, text = "/etc/sudoers.d/90-admins", "alice ALL=(ALL:ALL) NOPASSWD: ALL\n"
    wrong_owner = {"ManagedFiles": managed_files({path: (text, 640)}, owner="alice")}
    assert ops_of(lambda: p.file(name=OP, path=path, content=text, mode="0440"),
                  wrong_owner) == [f"chmod 0440 {path}", f"chown root:root {path}"]
    ops = ops_of(lambda: p.file(name=OP, path=path, content=text, mode="0440",
                                validate=["visudo", "-cf"], then=["true"]))
    staged = f"{path}.k3sfleet-new"
    assert ops[2] == f"chown root:root {staged} && chmod 0440 {staged}"
    assert ops[3].startswith(f"visudo -cf {staged} || {{ rm -f {staged} ;")
    assert ops[-2:] == [f"mv -f {staged} {path}", "true"]


def test_file_renders_a_template_and_is_removed_with_present_false() -> None:
    uploads: dict[str, str] = {}
    path = c.JOURNALD_DROP_IN
    generate(lambda: p.file(name=OP, path=path, template="common/journald.conf.j2",
                            context={"max_use": "1G"}), {}, uploads=uploads)
    assert uploads[f"{path}.k3sfleet-new"] == c.journald_content("1G")
    assert ops_of(lambda: p.file(name=OP, path=path, present=False),
                  holding(path)) == [f"rm -f {path}"]
