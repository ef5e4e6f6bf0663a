"""Render the pyinfra inventory file of a lab.

The file declares the lab's hosts as ``k3sfleet.inventory.Node``s with their addresses and
builds ``k3s_servers`` / ``k3s_agents`` with ``groups()``, from the settings of the directory
pyinfra runs in with the lab's overrides applied (so preflight checks see the lab's values).

Example::

    text = render("lab1", lab.hosts, lab.settings_overrides)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pyinfra.api import HiddenValue


class _Host(Protocol):
    name: str
    role: str
    public_ip: str
    tailnet_ip: str
    user: str
    ssh_port: int


def python_source(value: Any) -> str:
    """Python source for ``value``; secrets stay ``Secret`` (masked in pyinfra's output)."""
    if isinstance(value, HiddenValue):
        return f"Secret({value.unmask()!r})"
    if isinstance(value, Mapping):
        items = ", ".join(f"{python_source(k)}: {python_source(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(python_source(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner}{',' if len(value) == 1 else ''})"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} into a lab inventory")


TEMPLATE = '''\
"""pyinfra inventory of the k3sfleet lab {name} (written by `k3sfleet lab inventory`).

Run from the project directory:  pyinfra {{this file}} deploys/bootstrap.py
Host keys are checked against the lab's known_hosts; nothing here reaches beyond the lab.
"""

import dataclasses
from pathlib import Path

from k3sfleet.inventory import Node, groups
from k3sfleet.secret import Secret
from k3sfleet.settings import Settings, setting_fields

_LAB = {name!r}
_OVERRIDES = {overrides}

_NODES = [
{nodes}]

_names = {{f.name for f in setting_fields()}}
_settings = dataclasses.replace(
    Settings.load(Path.cwd()), **{{k: v for k, v in _OVERRIDES.items() if k in _names}}
)
k3s_servers, k3s_agents = groups(_NODES, _settings, overrides=_OVERRIDES)
'''


def render(name: str, hosts: Iterable[_Host], overrides: Mapping[str, Any]) -> str:
    """The inventory file's text for ``hosts`` of lab ``name`` with ``overrides`` as host data."""
    nodes = "".join(
        f"    Node({h.name!r}, role={h.role!r}, provider='lab', address={h.public_ip!r}, "
        f"tailnet_address={h.tailnet_ip!r}, ssh_user={h.user!r}, ssh_port={h.ssh_port!r}),\n"
        for h in hosts
    )
    body = ",\n".join(f"    {k!r}: {python_source(v)}" for k, v in overrides.items())
    return TEMPLATE.format(name=name, overrides="{\n" + body + ",\n}", nodes=nodes)
