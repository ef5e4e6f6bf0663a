"""Facts about K3s on a node: version, token, service, datastore, the server it joins.

``K3sState`` gathers everything the cluster deploy needs in one round trip; the small facts
exist for callers that need one value. All of them read root-only files: call them with
``_sudo=True`` when connecting as a normal user.

Example::

    state = host.get_fact(K3sState, _sudo=True)
    state["version"]        # "v1.34.2+k3s1" or None
    state["datastore"]      # "etcd", "sqlite", "other" or None

There is no fact for the node-token: pyinfra prints every fact's output at ``-vvv``, so the
token is read with ``k3sfleet.secret.read_secret_file`` (see ``deploys.k3s_node.node_token``).
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

K3S_BIN = "/usr/local/bin/k3s"
CONFIG = "/etc/rancher/k3s/config.yaml"
VPN_AUTH_FILE = "/etc/rancher/k3s/vpn-auth"
DATA_DIR = "/var/lib/rancher/k3s"
NODE_TOKEN = f"{DATA_DIR}/server/node-token"
DB_DIR = f"{DATA_DIR}/server/db"
SERVICES = ("k3s", "k3s-agent")
UNIT_DIR = "/etc/systemd/system"
SERVICE_PROPERTIES = ("ActiveState", "SubState", "UnitFileState", "ActiveEnterTimestampMonotonic")
_UNIT_FILES = {service: f"{UNIT_DIR}/{service}.service" for service in SERVICES}
# K3s's configuration and data directories (``deploys/k3s_prereq.py`` keeps them root-owned).
DIRECTORIES = ("/etc/rancher/k3s", DATA_DIR)

_DATASTORE_SH = (
    f"if [ -d {DB_DIR}/etcd ]; then echo etcd; "
    f"elif [ -e {DB_DIR}/state.db ]; then echo sqlite; "
    f'elif [ -n "$(ls -A {DB_DIR} 2>/dev/null)" ]; then echo other; fi'
)


_DIRECTORIES_SH = f"stat -c 'dir %n %U %G %a' {' '.join(DIRECTORIES)} 2>/dev/null"


def _parse_pairs(output: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in output:
        key, sep, value = line.partition("=")
        if sep:
            pairs[key.strip()] = value.strip()
    return pairs


def _parse_directories(output: list[str]) -> dict[str, dict[str, str] | None]:
    """``dir <path> <user> <group> <mode>`` lines (``_DIRECTORIES_SH``) by path."""
    directories: dict[str, dict[str, str] | None] = dict.fromkeys(DIRECTORIES)
    for line in output:
        words = line.split()
        if len(words) == 5 and words[0] == "dir" and words[1] in directories:
            directories[words[1]] = {"user": words[2], "group": words[3], "mode": words[4]}
    return directories


def parse_version(line: str) -> str | None:
    """The version in a ``k3s --version`` first line, or a bare version; ``None`` if empty."""
    words = line.split()
    if len(words) >= 3 and words[0] == "k3s" and words[1] == "version":
        return words[2]
    return words[0] if words else None


class K3sState(FactBase[dict[str, Any]]):
    """Everything the cluster deploy reads from a node, in one command.

    ``tailnet=False`` leaves out ``tailscale ip`` when the inventory already knows the node's
    tailnet address (``tailnet_ip`` is then ``None``).

    .. code:: python

        host.get_fact(K3sState, _sudo=True)
        # {"version": "v1.34.2+k3s1", "config_sha256": "...",
        #  "vpn_auth_sha256": None, "unit_sha256": {"k3s": "...", "k3s-agent": None},
        #  "datastore": "etcd",
        #  "node_token": True, "join": "cluster-init", "tailnet_ip": "100.64.0.11",
        #  "directories": {"/etc/rancher/k3s": {"user": "root", "group": "root", "mode": "755"},
        #                  "/var/lib/rancher/k3s": {...}},
        #  "services": {"k3s": {"ActiveState": "active", ...}, "k3s-agent": {...}}}
    """

    def command(self, tailnet: bool = True) -> str:
        # About ten processes: this runs on every node on every run. No checksum of the binary:
        # the version says what is installed, and hashing K3s's ~70 MB binary would cost each
        # node a fraction of a second.
        files = " ".join([CONFIG, VPN_AUTH_FILE, *_UNIT_FILES.values()])
        props = ",".join(SERVICE_PROPERTIES)
        lines = [
            f'echo "version=$(test -x {K3S_BIN} && {K3S_BIN} --version 2>/dev/null | head -n1)"',
            f'echo "datastore=$({_DATASTORE_SH})"',
            f'echo "node_token=$(test -s {NODE_TOKEN} && echo yes)"',
            f"sed -n -E 's/^(server|cluster-init): */join.\\1=/p' {CONFIG} 2>/dev/null",
            f"sha256sum {files} 2>/dev/null",
            _DIRECTORIES_SH,
        ]
        if tailnet:
            lines.append('echo "tailnet_ip=$(tailscale ip -4 2>/dev/null | head -n1)"')
        # one systemctl for both units: blocks in argument order, numbered by awk
        lines.append(
            f"systemctl show -p{props} {' '.join(SERVICES)} 2>/dev/null"
            ' | awk \'BEGIN {n = 0} /^$/ {n++; next} {print "unit" n "." $0}\''
        )
        return "; ".join(lines)

    def process(self, output: list[str]) -> dict[str, Any]:
        pairs = _parse_pairs(output)
        digests: dict[str, str] = {}
        join = None
        for line in output:
            words = line.split()
            if len(words) == 2 and len(words[0]) == 64:  # sha256sum: "<hex>  <path>"
                digests[words[1]] = words[0]
            elif join is None and line.startswith("join."):  # the first server:/cluster-init:
                key, _, value = line.partition("=")
                value = value.strip().strip("\"'")
                if key == "join.server":
                    join = value or None
                elif value == "true":  # cluster-init: true
                    join = "cluster-init"
        state: dict[str, Any] = {
            "version": parse_version(pairs.get("version", "")),
            "config_sha256": digests.get(CONFIG),
            "vpn_auth_sha256": digests.get(VPN_AUTH_FILE),
            "datastore": pairs.get("datastore") or None,
            "node_token": pairs.get("node_token") == "yes",
            "join": join,
            "tailnet_ip": pairs.get("tailnet_ip") or None,
            "directories": _parse_directories(output),
            "unit_sha256": {},
            "services": {},
        }
        for index, service in enumerate(SERVICES):
            state["unit_sha256"][service] = digests.get(_UNIT_FILES[service])
            state["services"][service] = {
                p: pairs[f"unit{index}.{p}"]
                for p in SERVICE_PROPERTIES
                if f"unit{index}.{p}" in pairs
            }
        return state
