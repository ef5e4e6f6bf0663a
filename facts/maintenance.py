"""What OS maintenance would do on a node: packages waiting for an upgrade, a pending reboot."""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand

REBOOT_REQUIRED = "/var/run/reboot-required"
_SIMULATE = "apt-get -s -o Debug::NoLocking=1 dist-upgrade 2>/dev/null | grep '^Inst '"


class PendingMaintenance(FactBase[dict[str, Any]]):
    """Packages waiting for an upgrade (from the current apt lists) and a pending reboot.

    .. code:: python

        host.get_fact(PendingMaintenance, security_only=False)
        # {"upgrades": 3, "reboot_required": True}
    """

    def command(self, security_only: bool = False) -> StringCommand:
        simulate = _SIMULATE + (" | grep -i security" if security_only else "")
        script = (
            f"echo upgrades=$({simulate} | wc -l); "
            f"if [ -e {REBOOT_REQUIRED} ]; then echo reboot=yes; else echo reboot=no; fi"
        )
        return StringCommand("sh", "-c", QuoteString(script))

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.strip().partition("=")[::2] for line in output if "=" in line)
        return {
            "upgrades": int(values.get("upgrades") or 0),
            "reboot_required": values.get("reboot") == "yes",
        }
