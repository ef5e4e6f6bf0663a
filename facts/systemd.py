"""Whether systemd units run and are enabled, for several units in one ``systemctl show``.

pyinfra's ``systemd.service`` reads ``SystemdStatus`` and ``SystemdEnabled`` (two round trips)
for each unit; ``SystemdUnits`` reads both for every given unit at once. ``running`` and
``enabled`` mean what they mean to those two facts, so a deploy decides as pyinfra would.

Example::

    units = host.get_fact(SystemdUnits, units=["tailscaled.service"], _sudo=True)
    units["tailscaled.service"]["running"]          # True
    units["tailscaled.service"]["unit_file_state"]  # "enabled"
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

UNIT_RE = re.compile(r"^[A-Za-z0-9@_.:\\-]+\.[a-z]+$")
PROPERTIES = ("ActiveState", "SubState", "UnitFileState")


class UnitState(TypedDict):
    active_state: str  # "active", "inactive", "failed", ...
    sub_state: str  # "running", "dead", "exited", ...
    unit_file_state: str  # "enabled", "disabled", "static", "" (no such unit), ...
    running: bool  # as pyinfra's SystemdStatus decides it (SubState)
    enabled: bool  # as pyinfra's SystemdEnabled decides it (UnitFileState)


SystemdUnitsData = dict[str, UnitState]


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


class SystemdUnits(FactBase[SystemdUnitsData]):
    """ActiveState, SubState and UnitFileState of each of ``units`` (full names, with the
    ``.service`` suffix); a unit systemd does not know is neither running nor enabled.

    Example output::

        {"systemd-timesyncd.service": {"active_state": "active", "sub_state": "running",
                                       "unit_file_state": "enabled", "running": True,
                                       "enabled": True}}
    """

    def command(self, units: str | Sequence[str] = ()) -> StringCommand:
        units = [units] if isinstance(units, str) else list(units)
        for unit in units:
            if not UNIT_RE.match(unit):
                raise ValueError(f"SystemdUnits needs full unit names, not {unit!r}")
        self.requested = units  # process() numbers the blocks in this order
        if not units:
            return StringCommand("true")
        # one systemctl for all units: blocks in argument order, numbered by awk
        return StringCommand(
            "systemctl", "show", *(f"-p{p}" for p in PROPERTIES),
            *[QuoteString(u) for u in units], "2>/dev/null", "|",
            "awk", QuoteString('BEGIN {n = 0} /^$/ {n++; next} {print "unit" n "." $0}'),
        )

    def process(self, output: list[str]) -> SystemdUnitsData:
        blocks: dict[str, dict[str, str]] = {}
        for line in output:
            key, sep, value = line.strip().partition("=")
            number, dot, prop = key.partition(".")
            if sep and dot and number.startswith("unit"):
                blocks.setdefault(number[len("unit"):], {})[prop] = value
        requested = getattr(self, "requested", [])
        return {unit: unit_state(blocks.get(str(i), {})) for i, unit in enumerate(requested)}

    def default(self) -> SystemdUnitsData:  # type: ignore[override]
        # (pyinfra calls it on the fact it ran, when systemctl printed nothing)
        return {unit: unit_state({}) for unit in getattr(self, "requested", [])}
