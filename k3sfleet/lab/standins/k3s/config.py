"""k3s configuration: /etc/rancher/k3s/config.yaml, config.yaml.d/*.yaml and command-line flags.

Like real k3s (k3s-io/k3s v1.34.2+k3s1 ``pkg/configfilearg``): keys are flag names without
dashes; ``parser.go`` ``dotDFiles`` takes the ``*.yaml``/``*.yml`` files (any case, no
directories) of ``config.yaml.d`` in name order after config.yaml, and ``readConfigFile``
turns them into flags placed BEFORE the command line's, so a key ending in ``+`` appends to a
list, later files and then flags override a scalar, and list flags (``--node-label``,
``--node-taint``, ``--tls-san``) accumulate. ``defaultparser.go``: the file is ``--config``/
``-c``, else ``$K3S_CONFIG_FILE`` (``findConfigFileFlag`` reads the variable first), else
/etc/rancher/k3s/config.yaml. ``K3S_*`` variables are urfave/cli ``EnvVar`` defaults of the
flags (pkg/cli/cmds/server.go, agent.go), so any value from a file or the command line wins.

Example::

    config = load_config(["--node-ip", "10.0.0.1"], Path("/etc/rancher/k3s/config.yaml"))
    config["node-ip"]   # "10.0.0.1"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path("/etc/rancher/k3s/config.yaml")
# StringSlice flags of pkg/cli/cmds/server.go and agent.go.
LIST_KEYS = frozenset(
    {
        "node-label",
        "node-taint",
        "tls-san",
        "kube-apiserver-arg",
        "kubelet-arg",
        "disable",
        "node-ip",
        "node-external-ip",
        "etcd-arg",
        "kube-controller-manager-arg",
        "kube-scheduler-arg",
        "kube-proxy-arg",
    }
)
# BoolFlags of pkg/cli/cmds/server.go and agent.go (a bare ``--flag`` means true).
BOOL_KEYS = frozenset(
    {
        "cluster-init",
        "cluster-reset",
        "disable-network-policy",
        "secrets-encryption",
        "protect-kernel-defaults",
        "selinux",
        "debug",
        "disable-cloud-controller",
        "disable-kube-proxy",
        "embedded-registry",
        "etcd-expose-metrics",
        "etcd-snapshot-compress",
        "etcd-s3",
        "etcd-s3-insecure",
        "etcd-s3-skip-ssl-verify",
        "etcd-disable-snapshots",
        "disable-helm-controller",
        "disable-scheduler",
        "disable-apiserver",
        "disable-etcd",
        "disable-controller-manager",
        "flannel-ipv6-masq",
        "prefer-bundled-bin",
        "rootless",
        "with-node-id",
    }
)

# Aliases in pkg/cli/cmds (``write-kubeconfig,o``, ``token,t``, ``server,s``, ``config,c``).
SHORT_FLAGS = {"o": "write-kubeconfig", "t": "token", "s": "server", "c": "config", "v": "v"}


def _merge(config: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        key = str(key)
        if key.endswith("+"):
            base = key[:-1]
            current = config.get(base, [])
            current = current if isinstance(current, list) else [current]
            config[base] = current + (value if isinstance(value, list) else [value])
        else:
            config[key] = value


def read_files(path: Path) -> dict[str, Any]:
    """Read config.yaml then config.yaml.d/*.yaml (name order); missing files are fine."""
    config: dict[str, Any] = {}
    files = [path] if path.exists() else []
    drop_in = path.parent / (path.name + ".d")
    if drop_in.is_dir():  # dotDFiles: util.HasSuffixI(name, ".yaml", ".yml"), no directories
        files += sorted(p for p in drop_in.iterdir()
                        if p.is_file() and p.name.lower().endswith((".yaml", ".yml")))
    for file in files:
        data = yaml.safe_load(file.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a mapping of flag names to values")
        _merge(config, data)
    return config


def parse_flags(argv: list[str]) -> dict[str, Any]:
    """Parse ``--key value`` / ``--key=value`` / ``--bool-flag`` flags into a config mapping."""
    flags: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if not arg.startswith("-"):
            raise ValueError(f"unexpected argument {arg!r}")
        name, has_value, value = arg.lstrip("-").partition("=")
        name = SHORT_FLAGS.get(name, name)
        implicit = False
        if has_value:
            pass
        elif name in BOOL_KEYS or index >= len(argv) or argv[index].startswith("--"):
            value, implicit = "true", True  # a boolean flag (or an unknown one before a flag)
        else:
            value = argv[index]
            index += 1
        parsed: Any = value
        if name in BOOL_KEYS or implicit:
            parsed = value.lower() in ("1", "true", "yes")
        if name in LIST_KEYS:
            flags.setdefault(name, []).extend(v for v in value.split(",") if v)
        else:
            flags[name] = parsed
    return flags


def as_list(value: Any) -> list[str]:
    """A config value that may be a scalar, a comma-separated string or a list, as a list."""
    if value is None:
        return []
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out += as_list(item)
        return out
    return [part.strip() for part in str(value).split(",") if part.strip()]


# The environment variables k3s reads (``EnvVar`` of the flags in pkg/cli/cmds/server.go and
# agent.go; the install script's k3s.service.env uses them).
ENV_KEYS = {
    "K3S_TOKEN": "token",
    "K3S_TOKEN_FILE": "token-file",
    "K3S_URL": "server",
    "K3S_AGENT_TOKEN": "agent-token",
    "K3S_AGENT_TOKEN_FILE": "agent-token-file",
    "K3S_NODE_NAME": "node-name",
    "K3S_KUBECONFIG_OUTPUT": "write-kubeconfig",
    "K3S_KUBECONFIG_MODE": "write-kubeconfig-mode",
    "K3S_CLUSTER_INIT": "cluster-init",
    "K3S_DATA_DIR": "data-dir",
    "K3S_CONFIG_FILE": "config",
}


def load_config(
    argv: list[str], path: Path = DEFAULT_CONFIG, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """K3S_* environment variables, overridden by the files, overridden by the flags.

    The file is ``$K3S_CONFIG_FILE``, else ``--config``, else ``path``."""
    env = os.environ if environ is None else environ
    config: dict[str, Any] = {ENV_KEYS[k]: v for k, v in env.items() if k in ENV_KEYS and v}
    if "cluster-init" in config:
        config["cluster-init"] = str(config["cluster-init"]).lower() in ("1", "true", "yes")
    flags = parse_flags(argv)
    config_path = Path(config.pop("config", None) or flags.pop("config", None) or path)
    flags.pop("config", None)
    config.update(read_files(config_path))
    for key, value in flags.items():
        if key in LIST_KEYS and key in config:
            config[key] = as_list(config[key]) + value
        else:
            config[key] = value
    return config
