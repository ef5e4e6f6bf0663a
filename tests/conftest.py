"""Fixtures shared by the whole suite: the lab (real Debian hosts under systemd-nspawn).

``lab_factory(servers=1, agents=2)`` boots a lab; every lab it made is torn down at the end of
the session. ``lab`` is one shared 1 server + 2 agents lab for the session (tests that need a
pristine lab take their own from ``lab_factory``). Where the lab cannot run (not root, no
nspawn, no namespaces) every test marked ``lab`` is skipped with one reason, never passed.
The setup time of each lab is printed in the terminal summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from k3sfleet.lab import Lab, unavailable_reason

pytest_plugins = ["pytester"]

_LAB_REASON: list[str | None] = []
_SETUP_LINES: list[str] = []


def lab_unavailable() -> str | None:
    """Why lab tests cannot run here (computed once per session)."""
    if not _LAB_REASON:
        reason = unavailable_reason()
        _LAB_REASON.append(f"lab unavailable: {reason}" if reason else None)
    return _LAB_REASON[0]


@pytest.fixture(autouse=True)
def _pyinfra_context_isolated() -> Iterator[None]:
    """Put pyinfra's global context (state, inventory, config, host) back after every test:
    an API-level test that leaves a state set would make later imports of entry files act
    as if they ran under pyinfra (``k3sfleet.entry.under_pyinfra``)."""
    from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state

    managers = (ctx_state, ctx_inventory, ctx_config, ctx_host)
    saved = [m.get() for m in managers]
    yield
    for manager, module in zip(managers, saved, strict=True):
        manager.set(module)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("lab") for item in items):
        return
    reason = lab_unavailable()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker("lab"):
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SETUP_LINES:
        terminalreporter.section("lab setup time")
        for line in _SETUP_LINES:
            terminalreporter.write_line(line)


def _describe(lab: Lab, wall: float) -> str:
    t = lab.timings
    n = len(lab.hosts)
    return (
        f"{lab.name}: {len(lab.servers)} server(s) + {len(lab.agents)} agent(s) in {wall:.1f} s "
        f"(root fs {t.get('rootfs', 0):.1f} s, extract {t.get('extract', 0):.1f} s, "
        f"services {t.get('services', 0):.1f} s, boot {t.get('boot', 0):.1f} s "
        f"= {t.get('boot', 0) / max(n, 1):.2f} s per host)"
    )


@pytest.fixture(scope="module")
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """Make labs: ``lab_factory(servers=1, agents=2)``; a module's labs are torn down when the
    module ends, so a long run never keeps more than one module's hosts (and their load) up."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    labs: list[Lab] = []
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def make(servers: int = 1, agents: int = 2, **kwargs: Any) -> Lab:
        start = time.monotonic()
        lab = Lab.create(servers, agents, **kwargs)
        labs.append(lab)
        line = _describe(lab, time.monotonic() - start)
        _SETUP_LINES.append(line)
        if reporter is not None:
            reporter.write_line(f"\nlab setup: {line}")
        return lab

    yield make
    failures = []
    for lab in reversed(labs):
        try:
            lab.down()  # idempotent: labs a test already took down are skipped
        except Exception as e:  # noqa: BLE001 - tear every lab down, then report
            failures.append(f"{lab.name}: {e!r}")
        left = {k: v for k, v in lab.leftovers().items() if v} if not lab.replaced() else {}
        if left:
            failures.append(f"{lab.name} left behind {left}")
    if failures:
        raise RuntimeError("lab teardown: " + "; ".join(failures))


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[..., Lab]) -> Lab:
    """One lab of 1 server + 2 agents shared by the module (do not tear it down yourself)."""
    return lab_factory(1, 2)


@pytest.fixture(scope="session")
def lab_timing() -> Callable[[str], None]:
    """``lab_timing("...")`` adds a line to the "lab setup time" summary."""
    return _SETUP_LINES.append
