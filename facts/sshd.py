"""The effective sshd configuration, as sshd itself resolves it (``sshd -T``).

Keys are lower case, as ``sshd -T`` prints them; a keyword printed on several lines (``allowusers``,
``hostkey``, ...) has its values joined with single spaces. Needs root (``_sudo=True``).

Example::

    cfg = host.get_fact(SshdConfig)
    cfg["passwordauthentication"]     # "no"
    cfg["allowusers"]                 # "k3sfleet alice"
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase


class SshdConfig(FactBase[dict[str, str]]):
    """The effective sshd settings from ``sshd -T``.

    Empty when sshd is absent or rejects its configuration.

    Example output::

        {"port": "22", "permitrootlogin": "no", "passwordauthentication": "no",
         "allowusers": "k3sfleet alice", "allowtcpforwarding": "yes", ...}
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "sshd"

    def command(self) -> str:
        return "sshd -T"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        config: dict[str, str] = {}
        for line in output:
            key, _, value = line.strip().partition(" ")
            if not key:
                continue
            key = key.lower()
            value = value.strip()
            config[key] = f"{config[key]} {value}" if key in config else value
        return config
