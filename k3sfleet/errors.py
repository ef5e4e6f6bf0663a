"""Errors k3sfleet raises for bad input; pyinfra's CLI prints them as one clean message."""

from __future__ import annotations

from collections.abc import Iterable

from pyinfra.api.exceptions import PyinfraError


class K3sfleetError(PyinfraError):
    """Base class: a problem the user can act on, printed without a traceback.

    ``exit_code`` is what the ``k3sfleet`` command exits with: 1, the operation failed.
    """

    exit_code = 1


class ConfigError(K3sfleetError):
    """One or more problems with the configuration, all named in one message.

    Example::

        raise ConfigError(["TAILSCALE_AUTH_KEY is not set", "no server in the inventory"])
    """

    exit_code = 3  # bad input, found before any host was contacted

    def __init__(self, problems: Iterable[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"k3sfleet found {count} configuration problem{'s' if count != 1 else ''} "
            f"(no host was contacted):\n{lines}"
        )


def refuse_host_problems(host_name: str, problems: Iterable[str]) -> None:
    """Raise one :class:`ConfigError` naming every problem found in ``host_name``'s data; return
    quietly when there is none.

    Example::

        refuse_host_problems(host.name, problems(host.data.dict()))
    """
    found = [f"{host_name}: {p}" for p in problems]
    if found:
        raise ConfigError(found)
