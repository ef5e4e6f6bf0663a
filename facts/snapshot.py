"""What a node is, in one remote command: the read model the deploys decide on.

pyinfra 3 caches no facts and reads one per round trip; ``HostSnapshot`` reads everything a
deploy consults at once, in named sections: the release and kernel (``SystemInfo``), the
installed packages (``dpkg -l``, as pyinfra's ``DebPackages``), the sha256, type, owner, group,
mode and link target of the watched files, the state of the watched systemd units, and on request
ufw's rules, ``tailscale status`` and K3s's state. Every section prints what it was asked for, so
the output alone says which paths and units are missing (nothing is carried from ``command()`` to
``process()``). Read it through ``deploys.readmodel``, which keeps it per host and re-reads it
after a change.

Example::

    snap = host.get_fact(HostSnapshot, files=["/etc/timezone"], links=["/etc/localtime"],
                         units=["ssh.service"], extras=["system", "packages"], _sudo=True)
    snap["files"]["/etc/timezone"]["sha256"]          # "c3ab8f..." (None: not a file)
    snap["files"]["/etc/missing"]                     # None: the path does not exist
    snap["units"]["ssh.service"]["running"]           # True
    snap["packages"]["curl"]                          # {"7.88.1-10+deb12u5"}
    snap["system"]["codename"]                        # "bookworm"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from k3sfleet.facts.k3s import K3sState
from k3sfleet.facts.os import SystemInfo, SystemInfoData
from k3sfleet.facts.tailscale import TailscaleStatus, TailscaleStatusData
from k3sfleet.facts.ufw import UfwStatus, UfwStatusData

#: The line that starts each section of the output: ``@@k3sfleet <section>``.
MARK = "@@k3sfleet"
#: ``find -printf`` line per existing path: type, owner, group, octal mode, path TAB link target.
_FIND_FORMAT = "stat %y %u %g %m %p\\t%l\\n"
_TYPES = {"f": "file", "l": "link", "d": "directory"}
UNIT_PROPERTIES = ("ActiveState", "SubState", "UnitFileState")
#: Sections read only when asked for (each costs a process or more on the node; ``sshd -T`` in
#: ``system`` and ``dpkg -l`` are the slow ones); files and units are read when any is watched.
EXTRAS = ("system", "packages", "ufw", "tailscale", "k3s")


class FileState(TypedDict):
    type: str  # "file", "link", "directory" or "other"
    sha256: str | None  # of the content (hashed paths only; a link's target is followed)
    user: str
    group: str
    mode: str  # octal, as ``stat -c %a`` prints it: "644", "440"
    link_target: str | None


class UnitState(TypedDict):
    active_state: str  # "active", "inactive", "failed", ...
    sub_state: str  # "running", "dead", "exited", ...
    unit_file_state: str  # "enabled", "disabled", "static", "" (no such unit), ...
    running: bool  # as pyinfra's SystemdStatus decides it (SubState)
    enabled: bool  # as pyinfra's SystemdEnabled decides it (UnitFileState)


class SnapshotData(TypedDict, total=False):
    # files and units always; each extra when asked for
    system: SystemInfoData
    packages: dict[str, set[str]]
    files: dict[str, FileState | None]
    units: dict[str, UnitState]
    ufw: UfwStatusData
    tailscale: TailscaleStatusData
    k3s: dict[str, Any]


def unit_state(properties: dict[str, str]) -> UnitState:
    """A ``UnitState`` from ``systemctl show`` properties (missing ones: empty)."""
    sub = properties.get("SubState", "")
    file_state = properties.get("UnitFileState", "")
    return {
        "active_state": properties.get("ActiveState", ""),
        "sub_state": sub,
        "unit_file_state": file_state,
        "running": sub in SystemdStatus.state_values,
        "enabled": file_state in SystemdEnabled.state_values,
    }


def _listed(name: str, items: str | Sequence[str], valid: Any) -> list[str]:
    items = [items] if isinstance(items, str) else list(items)
    for item in items:
        if not valid(item) or "\n" in item:
            raise ValueError(f"HostSnapshot: {item!r} is not a valid entry of {name}")
    return items


def _unit_name(unit: str) -> bool:
    name, dot, kind = unit.rpartition(".")
    return bool(dot and name and kind.isalpha() and kind.islower()
                and all(c.isalnum() or c in "@_.:\\-" for c in name))


def _section(name: str, *parts: Any) -> list[Any]:
    # (the mark on a line of its own even after output without a final newline, as
    # `tailscale status --json` prints it)
    return ["echo", ";", "echo", MARK, name, ";", *parts, ";"]


def _files_part(hashed: list[str], links: list[str]) -> list[Any]:
    every = [*hashed, *links]
    if not every:
        return []
    parts: list[Any] = ["printf", QuoteString("want %s\\n"), *[QuoteString(p) for p in every], ";"]
    if hashed:  # (sha256sum with no path would read stdin)
        parts += ["sha256sum", *[QuoteString(p) for p in hashed], "2>/dev/null", ";"]
    return parts + [
        "find", *[QuoteString(p) for p in every], "-maxdepth", "0",
        "-printf", QuoteString(_FIND_FORMAT), "2>/dev/null",
    ]


def _units_part(units: list[str]) -> list[Any]:
    if not units:
        return ["true"]
    # one systemctl for all units: blocks in argument order, numbered by awk
    return [
        "printf", QuoteString("want %s\\n"), *[QuoteString(u) for u in units], ";",
        "systemctl", "show", *(f"-p{p}" for p in UNIT_PROPERTIES),
        *[QuoteString(u) for u in units], "2>/dev/null", "|",
        "awk", QuoteString('BEGIN {n = 0} /^$/ {n++; next} {print "unit" n "." $0}'),
    ]


def _if_installed(program: str, command: str) -> list[Any]:
    return ["if", "command", "-v", program, ">/dev/null", "2>&1", ";", "then",
            "(", command, ")", ";", "fi"]


class HostSnapshot(FactBase[SnapshotData]):
    """The node's watched files and units, and the ``extras`` asked for, in one command.

    + files: absolute paths whose sha256, type, owner, group, mode and link target to read
    + links: absolute paths read the same way without hashing (a link is not followed)
    + units: full systemd unit names (``ssh.service``)
    + extras: any of ``"system"`` (``SystemInfo``), ``"packages"`` (``dpkg -l``, as pyinfra's
      ``DebPackages``), ``"ufw"`` (``UfwStatus``), ``"tailscale"`` (``TailscaleStatus``),
      ``"k3s"`` (``K3sState``; ``tailnet=False`` leaves out its ``tailscale ip``)

    Example output::

        {"system": {"id": "debian", "version_id": "12", ...},
         "packages": {"curl": {"7.88.1-10"}},
         "files": {"/etc/timezone": {"type": "file", "sha256": "c3ab8f...", "user": "root",
                                     "group": "root", "mode": "644", "link_target": None},
                   "/etc/sudoers.d/90-k3sfleet-admins": None},
         "units": {"ssh.service": {"active_state": "active", "sub_state": "running",
                                   "unit_file_state": "enabled", "running": True,
                                   "enabled": True}}}
    """

    def command(
        self,
        files: str | Sequence[str] = (),
        links: str | Sequence[str] = (),
        units: str | Sequence[str] = (),
        extras: str | Sequence[str] = (),
        tailnet: bool = True,
    ) -> StringCommand:
        hashed = _listed("files", files, lambda p: p.startswith("/"))
        linked = _listed("links", links, lambda p: p.startswith("/"))
        named = _listed("units", units, _unit_name)
        wanted = _listed("extras", extras, lambda e: e in EXTRAS)
        # Each section in a subshell: one that fails (no /etc/os-release) ends only itself.
        parts: list[Any] = [
            *_section("files", *(_files_part(hashed, linked) or ["true"])),
            *_section("units", *_units_part(named)),
        ]
        if "system" in wanted:
            parts += _section("system", "(", SystemInfo().command(), ")")
        if "packages" in wanted:
            parts += _section("packages", "dpkg", "-l", "2>/dev/null")
        if "ufw" in wanted:
            parts += _section("ufw", *_if_installed("ufw", UfwStatus().command()))
        if "tailscale" in wanted:
            parts += _section("tailscale", *_if_installed("tailscale", TailscaleStatus().command()))
        if "k3s" in wanted:
            parts += _section("k3s", "(", K3sState().command(tailnet=tailnet), ")")
        return StringCommand(*parts, "true")

    def process(self, output: list[str]) -> SnapshotData:
        sections: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in output:
            mark, _, name = line.strip().partition(" ")
            if mark == MARK and name:
                current = sections.setdefault(name, [])
            elif current is not None and line.strip():  # (blank: the marks' own newline)
                current.append(line)
        data: SnapshotData = {
            "files": parse_files(sections.get("files", [])),
            "units": parse_units(sections.get("units", [])),
        }
        if "system" in sections:
            data["system"] = SystemInfo().process(sections["system"])
        if "packages" in sections:
            data["packages"] = DebPackages().process(sections["packages"])
        if sections.get("ufw"):
            data["ufw"] = UfwStatus().process(sections["ufw"])
        if sections.get("tailscale"):
            data["tailscale"] = TailscaleStatus().process(sections["tailscale"])
        if "k3s" in sections:
            data["k3s"] = K3sState().process(sections["k3s"])
        for name in EXTRAS:
            if name in sections and name not in data:
                data[name] = empty_section(name)  # type: ignore[literal-required]
        return data

    def default(self) -> SnapshotData:  # type: ignore[override]
        """A node that printed nothing at all."""
        return self.process([])


def empty_section(name: str) -> Any:
    """What an extra section is on a node that printed nothing for it (no ufw, no K3s)."""
    if name == "system":
        return SystemInfo().process([])
    if name == "packages":
        return {}
    if name == "ufw":
        return UfwStatus.default()
    if name == "tailscale":
        return TailscaleStatus.default()
    return K3sState().process([])


def parse_files(lines: list[str]) -> dict[str, FileState | None]:
    """The files section: ``want`` lines, ``sha256sum`` lines and ``find -printf`` lines."""
    found: dict[str, FileState | None] = {}
    digests: dict[str, str] = {}
    for line in lines:
        if line.startswith("want "):
            found.setdefault(line[len("want "):], None)
        elif line.startswith("stat "):
            words = line[len("stat "):].split(" ", 4)
            if len(words) != 5:
                continue
            kind, user, group, mode, rest = words
            path, _, target = rest.partition("\t")
            found[path] = {
                "type": _TYPES.get(kind, "other"), "sha256": None, "user": user,
                "group": group, "mode": mode, "link_target": target if kind == "l" else None,
            }
        else:  # sha256sum: "<64 hex>  <path>"
            digest, sep, path = line.partition("  ")
            if sep and len(digest) == 64:
                digests[path] = digest
    for path, digest in digests.items():
        state = found.get(path)
        if state is not None:
            state["sha256"] = digest
    return found


def parse_units(lines: list[str]) -> dict[str, UnitState]:
    """The units section: ``want`` lines, then ``systemctl show`` blocks numbered by awk."""
    wanted: list[str] = []
    blocks: dict[str, dict[str, str]] = {}
    for line in lines:
        if line.startswith("want "):
            wanted.append(line[len("want "):].strip())
            continue
        key, sep, value = line.strip().partition("=")
        number, dot, prop = key.partition(".")
        if sep and dot and number.startswith("unit"):
            blocks.setdefault(number[len("unit"):], {})[prop] = value
    return {unit: unit_state(blocks.get(str(i), {})) for i, unit in enumerate(wanted)}
