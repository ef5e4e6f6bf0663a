"""Bring a server's admin kubeconfig to the operator's machine, merged under a named context.

K3s writes /etc/rancher/k3s/k3s.yaml (cluster, user and context all named ``default``, server
``https://127.0.0.1:6443``). ``fetch`` reads it over SSH (host keys checked), ``rename`` points
it at the server's tailnet address or MagicDNS name and names its cluster, user and context
``name``, and ``merge`` puts those three entries into an existing kubeconfig, replacing only
entries of that name: every other context, cluster and user stays as it was. ``write`` saves
YAML with mode 0600, atomically.

Example::

    doc = rename(fetch(server), "prod", "https://100.64.0.11:6443")
    path = Path("~/.kube/config").expanduser()
    write(path, merge(load(path), doc, "prod"))
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from k3sfleet.errors import K3sfleetError
from k3sfleet.kube import KUBECONFIG_PATH, HostInfo, read_root_file, run, ssh_client

SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


class KubeconfigError(K3sfleetError):
    """The kubeconfig could not be fetched, read or written."""


def fetch(server: HostInfo) -> str:
    """The text of k3s.yaml on ``server`` (``sudo -n cat`` over SSH)."""
    ssh = ssh_client(server)
    try:
        return read_root_file(ssh, server, KUBECONFIG_PATH, KubeconfigError).decode()
    finally:
        ssh.close()


def tailnet_address(server: HostInfo) -> str | None:
    """The server's tailnet IPv4: host data ``k3sfleet_tailnet_address``, else ``tailscale ip``."""
    known = server.data.get("k3sfleet_tailnet_address")
    if known:
        return str(known)
    ssh = ssh_client(server)
    try:
        rc, out, _ = run(ssh, "tailscale ip -4")
    finally:
        ssh.close()
    lines = out.decode().split()
    return lines[0] if rc == 0 and lines else None


def rename(text: str, name: str, server_url: str) -> dict[str, Any]:
    """k3s.yaml as a kubeconfig whose one cluster, user and context are named ``name`` and whose
    server is ``server_url``."""
    try:
        doc = yaml.safe_load(text)
        context = next(iter(doc["contexts"]))["context"]
        cluster = next(c for c in doc["clusters"] if c["name"] == context["cluster"])
        user = next(u for u in doc["users"] if u["name"] == context["user"])
    except (yaml.YAMLError, KeyError, StopIteration, TypeError, AttributeError):
        raise KubeconfigError("k3s.yaml is not a kubeconfig with a context") from None
    cluster_body = dict(cluster["cluster"], server=server_url)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster_body}],
        "users": [{"name": name, "user": user["user"]}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }


def load(path: Path) -> dict[str, Any] | None:
    """The kubeconfig at ``path``, or ``None`` when there is none."""
    if not path.exists():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise KubeconfigError(f"{path} is not valid YAML ({e}); not touching it") from None
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise KubeconfigError(f"{path} is not a kubeconfig; not touching it")
    return doc


def merge(
    existing: dict[str, Any] | None, new: dict[str, Any], name: str, use: bool = False
) -> dict[str, Any]:
    """``existing`` with the cluster, user and context ``name`` of ``new`` added or replaced.

    Entries of other names are kept as they are, in their order. ``current-context`` becomes
    ``name`` when ``use`` is set or there was none.
    """
    merged: dict[str, Any] = (
        copy.deepcopy(existing) if existing else {"apiVersion": "v1", "kind": "Config"}
    )
    for section, _ in SECTIONS:
        entries = [e for e in merged.get(section) or [] if e.get("name") != name]
        entries += [e for e in new.get(section) or [] if e.get("name") == name]
        merged[section] = entries
    if use or not merged.get("current-context"):
        merged["current-context"] = name
    merged.setdefault("preferences", {})
    return merged


def write(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` as YAML, mode 0600, replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
