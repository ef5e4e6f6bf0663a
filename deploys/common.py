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

import hashlib
import posixpath
import re
from collections.abc import Generator, Iterable, Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, deploy, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import FileContents
from pyinfra.operations import apt, server
from pyinfra.operations.util.files import generate_color_diff

from k3sfleet.deploys.preread import (
    UNSET,
    absent_file,
    deb_packages,
    file_line,
    hostname,
    needs_read,
    symlink,
    systemd_unit,
)
from k3sfleet.errors import ConfigError, K3sfleetError
from k3sfleet.facts.files import FileState, ManagedFiles, ManagedFilesData
from k3sfleet.facts.os import HOSTS_LINE_RE, SystemInfo, SystemInfoData, unsupported_os
from k3sfleet.facts.systemd import SystemdUnits, SystemdUnitsData
from k3sfleet.inventory import login_user
from k3sfleet.settings import Default, data_value, default_values

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

#: What ``common`` reads in one ``ManagedFiles`` and one ``SystemdUnits`` fact (the entry file
#: reads them once for all the bootstrap deploys and passes them in).
FILES: tuple[str, ...] = (
    APT_POLICY_FILE, AUTO_UPGRADES_FILE, UNATTENDED_FILE, SUDOERS_FILE, TIMEZONE_FILE,
    JOURNALD_DROP_IN, SSHD_DROP_IN, MODULES_FILE, SYSCTL_FILE,
)
LINKS: tuple[str, ...] = (LOCALTIME,)
UNITS: tuple[str, ...] = (TIMESYNC_UNIT,)

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




def _file_state(path: str, current: FileState | None) -> tuple[str | None, FileState | None]:
    """The sha256 of ``path`` and its state if it is a regular file (else ``None``); read
    here when ``current`` is ``UNSET``."""
    if current is UNSET:
        current = host.get_fact(ManagedFiles, paths=[path]).get(path)
    if current is None:
        return None, None
    return current["sha256"], current if current["type"] == "file" else None


def _show_diff(path: str, content: str) -> None:
    current = host.get_fact(FileContents, path=path) or []
    host.log(f"Will modify {path}", logger.info)
    for line in generate_color_diff([f"{x}\n" for x in current], content.splitlines(True)):
        logger.info("  %s", line)


@operation()
def config_file(
    path: str,
    content: str,
    mode: str = "0644",
    validate: Sequence[str] = (),
    then: Sequence[str | StringCommand] = (),
    current: FileState | None = UNSET,
) -> Generator[Any, None, None]:
    """A root-owned file with exactly ``content``; on change run ``then`` (a reload, ...).

    The new content goes to ``<path>.k3sfleet-new`` first; ``validate`` (an argv prefix, the
    candidate's path appended) must accept it before it replaces ``path`` (``mv``, atomic).
    ``current`` is the file's ``ManagedFiles`` value when the caller read it (``None``: no such
    file); it is read here otherwise.

    Example::

        config_file(path="/etc/sudoers.d/90-admins", content="alice ALL=(ALL) NOPASSWD: ALL\\n",
                    mode="0440", validate=["visudo", "-cf"])
    """
    digest, info = _file_state(path, current)
    if digest == hashlib.sha256(content.encode()).hexdigest() and info:
        changed = False
        if str(info["mode"]).lstrip("0") != mode.lstrip("0"):
            changed = True
            yield StringCommand("chmod", mode, QuoteString(path))
        if (info["user"], info["group"]) != ("root", "root"):
            changed = True
            yield StringCommand("chown", "root:root", QuoteString(path))
        if not changed:
            host.noop(f"{path} is up to date")
        return
    if host.state.config.DIFF:
        _show_diff(path, content)
    candidate = f"{path}.k3sfleet-new"
    if not info:
        yield StringCommand("mkdir", "-p", QuoteString(posixpath.dirname(path)))
    yield FileUploadCommand(
        StringIO(content), candidate, remote_temp_filename=host.get_temp_filename(candidate)
    )
    yield StringCommand(
        "chown", "root:root", QuoteString(candidate), "&&", "chmod", mode, QuoteString(candidate)
    )
    if validate:
        yield StringCommand(
            *[QuoteString(a) for a in validate], QuoteString(candidate), "||",
            "{", "rm", "-f", QuoteString(candidate), ";",
            "echo", QuoteString(f"k3sfleet: {validate[0]} rejected the new {path}; "
                                "the old file was kept"), ">&2", ";", "exit", "1", ";", "}",
        )
    yield StringCommand("mv", "-f", QuoteString(candidate), QuoteString(path))
    for command in then:
        yield command if isinstance(command, StringCommand) else StringCommand(command)


@operation()
def sshd_drop_in(
    path: str, content: str, current: FileState | None = UNSET
) -> Generator[Any, None, None]:
    """The sshd drop-in ``path`` with ``content``: validated with ``sshd -t``, then reloaded.

    The candidate is tested with the whole configuration (``Include candidate`` then the main
    ``sshd_config``) before it replaces the drop-in; on rejection the deploy fails with sshd's
    own message, the old drop-in stays and sshd is not reloaded. ``current`` is the drop-in's
    ``ManagedFiles`` value when the caller read it; it is read here otherwise.

    Example::

        sshd_drop_in(path="/etc/ssh/sshd_config.d/00-k3sfleet.conf",
                     content="PasswordAuthentication no\\n")
    """
    digest, _ = _file_state(path, current)
    if digest == hashlib.sha256(content.encode()).hexdigest():
        host.noop(f"{path} is up to date")
        return
    if host.state.config.DIFF:
        _show_diff(path, content)
    candidate = "/etc/ssh/k3sfleet-sshd.candidate"
    wrapper = "/etc/ssh/k3sfleet-sshd.test"
    yield FileUploadCommand(
        StringIO(content), candidate, remote_temp_filename=host.get_temp_filename(candidate)
    )
    yield StringCommand("chown", "root:root", candidate, "&&", "chmod", "0600", candidate)
    yield StringCommand(
        "printf", QuoteString("Include %s\\nInclude /etc/ssh/sshd_config\\n"), candidate,
        ">", wrapper, "&&",
        "if", "sshd", "-t", "-f", wrapper, ";", "then",
        "rm", "-f", wrapper, ";",
        "else",
        "rm", "-f", wrapper, candidate, ";",
        "echo", QuoteString(
            f"k3sfleet: sshd rejected the new settings for {path} (the message from sshd is "
            "above);"
            " the old configuration was kept and sshd was not reloaded"
        ), ">&2", ";", "exit", "1", ";",
        "fi",
    )
    yield StringCommand("chmod", "0644", candidate, "&&", "mv", "-f", candidate, QuoteString(path))
    # Existing sessions survive a reload; socket-activated sshd (Ubuntu 24.04) picks it up itself.
    yield StringCommand("systemctl", "try-reload-or-restart", "ssh.service")


@operation()
def swap_off(active_swaps: int, fstab_swaps: int) -> Generator[Any, None, None]:
    """Swap off now (``swapoff -a``) and at boot (swap lines in /etc/fstab commented out).

    Takes the counts from ``SystemInfo`` (read once by the deploy).

    Example::

        swap_off(active_swaps=1, fstab_swaps=1)
    """
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
def kernel_modules(modules: Sequence[str], loaded: Sequence[str], container: str | None
                   ) -> Generator[Any, None, None]:
    """Load ``modules`` that are not ``loaded`` (skipped, with a message, in a container).

    Example::

        kernel_modules(modules=["br_netfilter"], loaded=[], container=None)  # modprobe br_netfilter
    """
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
    for module in missing:
        yield StringCommand("modprobe", QuoteString(module))


# -- rendering (pure functions, unit-tested) ------------------------------------------------


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
    lines = ["# Managed by k3sfleet (deploys/common.py); sorts first, so these values win."]
    lines += [f"{key} {value}" for key, value in sshd_settings(data).items()]
    return "\n".join(lines) + "\n"


def sudoers_content(admins: Iterable[Mapping[str, Any]]) -> str:
    """Passwordless sudo for each admin (they log in with keys only)."""
    lines = ["# Managed by k3sfleet (deploys/common.py)"]
    lines += [f"{a['name']} ALL=(ALL:ALL) NOPASSWD: ALL" for a in admins]
    return "\n".join(lines) + "\n"


def auto_upgrades_content(enabled: bool) -> str:
    flag = "1" if enabled else "0"
    return (
        "// Managed by k3sfleet (COMMON_UNATTENDED_UPGRADES)\n"
        f'APT::Periodic::Update-Package-Lists "{flag}";\n'
        f'APT::Periodic::Unattended-Upgrade "{flag}";\n'
    )


UNATTENDED_CONTENT = (
    "// Managed by k3sfleet: security updates only (the package's lists are replaced); other\n"
    "// upgrades and reboots are left to `k3sfleet maintenance`, which drains the node first.\n"
    "#clear Unattended-Upgrade::Allowed-Origins;\n"
    "#clear Unattended-Upgrade::Origins-Pattern;\n"
    "Unattended-Upgrade::Origins-Pattern {\n"
    '    "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";\n'
    '    "origin=Debian,codename=${distro_codename},label=Debian-Security";\n'
    '    "origin=Ubuntu,archive=${distro_codename}-security";\n'
    '    "origin=UbuntuESMApps,archive=${distro_codename}-apps-security";\n'
    '    "origin=UbuntuESM,archive=${distro_codename}-infra-security";\n'
    "};\n"
    'Unattended-Upgrade::Automatic-Reboot "false";\n'
    'Unattended-Upgrade::Remove-Unused-Dependencies "true";\n'
)

APT_POLICY_CONTENT = (
    "// Managed by k3sfleet: lean installs, never prompt.\n"
    'APT::Install-Recommends "false";\n'
    'APT::Install-Suggests "false";\n'
    'Dpkg::Options { "--force-confdef"; "--force-confold"; };\n'
)


def journald_content(max_use: str) -> str:
    return f"# Managed by k3sfleet (COMMON_JOURNALD_MAX_USE)\n[Journal]\nSystemMaxUse={max_use}\n"


def modules_content(modules: Iterable[str]) -> str:
    return "# Managed by k3sfleet: kernel modules k3s needs\n" + "".join(f"{m}\n" for m in modules)


def sysctl_content(sysctls: Mapping[str, Any]) -> str:
    lines = ["# Managed by k3sfleet: kernel settings k3s needs"]
    lines += [f"{key} = {value}" for key, value in sysctls.items()]
    return "\n".join(lines) + "\n"


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


# -- the deploy ------------------------------------------------------------------------------


def check_supported(info: SystemInfoData | None) -> None:
    """Raise ``DeployError`` naming the host when its release is not supported."""
    problem = unsupported_os(info)
    if problem:
        raise DeployError(f"{host.name}: {problem}; nothing was changed")


@deploy("k3sfleet common", data_defaults=default_values(DEFAULTS))
def common(
    info: SystemInfoData | None = None,
    installed: Mapping[str, Any] | None = None,
    files: ManagedFilesData | None = None,
    units: SystemdUnitsData | None = None,
) -> None:
    """Prepare a fresh Debian/Ubuntu VPS for k3s.

    ``info`` is the ``SystemInfo`` fact, ``installed`` the ``DebPackages`` fact, ``files`` the
    ``ManagedFiles`` fact of at least ``FILES`` and ``LINKS``, ``units`` the ``SystemdUnits``
    fact of at least ``UNITS``; each is read here when not given.

    Example::

        common()
    """
    data = host.data
    found = problems(data.dict())
    if found:
        raise ConfigError([f"{host.name}: {p}" for p in found])
    if info is None:
        info = host.get_fact(SystemInfo)
    check_supported(info)
    assert info is not None
    container = info["container"]
    if installed is None:
        installed = host.get_fact(DebPackages) or {}
    if files is None or needs_read(files, (*FILES, *LINKS)):
        files = host.get_fact(ManagedFiles, paths=FILES, links=LINKS)
    if units is None or needs_read(units, UNITS):
        units = host.get_fact(SystemdUnits, units=UNITS)

    # apt: cache, policy, base packages, unattended security upgrades.
    config_file(name="apt policy", path=APT_POLICY_FILE, content=APT_POLICY_CONTENT,
                current=files[APT_POLICY_FILE])
    unattended = bool(data.common_unattended_upgrades)
    packages = list(data.common_packages)
    if unattended:
        packages += ["unattended-upgrades", "apt-listchanges"]
    # Refresh the package lists only when something is to be installed, so a converged node
    # stays unchanged however long ago the last run was.
    if any(p not in installed for p in packages):
        apt.update(name="apt cache", cache_time=int(data.common_apt_cache_time))
    deb_packages(name="base packages", packages=packages, installed=installed)
    config_file(name="automatic upgrades", path=AUTO_UPGRADES_FILE,
                content=auto_upgrades_content(unattended), current=files[AUTO_UPGRADES_FILE])
    if unattended:
        config_file(name="unattended-upgrades policy", path=UNATTENDED_FILE,
                    content=UNATTENDED_CONTENT, current=files[UNATTENDED_FILE])

    # Admins with their keys and passwordless sudo.
    admins = list(data.common_admin_users or [])
    for admin in admins:
        server.user(  # noqa: S604 (a login shell, not a subprocess)
            name=f"admin {admin['name']}", user=admin["name"], shell="/bin/bash",
            create_home=True, public_keys=list(admin.get("keys") or []),
        )
    if admins:
        config_file(name="admins' sudo", path=SUDOERS_FILE, content=sudoers_content(admins),
                    mode="0440", validate=["visudo", "-cf"], current=files[SUDOERS_FILE])
    else:
        absent_file(name="no admins' sudo", path=SUDOERS_FILE, current=files[SUDOERS_FILE])

    # Identity and time.
    hostname(name="hostname", hostname=host.name, current=info.get("hostname", ""),
             hostnamectl=bool(info.get("hostnamectl")))
    file_line(name="/etc/hosts names this node", path="/etc/hosts",
              line=f"^{HOSTS_LINE_RE}$", replace=f"127.0.1.1 {host.name}",
              current=info.get("hosts_lines"))
    timezone = str(data.common_timezone)
    symlink(name="timezone", path=LOCALTIME, target=f"/usr/share/zoneinfo/{timezone}",
            current=files[LOCALTIME])
    config_file(name="/etc/timezone", path=TIMEZONE_FILE, content=f"{timezone}\n",
                current=files[TIMEZONE_FILE])
    # systemd-timesyncd does not run in containers (ConditionVirtualization=!container).
    systemd_unit(name="time sync", unit=TIMESYNC_UNIT, state=units[TIMESYNC_UNIT],
                 running=None if container else True, enabled=True)
    config_file(name="journald size cap", path=JOURNALD_DROP_IN,
                content=journald_content(str(data.common_journald_max_use)),
                then=["systemctl restart systemd-journald.service"],
                current=files[JOURNALD_DROP_IN])

    # SSH hardening (validated before any reload).
    sshd_drop_in(name="sshd hardening", path=SSHD_DROP_IN, content=sshd_content(data.dict()),
                 current=files[SSHD_DROP_IN])

    # What k3s needs from the kernel.
    modules = [str(m) for m in data.common_kernel_modules]
    config_file(name="kernel modules at boot", path=MODULES_FILE, content=modules_content(modules),
                current=files[MODULES_FILE])
    kernel_modules(name="kernel modules", modules=modules, loaded=info["modules"],
                   container=container)
    config_file(name="k3s sysctls", path=SYSCTL_FILE,
                content=sysctl_content(data.common_sysctls),
                then=[StringCommand("sysctl", "-e", "-p", SYSCTL_FILE)],
                current=files[SYSCTL_FILE])
    if data.common_swap_off:
        swap_off(name="swap off", active_swaps=info["active_swaps"],
                 fstab_swaps=info["fstab_swaps"])

