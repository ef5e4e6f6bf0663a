"""deploys/common.py: the commands a fresh node gets, none on a converged node, and the refusals."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from bootstrap_harness import changed, files_fact, generate, managed_files, sha, systemd_units
from pyinfra.api import Config

from k3sfleet.deploys import common as c
from k3sfleet.errors import ConfigError
from k3sfleet.settings import default_values

DEBIAN: dict[str, Any] = {
    "id": "debian", "version_id": "12", "codename": "bookworm",
    "pretty_name": "Debian GNU/Linux 12 (bookworm)", "container": None,
    "active_swaps": 1, "fstab_swaps": 1, "modules": ["ext4"], "sshd_ports": ["22"],
    "hostname": "debian", "hostnamectl": True, "hosts_lines": [],
}
LOCALTIME_FRESH = {c.LOCALTIME: "/usr/share/zoneinfo/Etc/UTC"}


def fresh_facts(**info: Any) -> dict[str, Any]:
    """A fresh node: the batched facts, and pyinfra's own facts its operations read when they
    run on a change."""
    return {
        "SystemInfo": {**DEBIAN, **info},
        "ManagedFiles": managed_files({}, LOCALTIME_FRESH),
        "SystemdUnits": systemd_units({}),
        **files_fact({}),
        "DebPackages": {},
        "TmpDir": "/tmp",
        "Date": datetime(2026, 1, 1),
        "Hostname": "debian",
        "Which": "/usr/bin/hostnamectl",
        "Link": {"link_target": "/usr/share/zoneinfo/Etc/UTC", "user": "root", "group": "root"},
        "FindInFile": [],
        "SystemdStatus": {"systemd-timesyncd.service": False},
        "SystemdEnabled": {"systemd-timesyncd.service": False},
        "Users": {},
        "Groups": [],
        "Directory": None,
        "AuthorizedKeys": [],
        "Os": "Linux",
    }


def converged_contents(data: dict[str, Any] | None = None) -> dict[str, tuple[str, int]]:
    """The files of a node where the deploy already ran with ``data``: path -> (text, mode)."""
    full = {"ssh_user": "k3sfleet", **(data or {})}
    sysctls = c.DEFAULTS["common_sysctls"].value
    modules = c.DEFAULTS["common_kernel_modules"].value
    return {
        c.APT_POLICY_FILE: (c.apt_policy_content(), 644),
        c.AUTO_UPGRADES_FILE: (c.auto_upgrades_content(True), 644),
        c.UNATTENDED_FILE: (c.unattended_content(), 644),
        c.TIMEZONE_FILE: ("UTC\n", 644),
        c.JOURNALD_DROP_IN: (c.journald_content("500M"), 644),
        c.SSHD_DROP_IN: (c.sshd_content({**default_values(c.DEFAULTS), **full}), 644),
        c.MODULES_FILE: (c.modules_content(modules), 644),
        c.SYSCTL_FILE: (c.sysctl_content(sysctls), 644),
    }


def converged_facts(data: dict[str, Any], name: str = "node-1", **info: Any) -> dict[str, Any]:
    """Facts of a node where the deploy already ran with ``data``: only the batched facts, so a
    test fails if any operation reads one of pyinfra's own facts on a converged node."""
    modules = c.DEFAULTS["common_kernel_modules"].value
    packages = c.DEFAULTS["common_packages"].value + ["unattended-upgrades", "apt-listchanges"]
    return {
        "SystemInfo": {**DEBIAN, "active_swaps": 0, "fstab_swaps": 0,
                       "modules": ["ext4", *modules], "hostname": name,
                       "hosts_lines": [f"127.0.1.1 {name}"], **info},
        "ManagedFiles": managed_files(converged_contents(data),
                                      {c.LOCALTIME: "/usr/share/zoneinfo/UTC"}),
        "SystemdUnits": systemd_units({c.TIMESYNC_UNIT: (True, True)}),
        "DebPackages": {p: {"1.0"} for p in packages},
    }


def test_fresh_node_gets_every_step() -> None:
    ops = generate(c.common, fresh_facts())
    flat = [cmd for cmds in ops.values() for cmd in cmds]
    assert any(x.startswith("apt-get update") for x in flat)
    install = next(x for x in flat if " install " in x)
    for package in ("sudo", "systemd-timesyncd", "unattended-upgrades", "jq"):
        assert package in install.split()
    assert "hostnamectl set-hostname node-1" in flat
    assert "echo '127.0.1.1 node-1' >> /etc/hosts" in flat
    assert "ln -s /usr/share/zoneinfo/UTC /etc/localtime" in flat
    assert "systemctl start systemd-timesyncd.service" in flat
    assert "systemctl restart systemd-journald.service" in flat
    assert ["modprobe br_netfilter", "modprobe overlay"] == ops["k3sfleet common | kernel modules"]
    assert "sysctl -e -p /etc/sysctl.d/90-k3sfleet.conf" in flat
    swap = ops["k3sfleet common | swap off"]
    assert swap[0] == "swapoff -a" and "/etc/fstab" in swap[1]
    upload = f"upload {c.AUTO_UPGRADES_FILE}.k3sfleet-new {sha(c.auto_upgrades_content(True))}"
    assert upload in flat


def test_sshd_drop_in_is_validated_before_it_replaces_the_old_one_and_before_reload() -> None:
    uploads: dict[str, str] = {}
    ops = generate(c.common, fresh_facts(), uploads=uploads)
    sshd = ops["k3sfleet common | sshd hardening"]
    assert sshd[0].startswith("upload /etc/ssh/k3sfleet-sshd.candidate ")
    test_at = next(i for i, x in enumerate(sshd) if "sshd -t -f" in x)
    move_at = next(i for i, x in enumerate(sshd) if f"mv -f /etc/ssh/k3sfleet-sshd.candidate "
                   f"{c.SSHD_DROP_IN}" in x)
    reload_at = next(i for i, x in enumerate(sshd) if "systemctl try-reload-or-restart ssh" in x)
    assert test_at < move_at < reload_at == len(sshd) - 1
    # The test command fails (exit 1) without touching the live drop-in when sshd rejects it.
    rejected = sshd[test_at].split(" else ")[1]
    assert "exit 1" in rejected and "mv " not in sshd[test_at] and "systemctl" not in rejected
    assert "rm -f /etc/ssh/k3sfleet-sshd.test /etc/ssh/k3sfleet-sshd.candidate" in rejected
    text = uploads["/etc/ssh/k3sfleet-sshd.candidate"]
    lines = dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["PasswordAuthentication"] == "no"
    assert lines["KbdInteractiveAuthentication"] == "no"
    assert lines["PermitRootLogin"] == "no"
    assert lines["AllowUsers"] == "k3sfleet"
    assert lines["AllowTcpForwarding"] == "yes"


def test_allow_users_keeps_the_session_user_and_adds_admins() -> None:
    data = {"ssh_user": "deployer", "common_admin_users": [{"name": "alice", "keys": []}],
            "common_ssh_allow_users": ["bob", "alice"]}
    assert c.allow_users(data) == ["deployer", "alice", "bob"]
    settings = c.sshd_settings({**data, "common_sshd_options": {"MaxAuthTries": "2"}})
    assert settings["AllowUsers"] == "deployer alice bob"
    assert settings["MaxAuthTries"] == "2"


def test_admins_get_keys_and_visudo_checked_sudo() -> None:
    data = {"common_admin_users": [{"name": "alice", "keys": ["ssh-ed25519 AAAAC3 alice@x"]}]}
    uploads: dict[str, str] = {}
    ops = generate(c.common, fresh_facts(), data, uploads=uploads)
    admin = ops["k3sfleet common | admin alice"]
    assert admin[0].startswith("useradd") and "alice" in admin[0].split()
    assert any("ssh-ed25519 AAAAC3 alice@x" in x for x in admin)
    sudo = ops["k3sfleet common | admins' sudo"]
    assert any(x.startswith(f"visudo -cf {c.SUDOERS_FILE}.k3sfleet-new") for x in sudo)
    assert sudo[-1] == f"mv -f {c.SUDOERS_FILE}.k3sfleet-new {c.SUDOERS_FILE}"
    assert "alice ALL=(ALL:ALL) NOPASSWD: ALL" in uploads[f"{c.SUDOERS_FILE}.k3sfleet-new"]


def test_converged_node_gets_no_command() -> None:
    ops = generate(c.common, converged_facts({}))
    assert len(ops) >= 15
    assert changed(ops) == {}


def drifted(**contents: tuple[str, int]) -> dict[str, Any]:
    """Converged facts but for the files ``contents`` (keyword: the path's constant in
    deploys.common)."""
    files = converged_contents()
    files.update({getattr(c, key): value for key, value in contents.items()})
    return {**converged_facts({}),
            "ManagedFiles": managed_files(files, {c.LOCALTIME: "/usr/share/zoneinfo/UTC"})}


def test_one_drifted_file_changes_only_that_file() -> None:
    facts = drifted(JOURNALD_DROP_IN=(c.journald_content("2G"), 644))
    ops = changed(generate(c.common, facts))
    assert list(ops) == ["k3sfleet common | journald size cap"]
    assert ops["k3sfleet common | journald size cap"][-1] == (
        "systemctl restart systemd-journald.service"
    )


def test_wrong_mode_is_fixed_without_rewriting_or_restarting() -> None:
    facts = drifted(SYSCTL_FILE=(c.sysctl_content(c.DEFAULTS["common_sysctls"].value), 666))
    ops = changed(generate(c.common, facts))
    assert ops == {"k3sfleet common | k3s sysctls": [f"chmod 0644 {c.SYSCTL_FILE}"]}


def test_in_a_container_modules_are_written_but_not_loaded() -> None:
    facts = fresh_facts(container="systemd-nspawn")
    ops = generate(c.common, facts)
    assert ops["k3sfleet common | kernel modules"] == []
    assert any(x.startswith(f"upload {c.MODULES_FILE}")
               for x in ops["k3sfleet common | kernel modules at boot"])
    assert "systemctl start systemd-timesyncd.service" not in ops["k3sfleet common | time sync"]
    assert "systemctl enable systemd-timesyncd.service" in ops["k3sfleet common | time sync"]


@pytest.mark.parametrize(
    "release",
    [
        {"id": "debian", "version_id": "11", "pretty_name": "Debian GNU/Linux 11 (bullseye)"},
        {"id": "ubuntu", "version_id": "20.04", "pretty_name": "Ubuntu 20.04.6 LTS"},
        {"id": "rocky", "version_id": "9.3", "pretty_name": "Rocky Linux 9.3"},
    ],
)
def test_unsupported_systems_are_refused_naming_host_and_release(release: dict[str, str]) -> None:
    with pytest.raises(c.DeployError) as e:
        generate(c.common, fresh_facts(**release))
    message = str(e.value)
    assert message.startswith("node-1: ") and release["pretty_name"] in message
    assert "Debian 12" in message and "Ubuntu 24.04" in message


@pytest.mark.parametrize(
    ("release", "version"), [("ubuntu", "22.04"), ("ubuntu", "24.04"), ("debian", "12")]
)
def test_supported_systems_pass(release: str, version: str) -> None:
    ops = generate(c.common, fresh_facts(id=release, version_id=version))
    assert ops["k3sfleet common | sshd hardening"]


def test_root_session_with_root_login_off_is_refused_before_anything() -> None:
    with pytest.raises(ConfigError, match="lock this session out"):
        generate(c.common, fresh_facts(), {"ssh_user": "root"})
    ops = generate(c.common, fresh_facts(),
                   {"ssh_user": "root", "common_ssh_permit_root_login": "prohibit-password"})
    assert ops["k3sfleet common | sshd hardening"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"common_admin_users": [{"name": "Bad Name"}]}, "valid user name"),
        ({"common_sshd_options": {"Bad Key": "x"}}, "not an sshd keyword"),
        ({"common_sshd_options": {"Banner": "a\nb"}}, "not an sshd keyword"),
        ({"common_timezone": "../../etc/passwd"}, "not a timezone"),
        ({"common_journald_max_use": "lots"}, "COMMON_JOURNALD_MAX_USE"),
        ({"common_kernel_modules": ["br;rm -rf /"]}, "not a module name"),
    ],
)
def test_bad_data_is_a_config_error(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        generate(c.common, fresh_facts(), data)


def test_unattended_upgrades_off_writes_zero_and_skips_the_package() -> None:
    uploads: dict[str, str] = {}
    ops = generate(c.common, fresh_facts(), {"common_unattended_upgrades": False}, uploads=uploads)
    install = next(x for cmds in ops.values() for x in cmds if " install " in x)
    assert "unattended-upgrades" not in install.split()
    assert 'APT::Periodic::Unattended-Upgrade "0";' in uploads[
        f"{c.AUTO_UPGRADES_FILE}.k3sfleet-new"]
    assert "k3sfleet common | unattended-upgrades policy" not in ops


def test_diff_shows_the_changed_lines_of_a_config_file(caplog: pytest.LogCaptureFixture) -> None:
    old = c.journald_content("2G")
    facts = drifted(JOURNALD_DROP_IN=(old, 644))
    # --diff reads the old content of the file that changes (only then)
    facts["FileContents"] = lambda path, **kw: old.splitlines() if path == c.JOURNALD_DROP_IN \
        else pytest.fail(f"read {path}")
    with caplog.at_level("INFO", logger="pyinfra"):
        generate(c.common, facts, config=Config(DIFF=True))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"Will modify {c.JOURNALD_DROP_IN}" in text
    assert "SystemMaxUse=2G" in text and "SystemMaxUse=500M" in text


def test_package_lists_are_refreshed_only_when_a_package_is_missing() -> None:
    facts = converged_facts({})
    stamp = "/var/lib/apt/periodic/update-success-stamp"
    stale = {"mtime": datetime(2025, 1, 1), "mode": 644, "user": "root", "group": "root"}
    facts["File"] = lambda path, **kw: stale if path == stamp else pytest.fail(f"read {path}")
    facts["Date"] = datetime(2026, 1, 1, 12, 0)
    assert changed(generate(c.common, facts)) == {}  # a month later: still no change
    facts["DebPackages"] = {k: v for k, v in facts["DebPackages"].items() if k != "jq"}
    reads: Counter[str] = Counter()
    ops = changed(generate(c.common, facts, reads=reads))
    assert ops["k3sfleet common | apt cache"][0] == "apt-get update"
    assert ops["k3sfleet common | base packages"][0].endswith("install jq")
    assert reads["HostSnapshot"] == 1  # the install is decided on the one read
    # updated recently: no apt-get update, the install all the same
    facts["File"] = lambda path, **kw: {**stale, "mtime": datetime(2026, 1, 1, 11, 55)}
    ops = changed(generate(c.common, facts))
    assert list(ops) == ["k3sfleet common | base packages"]


def test_called_alone_common_reads_what_it_needs_once() -> None:
    facts = converged_facts({})
    reads: Counter[str] = Counter()
    assert changed(generate(c.common, facts, reads=reads)) == {}
    assert reads == Counter({"HostSnapshot": 1})  # release, packages, files, units: one read
