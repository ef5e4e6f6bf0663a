"""Base system of every node: apt, packages, admins, hostname, time, journald, SSH, kernel.

The first of the bootstrap deploys (``deploys/bootstrap.py``: common -> firewall -> tailscale).
It refuses any system but Debian 12 and Ubuntu 22.04/24.04 before changing anything.

SSH hardening is an sshd drop-in that sorts before every other one (sshd keeps the first value it
reads). A new drop-in is validated with ``sshd -t`` together with the rest of the configuration
before it replaces the old one, and sshd is reloaded only after that: a bad value fails the deploy
and leaves sshd exactly as it was, so nobody is locked out. ``AllowUsers`` always includes the SSH
user of the running session, and TCP forwarding stays on (k3sfleet's API tunnel uses it).

Example::

    from k3sfleet.deploys.common import common

    common()
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.operations import server

from k3sfleet.deploys.ops import apt_update, file, hostname, hosts_line, link, packages, service
from k3sfleet.deploys.readmodel import record, section, watch
from k3sfleet.errors import K3sfleetError, refuse_host_problems
from k3sfleet.facts.os import HOSTS_LINE_RE, SystemInfoData, unsupported_os
from k3sfleet.facts.snapshot import SnapshotData
from k3sfleet.inventory import login_user
from k3sfleet.settings import Default, data_value, default_values
from k3sfleet.templating import render

SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-k3sfleet.conf"
SUDOERS_FILE = "/etc/sudoers.d/90-k3sfleet-admins"
JOURNALD_DROP_IN = "/etc/systemd/journald.conf.d/00-k3sfleet.conf"
MODULES_FILE = "/etc/modules-load.d/k3sfleet.conf"
SYSCTL_FILE = "/etc/sysctl.d/90-k3sfleet.conf"
APT_POLICY_FILE = "/etc/apt/apt.conf.d/90k3sfleet"
AUTO_UPGRADES_FILE = "/etc/apt/apt.conf.d/20auto-upgrades"
UNATTENDED_FILE = "/etc/apt/apt.conf.d/52k3sfleet-unattended-upgrades"
TIMEZONE_FILE = "/etc/timezone"
LOCALTIME = "/etc/localtime"
TIMESYNC_UNIT = "systemd-timesyncd.service"
SSHD_CANDIDATE = "/etc/ssh/k3sfleet-sshd.candidate"
SSHD_TEST = "/etc/ssh/k3sfleet-sshd.test"

#: What ``common`` consults in the host's snapshot (``deploys.readmodel.watch``).
FILES: tuple[str, ...] = (
    APT_POLICY_FILE, AUTO_UPGRADES_FILE, UNATTENDED_FILE, SUDOERS_FILE, TIMEZONE_FILE,
    JOURNALD_DROP_IN, SSHD_DROP_IN, MODULES_FILE, SYSCTL_FILE,
)
LINKS: tuple[str, ...] = (LOCALTIME,)
UNITS: tuple[str, ...] = (TIMESYNC_UNIT,)
EXTRAS: tuple[str, ...] = ("system", "packages")

NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
TIMEZONE_RE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
SSHD_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")

DEFAULTS: dict[str, Default] = {
    "common_apt_cache_time": Default(
        3600, "seconds between `apt-get update`s (run only when a package is missing)"),
    "common_packages": Default(
        ["ca-certificates", "curl", "gnupg", "iproute2", "jq", "kmod", "less", "procps", "sudo",
         "systemd-timesyncd"],
        "base packages (the lab's package list has them all)"),
    "common_admin_users": Default(
        [], '`[{"name": "alice", "keys": ["ssh-ed25519 ..."]}]`: user, home, keys, passwordless '
            "sudo (checked with `visudo`)"),
    "common_ssh_allow_users": Default(
        [], "more users sshd lets in (the SSH user of the run and the admins always are)"),
    "common_sshd_options": Default(
        {}, 'extra or overriding sshd settings (`{"MaxAuthTries": "3"}`)'),
    "common_kernel_modules": Default(
        ["br_netfilter", "overlay"],
        "modules k3s needs, loaded now (not in a container) and at every boot"),
    "common_sysctls": Default(
        {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1",
         "net.bridge.bridge-nf-call-iptables": "1", "net.bridge.bridge-nf-call-ip6tables": "1"},
        "sysctls persisted in `/etc/sysctl.d/90-k3sfleet.conf`, applied when the file changes"),
    "common_swap_off": Default(True, "swap off now and in `/etc/fstab` (the kubelet expects none)"),
}


class DeployError(K3sfleetError):
    """A node cannot be deployed as asked (printed without a traceback)."""


# -- operations ------------------------------------------------------------------------------


def sshd_validate(candidate: str) -> StringCommand:
    """``sshd -t`` on the whole configuration with ``candidate`` read first; on rejection the
    candidate goes, sshd's own message stays on stderr, and the command fails."""
    return StringCommand(
        "printf", QuoteString("Include %s\\nInclude /etc/ssh/sshd_config\\n"), candidate,
        ">", SSHD_TEST, "&&",
        "if", "sshd", "-t", "-f", SSHD_TEST, ";", "then",
        "rm", "-f", SSHD_TEST, ";",
        "else",
        "rm", "-f", SSHD_TEST, candidate, ";",
        "echo", QuoteString(
            f"k3sfleet: sshd rejected the new settings for {SSHD_DROP_IN} (the message from "
            "sshd is above); the old configuration was kept and sshd was not reloaded"
        ), ">&2", ";", "exit", "1", ";",
        "fi",
    )


@operation()
def swap_off() -> Generator[Any, None, None]:
    """Swap off now (``swapoff -a``) and at boot (swap lines in /etc/fstab commented out).

    Example::

        swap_off()
    """
    system = section("system")
    active_swaps, fstab_swaps = system["active_swaps"], system["fstab_swaps"]

    def effect(snap: SnapshotData) -> None:
        snap["system"]["active_swaps"] = snap["system"]["fstab_swaps"] = 0

    if active_swaps or fstab_swaps:
        record(effect)
    if active_swaps:
        yield "swapoff -a"
    if fstab_swaps:
        yield StringCommand(
            "sed", "-i", "-E",
            QuoteString(r"s/^([^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+"
                        r"[[:space:]]+swap[[:space:]].*)$/# k3sfleet (swap off): \1/"),
            "/etc/fstab",
        )
    if not active_swaps and not fstab_swaps:
        host.noop("swap is off")


@operation()
def kernel_modules(modules: Sequence[str]) -> Generator[Any, None, None]:
    """Load ``modules`` that are not ``loaded`` (skipped, with a message, in a container).

    Example::

        kernel_modules(modules=["br_netfilter"])   # modprobe br_netfilter
    """
    system = section("system")
    loaded, container = system["modules"], system["container"]
    missing = [m for m in modules if m not in loaded]
    if not missing:
        host.noop(f"kernel modules {', '.join(modules)} are loaded")
        return
    if container:
        host.noop(
            f"in a container ({container}): not loading kernel modules {', '.join(missing)} "
            f"(the host's kernel decides); {MODULES_FILE} is still written"
        )
        return

    def effect(snap: SnapshotData) -> None:
        snap["system"]["modules"] = [*snap["system"]["modules"], *missing]

    record(effect)
    for module in missing:
        yield StringCommand("modprobe", QuoteString(module))


# -- rendering (templates/common/, unit-tested) ----------------------------------------------


def allow_users(data: Mapping[str, Any]) -> list[str]:
    """The users sshd lets in: the SSH user of this run first, then admins and extras."""
    users: list[str] = []
    ssh_user = login_user(data)
    admins = [a["name"] for a in data.get("common_admin_users") or []]
    for name in [ssh_user, *admins, *(data.get("common_ssh_allow_users") or [])]:
        if name not in users:
            users.append(str(name))
    return users


def sshd_settings(data: Mapping[str, Any]) -> dict[str, str]:
    """The sshd settings of the drop-in, in order (extras from ``common_sshd_options`` last)."""
    settings = {
        "PermitRootLogin": str(data_value(data, "common_ssh_permit_root_login")),
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "PubkeyAuthentication": "yes",
        "PermitEmptyPasswords": "no",
        "AllowUsers": " ".join(allow_users(data)),
        # k3sfleet reaches the Kubernetes API through an SSH tunnel.
        "AllowTcpForwarding": "yes",
        "X11Forwarding": "no",
        "MaxAuthTries": "4",
        "LoginGraceTime": "30",
    }
    for key, value in (data.get("common_sshd_options") or {}).items():
        settings[str(key)] = str(value)
    return settings


def sshd_content(data: Mapping[str, Any]) -> str:
    """The text of the sshd drop-in."""
    return render("common/sshd.conf.j2", settings=sshd_settings(data))


def sudoers_content(admins: Iterable[Mapping[str, Any]]) -> str:
    """Passwordless sudo for each admin (they log in with keys only)."""
    return render("common/sudoers.j2", admins=list(admins))


def auto_upgrades_content(enabled: bool) -> str:
    return render("common/20auto-upgrades.j2", enabled=enabled)


def unattended_content() -> str:
    return render("common/unattended-upgrades.conf.j2")


def apt_policy_content() -> str:
    return render("common/apt-policy.conf.j2")


def journald_content(max_use: str) -> str:
    return render("common/journald.conf.j2", max_use=max_use)


def modules_content(modules: Iterable[str]) -> str:
    return render("common/modules.conf.j2", modules=list(modules))


def sysctl_content(sysctls: Mapping[str, Any]) -> str:
    return render("common/sysctl.conf.j2", sysctls=dict(sysctls))


def timezone_content(timezone: str) -> str:
    return render("common/timezone.j2", timezone=timezone)


def problems(data: Mapping[str, Any], *, session: bool = True) -> list[str]:
    """What is wrong with the common_* data of a node, as text (empty: all good).

    ``session=False`` leaves out the check of the SSH user of the run (not known before pyinfra
    resolves the host).
    """
    found = []
    permit_root = data_value(data, "common_ssh_permit_root_login")
    if session and login_user(data) == "root" and permit_root == "no":
        found.append(
            "ssh_user is root but COMMON_SSH_PERMIT_ROOT_LOGIN=no would lock this session out: "
            "bootstrap as a sudo user, or set it to prohibit-password"
        )
    admins = data.get("common_admin_users") or []
    if not isinstance(admins, list):
        found.append("common_admin_users must be a list of {name, keys}")
        admins = []
    for admin in admins:
        name = admin.get("name") if isinstance(admin, Mapping) else None
        if not isinstance(name, str) or not NAME_RE.match(name):
            found.append(f"common_admin_users: {admin!r} needs a valid user name")
        elif not isinstance(admin.get("keys", []), list):
            found.append(f"common_admin_users: {name}: keys must be a list of public keys")
    for name in data.get("common_ssh_allow_users") or []:
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.@*?-]+$", name):
            found.append(f"common_ssh_allow_users: {name!r} is not a user pattern")
    for key, value in (data.get("common_sshd_options") or {}).items():
        if not SSHD_KEY_RE.match(str(key)) or "\n" in str(value):
            found.append(f"common_sshd_options: {key!r} is not an sshd keyword with one-line value")
    timezone = str(data_value(data, "common_timezone"))
    if not TIMEZONE_RE.match(timezone) or ".." in timezone:
        found.append(f"COMMON_TIMEZONE {timezone!r} is not a timezone name")
    if not re.match(r"^[0-9]+[KMGT]?$", str(data.get("common_journald_max_use") or "")):
        found.append("COMMON_JOURNALD_MAX_USE must look like 500M")
    for module in data.get("common_kernel_modules") or []:
        if not re.match(r"^[A-Za-z0-9_-]+$", str(module)):
            found.append(f"common_kernel_modules: {module!r} is not a module name")
    for key in data.get("common_sysctls") or {}:
        if not re.match(r"^[a-z0-9_.-]+$", str(key)):
            found.append(f"common_sysctls: {key!r} is not a sysctl name")
    return found


# -- the deploy: named steps -----------------------------------------------------------------


def check_supported(info: SystemInfoData | None) -> None:
    """Raise ``DeployError`` naming the host when its release is not supported."""
    problem = unsupported_os(info)
    if problem:
        raise DeployError(f"{host.name}: {problem}; nothing was changed")


def apt_setup(data: Any) -> None:
    """apt's policy, the package lists (refreshed only when something is to be installed, so
    a converged node stays unchanged however long ago the last run was), the base packages and
    unattended security upgrades."""
    file(name="apt policy", path=APT_POLICY_FILE, content=apt_policy_content())
    unattended = bool(data.common_unattended_upgrades)
    wanted = list(data.common_packages)
    if unattended:
        wanted += ["unattended-upgrades", "apt-listchanges"]
    installed = section("packages")
    if any(p not in installed for p in wanted):
        apt_update(name="apt cache", cache_time=int(data.common_apt_cache_time))
    packages(name="base packages", packages=wanted)
    file(name="automatic upgrades", path=AUTO_UPGRADES_FILE,
         content=auto_upgrades_content(unattended))
    if unattended:
        file(name="unattended-upgrades policy", path=UNATTENDED_FILE,
             content=unattended_content())


def admins(data: Any) -> None:
    """The admins with their keys, and their passwordless sudo (checked with visudo)."""
    users = list(data.common_admin_users or [])
    for admin in users:
        server.user(  # noqa: S604 (a login shell, not a subprocess)
            name=f"admin {admin['name']}", user=admin["name"], shell="/bin/bash",
            create_home=True, public_keys=list(admin.get("keys") or []),
        )
    if users:
        file(name="admins' sudo", path=SUDOERS_FILE, content=sudoers_content(users),
             mode="0440", validate=["visudo", "-cf"])
    else:
        file(name="no admins' sudo", path=SUDOERS_FILE, present=False)


def identity_and_time(data: Any, container: str | None) -> None:
    """The hostname and its /etc/hosts line, the timezone, time sync, journald's size cap."""
    hostname(name="hostname", hostname=host.name)
    hosts_line(name="/etc/hosts names this node", line=f"^{HOSTS_LINE_RE}$",
               replace=f"127.0.1.1 {host.name}")
    timezone = str(data.common_timezone)
    link(name="timezone", path=LOCALTIME, target=f"/usr/share/zoneinfo/{timezone}")
    file(name="/etc/timezone", path=TIMEZONE_FILE, content=timezone_content(timezone))
    # systemd-timesyncd does not run in containers (ConditionVirtualization=!container).
    service(name="time sync", unit=TIMESYNC_UNIT, running=None if container else True,
            enabled=True)
    file(name="journald size cap", path=JOURNALD_DROP_IN,
         content=journald_content(str(data.common_journald_max_use)),
         then=["systemctl restart systemd-journald.service"])


def ssh_hardening(data: Any) -> None:
    """The sshd drop-in, validated with the whole configuration before it replaces the old one;
    sshd reloaded after (existing sessions survive a reload; socket-activated sshd, Ubuntu
    24.04, picks it up itself)."""
    file(name="sshd hardening", path=SSHD_DROP_IN, content=sshd_content(data.dict()),
         staging=SSHD_CANDIDATE, validate=sshd_validate,
         then=["systemctl try-reload-or-restart ssh.service"])


def kernel(data: Any) -> None:
    """What k3s needs from the kernel: modules (now and at boot), sysctls, no swap."""
    modules = [str(m) for m in data.common_kernel_modules]
    file(name="kernel modules at boot", path=MODULES_FILE, content=modules_content(modules))
    kernel_modules(name="kernel modules", modules=modules)
    file(name="k3s sysctls", path=SYSCTL_FILE, content=sysctl_content(data.common_sysctls),
         then=[StringCommand("sysctl", "-e", "-p", SYSCTL_FILE)])
    if data.common_swap_off:
        swap_off(name="swap off")


@deploy("k3sfleet common", data_defaults=default_values(DEFAULTS))
def common() -> None:
    """Prepare a fresh Debian/Ubuntu VPS for k3s; refuses bad data and unsupported releases
    before anything changes.

    Example::

        common()
    """
    data = host.data
    refuse_host_problems(host.name, problems(data.dict()))
    watch(files=FILES, links=LINKS, units=UNITS, extras=EXTRAS)
    system = section("system")
    check_supported(system)
    apt_setup(data)
    admins(data)
    identity_and_time(data, system["container"])
    ssh_hardening(data)
    kernel(data)
