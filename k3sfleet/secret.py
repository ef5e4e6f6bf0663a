"""The secret wrapper: pyinfra's ``HiddenValue``, with equality, so settings can be compared;
and ``read_secret_file``, the one way a deploy reads a secret from a node.

pyinfra masks a ``HiddenValue`` wherever it prints a command or a value (``-vv`` included).
It masks nothing a command prints, though: at ``-vvv`` the CLI sets ``print_fact_output`` and
``print_output`` (pyinfra_cli/cli.py ``_set_verbosity``), ``pyinfra.api.facts._get_fact`` passes
``print_output=state.print_fact_output`` to the connector, and the connector echoes every
stdout line (``pyinfra.connectors.util.read_buffer``); a failed fact prints its output at any
verbosity (``print_host_combined_output``). A secret read with a fact is therefore printed.

Example::

    token = Secret("K10abc::server:s3cret")
    str(token)        # '*MASKED*'
    token.unmask()    # the value, for files.put(StringIO(...)) and nothing else
    read_secret_file(host, "/var/lib/rancher/k3s/server/node-token")  # Secret
"""

from __future__ import annotations

from typing import Any

from pyinfra import logger
from pyinfra.api import HiddenValue, QuoteString, StringCommand
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.exceptions import PyinfraError


class Secret(HiddenValue):
    """A secret value that prints as ``*MASKED*``."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HiddenValue) and other.unmask() == self.unmask()

    def __hash__(self) -> int:
        return hash(("Secret", self.unmask()))

    def __bool__(self) -> bool:
        return bool(self.unmask())

    def __repr__(self) -> str:
        return f"Secret({self.masked_value!r})"

    def to_json(self) -> str:
        """What ``pyinfra ... debug-inventory`` (its JSON encoder) shows: the mask."""
        return str(self.masked_value)


def reveal(value: object) -> str | None:
    """The plain text of a secret (or of a plain value); ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, HiddenValue):
        return value.unmask()
    return str(value)


def read_secret_file(host: Any, path: str) -> Secret | None:
    """The content of ``path`` on ``host`` (stripped) as a ``Secret``; ``None`` when the file is
    missing or empty.

    Runs ``cat`` through the host's connector as a fact would, with the same connector
    arguments (``pyinfra.api.arguments.pop_global_arguments``: ``_sudo`` from the host's data),
    but with ``print_output=False`` so no verbosity prints the content; ``-vv`` still shows the
    command. A failed read names the host and shows the command's stderr only (never stdout).
    """
    state = host.state
    arguments, _ = pop_global_arguments(state, host, {})
    connector_args = {k: v for k, v in arguments.items() if k in CONNECTOR_ARGUMENT_KEYS}
    if not host.connected:
        host.connect(reason=f"to read {path}", raise_exceptions=True)
    command = StringCommand("cat", QuoteString(path), "2>/dev/null", "||", "true")
    ok, output = host.run_shell_command(
        command, print_output=False, print_input=state.print_fact_input, **connector_args
    )
    if not ok:
        for line in output.stderr_lines:
            logger.error(f"{host.print_prefix}{line}")
        raise PyinfraError(f"k3sfleet: could not read {path} on {host.name}")
    text = "\n".join(output.stdout_lines).strip()
    return Secret(text) if text else None
