"""The real control plane for the k8s tests: its binaries (built and cached by
scripts/setup.sh), ONE control plane for all of them, an admin client, and the admin's
writes as kube-apiserver's audit log records them.

Each test that writes keeps to namespaces of its own, so tests share the plane without
seeing each other's writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from k3sfleet.lab.controlplane import Binaries, cached_binaries
from k3sfleet.lab.standins.k3s import audit
from k3sfleet.lab.standins.k3s.controlplane import ControlPlane
from k3sfleet.settings import Settings
from tests.k8s.local import control_plane

ADMIN = "system:admin"  # the admin kubeconfig's certificate (controlplane.CLIENTS)


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


@pytest.fixture(scope="package")
def plane(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """kine + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1, started
    once for tests/k8s (a package: ended after its last test, not left running through the
    rest of the session); then every process is ended by its PID, and proved gone."""
    with control_plane(binaries, tmp_path_factory.mktemp("server")) as plane:
        yield plane


@pytest.fixture(scope="package")
def api(plane: ControlPlane) -> Iterator[client.ApiClient]:
    """An API client with the admin kubeconfig (``system:admin``, ``system:masters``)."""
    api = config.new_client_from_config(config_file=str(plane.admin_kubeconfig))
    yield api
    api.close()


@pytest.fixture
def admin_writes(plane: ControlPlane) -> Callable[[str], list[dict[str, Any]]]:
    """``admin_writes(prefix)``: the writes ``system:admin`` made in the namespaces named
    ``<prefix>-*`` and to cluster-wide objects so named (those Namespaces, Nodes), in the API's
    order (audit.writes entries).

    Read straight after the client's call returned, no waiting: kube-apiserver has written the
    event before the client can have the whole answer. The log backend's mode defaults to
    ``blocking`` (controlplane.py sets no ``--audit-log-mode``): the event is written
    (fmt.Fprint to the file, no buffer) by the request's goroutine in the audit filter's
    deferred ResponseComplete stage; the timeout filter around it waits for that goroutine, and
    net/http completes an answer (its length or last chunk) only once the handler chain
    returned (k8s.io/apiserver v0.34.2: pkg/server/options/audit.go NewAuditOptions,
    wrapBackend; plugin/pkg/audit/log/backend.go ProcessEvents; pkg/endpoints/filters/audit.go
    WithAudit; pkg/server/filters/timeout.go; pkg/server/config.go DefaultBuildHandlerChain).

    Example::

        assert [(w["verb"], w["name"]) for w in admin_writes("race")] == [("create", "raced")]
    """

    def writes(prefix: str) -> list[dict[str, Any]]:
        ours = f"{prefix}-"
        return [
            w for w in audit.writes(plane.audit_log.read_text(errors="replace"))
            if w["user"] == ADMIN and (
                w["namespace"].startswith(ours)
                or (not w["namespace"] and w["name"].startswith(ours))
            )
        ]

    return writes
