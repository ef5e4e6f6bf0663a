"""The lab's stand-in Kubernetes API server in process, for unit tests (plain HTTP, bearer token).

Example::

    api = StandinApi(tmp_path)
    core = kubernetes.client.CoreV1Api(api.client())
    api.writes()          # the API write log, as the lab's API writes it
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from k3sfleet.lab.standins.k3s.apiserver import ApiServer
from k3sfleet.lab.standins.k3s.store import Store


class StandinApi:
    """The stand-in API on 127.0.0.1 (an ephemeral port), with its write log in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "api-writes.jsonl"
        self.server = ApiServer(
            Store(write_log=self.log), ("127.0.0.1", 0), passwords={"tok": "admin"}
        )
        self.server.start()

    def client(self) -> k8s.ApiClient:
        config = k8s.Configuration()
        config.host = f"http://127.0.0.1:{self.server.port}"
        config.api_key = {"BearerToken": "tok"}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        return k8s.ApiClient(config)

    def writes(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def read_secret(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """A Secret as the API's JSON, read with the kubernetes client; ``None`` when absent."""
    try:
        response = k8s.CoreV1Api(api).read_namespaced_secret(
            name, namespace, _preload_content=False)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return json.loads(response.data)  # type: ignore[no-any-return]
