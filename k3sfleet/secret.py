"""The secret wrapper: pyinfra's ``HiddenValue``, with equality, so settings can be compared.

pyinfra masks a ``HiddenValue`` wherever it prints a command or a value (``-vv`` included).
Example::

    token = Secret("K10abc::server:s3cret")
    str(token)        # '*MASKED*'
    token.unmask()    # the value, for files.put(StringIO(...)) and nothing else
"""

from __future__ import annotations

from pyinfra.api import HiddenValue


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
