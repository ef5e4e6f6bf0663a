"""The real control plane's binaries (built and cached by scripts/setup.sh) for the k8s tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3sfleet.lab.controlplane import Binaries, cached_binaries
from k3sfleet.settings import Settings


@pytest.fixture(scope="session")
def binaries() -> Binaries:
    """The cached kube, kine and kwok builds; the test is skipped, naming the fix, without them."""
    cache = Path(Settings.load(".", use_vault=False).k3sfleet_lab_cache_dir).expanduser()
    built = cached_binaries(cache)
    if built is None:
        pytest.skip(
            f"real control plane not built in {cache}/go: run scripts/setup.sh "
            "(python -m k3sfleet.lab.gobuild)"
        )
    return built
