"""The admin kubeconfig k3s writes to /etc/rancher/k3s/k3s.yaml (mode 0600).

k3s-io/k3s v1.34.2+k3s1 pkg/clientaccess/kubeconfig.go ``WriteClientKubeConfig``: one cluster,
user and context, each named ``default``, the CA and the client certificate and key embedded
as data; pkg/server/server.go ``writeKubeConfig`` picks the path, server URL and mode.

Example::

    write_kubeconfig(Path("/etc/rancher/k3s/k3s.yaml"), "https://127.0.0.1:6443", ca_pem,
                     cert_pem, key_pem)
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from .pki import write_private


def kubeconfig(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> str:
    """A kubeconfig like k3s's: cluster, user and context all named ``default``."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {
                    "name": "default",
                    "cluster": {"certificate-authority-data": b64(ca_pem), "server": server},
                }
            ],
            "users": [
                {
                    "name": "default",
                    "user": {
                        "client-certificate-data": b64(cert_pem),
                        "client-key-data": b64(key_pem),
                    },
                }
            ],
            "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
            "current-context": "default",
        },
        sort_keys=False,
    )


def write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, mode: int = 0o600
) -> None:
    """Write (only when its content changed) with ``mode``."""
    text = kubeconfig(server, ca_pem, cert_pem, key_pem)
    if path.exists() and path.read_text() == text:
        path.chmod(mode)
        return
    write_private(path, text.encode(), mode)
