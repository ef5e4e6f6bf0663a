"""Polling for tests that wait on something eventually true (an API object, a file, a process).

Example::

    node = wait_for("the node Ready", lambda: _ready(api, "lab-agent-1"), 120)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60, *, interval: float = 1.0
) -> T:
    """Call ``probe`` until it returns something truthy and return that; an exception from the
    probe counts as "not yet" (the API may not answer yet). Fail naming ``what`` and the last
    answer after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as err:  # noqa: BLE001 - not there yet
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
