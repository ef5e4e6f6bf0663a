"""Facts about the node's operating system: release, container, swap, kernel modules, names.

One command reads everything the common deploy needs to decide, so a node costs one round trip.

Example::

    info = host.get_fact(SystemInfo)
    info["id"], info["version_id"], info["codename"]   # "debian", "12", "bookworm"
    info["container"]                                 # None, or "systemd-nspawn", "lxc", ...
    unsupported_os(info)                              # None, or a message naming the release
"""

from __future__ import annotations

from typing import Any, TypedDict

from pyinfra.api import FactBase

#: The releases k3sfleet supports: (os-release ID, VERSION_ID).
SUPPORTED_RELEASES: tuple[tuple[str, str], ...] = (
    ("debian", "12"),
    ("ubuntu", "22.04"),
    ("ubuntu", "24.04"),
)


#: The /etc/hosts lines (a basic regular expression) that name this node: ``127.0.1.1 NAME``.
HOSTS_LINE_RE = r"127\.0\.1\.1\s.*"


class SystemInfoData(TypedDict):
    id: str
    version_id: str
    codename: str
    pretty_name: str
    container: str | None
    active_swaps: int
    fstab_swaps: int
    modules: list[str]
    sshd_ports: list[str]
    hostname: str
    hostnamectl: bool
    hosts_lines: list[str]


_COMMAND = " ; ".join(
    (
        ". /etc/os-release",
        'echo "id=${ID:-}"',
        'echo "version_id=${VERSION_ID:-}"',
        'echo "codename=${VERSION_CODENAME:-}"',
        'echo "pretty_name=${PRETTY_NAME:-}"',
        'echo "container=$(systemd-detect-virt --container 2>/dev/null)"',
        'echo "active_swaps=$(tail -n +2 /proc/swaps | grep -c .)"',
        'echo "fstab_swaps=$(awk \'$1 !~ /^#/ && $3 == "swap"\' /etc/fstab 2>/dev/null'
        ' | grep -c .)"',
        # Loaded modules, and those built into the kernel (never in /proc/modules).
        "echo \"modules=$(cut -d' ' -f1 /proc/modules 2>/dev/null | tr '\\n' ' ')\"",
        "echo \"builtin=$(sed -e 's|.*/||' -e 's|[.]ko.*$||'"
        " /lib/modules/$(uname -r)/modules.builtin 2>/dev/null | tr '\\n-' ' _')\"",
        # The ports sshd listens on (needs root: read this fact with sudo).
        "echo \"sshd_ports=$(/usr/sbin/sshd -T 2>/dev/null"
        " | awk '$1 == \"port\" {print $2}' | tr '\\n' ' ')\"",
        # The node's name as pyinfra's Hostname fact reads it, whether hostnamectl is there
        # (server.hostname uses it), and the /etc/hosts lines that name this node.
        'echo "hostname=$(uname -n)"',
        'echo "hostnamectl=$(command -v hostnamectl)"',
        f"sed -n 's/^\\({HOSTS_LINE_RE}\\)$/hosts_line=\\1/p' /etc/hosts 2>/dev/null || true",
    )
)


class SystemInfo(FactBase[SystemInfoData]):
    """The os-release identity, container type, swap, kernel modules, sshd's ports, the
    hostname and the ``127.0.1.1`` lines of /etc/hosts.

    ``modules`` lists the loaded modules and those built into the kernel; ``sshd_ports`` the
    ports sshd listens on (``sshd -T``; empty unless read as root); ``hostname`` is ``uname
    -n``; ``hosts_lines`` the /etc/hosts lines matching ``HOSTS_LINE_RE``, as they are.

    Example output::

        {"id": "debian", "version_id": "12", "codename": "bookworm",
         "pretty_name": "Debian GNU/Linux 12 (bookworm)", "container": None,
         "active_swaps": 1, "fstab_swaps": 1, "modules": ["overlay", "br_netfilter"],
         "sshd_ports": ["22"], "hostname": "vps-1", "hostnamectl": True,
         "hosts_lines": ["127.0.1.1 vps-1"]}
    """

    def command(self) -> str:
        return _COMMAND

    def process(self, output: list[str]) -> SystemInfoData:
        raw: dict[str, str] = {}
        hosts_lines: list[str] = []
        for line in output:
            key, sep, value = line.partition("=")
            if sep and key == "hosts_line":
                hosts_lines.append(value)  # unstripped: files.line compares whole lines
            elif sep:
                raw[key.strip()] = value.strip()
        container = raw.get("container") or "none"
        return {
            "id": raw.get("id", ""),
            "version_id": raw.get("version_id", ""),
            "codename": raw.get("codename", ""),
            "pretty_name": raw.get("pretty_name", ""),
            "container": None if container == "none" else container,
            "active_swaps": _int(raw.get("active_swaps")),
            "fstab_swaps": _int(raw.get("fstab_swaps")),
            "modules": raw.get("modules", "").split() + raw.get("builtin", "").split(),
            "sshd_ports": raw.get("sshd_ports", "").split(),
            "hostname": raw.get("hostname", ""),
            "hostnamectl": bool(raw.get("hostnamectl")),
            "hosts_lines": hosts_lines,
        }


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def unsupported_os(info: Any) -> str | None:
    """Why the node's release is not supported (a message), or ``None`` when it is.

    Example::

        unsupported_os({"id": "debian", "version_id": "11", "pretty_name": "Debian 11"})
        # "Debian 11 (debian 11) is not supported: k3sfleet supports Debian 12, Ubuntu 22.04, ..."
    """
    if not info:
        return "the operating system could not be read (/etc/os-release missing?)"
    release = (str(info.get("id", "")), str(info.get("version_id", "")))
    if release in SUPPORTED_RELEASES:
        return None
    supported = ", ".join(f"{d.capitalize()} {v}" for d, v in SUPPORTED_RELEASES)
    name = info.get("pretty_name") or " ".join(release).strip() or "unknown"
    return f"{name} ({release[0]} {release[1]}) is not supported: k3sfleet supports {supported}"
