"""Facts about ufw: whether it is active, its default policies, and the rules it holds.

Rules are read with ``ufw show added``, which prints each user rule in ufw's own canonical
command form (``allow in on tailscale0 to any port 6443 proto tcp``); the firewall deploy renders
its wanted rules in the same form, so comparing the two gives exactly the rules to add and to
delete. Needs root (``_sudo`` in the host data).

Example::

    status = host.get_fact(UfwStatus)
    status["active"]                  # True
    status["incoming"]                # "deny"
    status["rules"]                   # ["allow 22/tcp", "allow in on tailscale0"]
"""

from __future__ import annotations

from typing import Any, TypedDict

from pyinfra.api import FactBase

RULES_MARKER = "--k3sfleet-ufw-rules--"
_POLICY = {"DROP": "deny", "ACCEPT": "allow", "REJECT": "reject"}
_POLICY_KEYS = {
    "DEFAULT_INPUT_POLICY": "incoming",
    "DEFAULT_OUTPUT_POLICY": "outgoing",
    "DEFAULT_FORWARD_POLICY": "routed",
}


class UfwStatusData(TypedDict):
    active: bool
    incoming: str | None
    outgoing: str | None
    routed: str | None
    rules: list[str]


def parse_added(lines: list[str]) -> list[str]:
    """The rules of ``ufw show added`` output, without the ``ufw`` prefix, in order."""
    rules = []
    for line in lines:
        line = line.strip()
        if line.startswith("ufw "):
            rules.append(line[len("ufw ") :])
    return rules


class UfwStatus(FactBase[UfwStatusData]):
    """Whether ufw is active, its default policies (from /etc/default/ufw) and its rules.

    A node without ufw gives ``{"active": False, "incoming": None, ..., "rules": []}``.

    Example output::

        {"active": True, "incoming": "deny", "outgoing": "allow", "routed": "deny",
         "rules": ["allow 22/tcp", "allow in on tailscale0"]}
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "ufw"

    def command(self) -> str:
        return (
            "ufw status | head -n 1; "
            "grep -E '^DEFAULT_(INPUT|OUTPUT|FORWARD)_POLICY=' /etc/default/ufw; "
            f"echo {RULES_MARKER}; ufw show added"
        )

    @staticmethod
    def default() -> UfwStatusData:
        return {"active": False, "incoming": None, "outgoing": None, "routed": None, "rules": []}

    def process(self, output: list[str]) -> UfwStatusData:
        data = self.default()
        for index, line in enumerate(output):
            line = line.strip()
            if line == RULES_MARKER:
                data["rules"] = parse_added(output[index + 1 :])
                break
            if line.startswith("Status:"):
                data["active"] = line.split(":", 1)[1].strip() == "active"
                continue
            key, sep, value = line.partition("=")
            if sep and key in _POLICY_KEYS:
                policy = value.strip().strip("\"'")
                data[_POLICY_KEYS[key]] = _POLICY.get(policy, policy.lower())  # type: ignore[literal-required]
        return data
