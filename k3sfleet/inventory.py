"""Build pyinfra inventory groups from a list of ``Node``s, validating everything first.

``inventory.py`` at the project root declares the nodes; this module turns them into the
``k3s_servers`` / ``k3s_agents`` groups pyinfra reads, with each node's address and SSH user
taken from the vault maps (``vault_ansible_hosts`` / ``vault_ansible_users``, and
``vault_tailscale_hosts`` when ``K3SFLEET_CONNECT=tailnet``), so no address is committed.

Every problem (missing vault entries, unknown or duplicate names, no server, settings the entry
file being run needs) is collected and raised as one ``ConfigError`` before pyinfra connects.

Example (``inventory.py``)::

    from k3sfleet.inventory import Node, groups

    _NODES = [
        Node("vps-hetzner-1", role="server", provider="hetzner"),
        Node("vps-vultr-1", role="agent", provider="vultr", labels={"k3sfleet/ingress": "true"}),
    ]
    k3s_servers, k3s_agents = groups(_NODES)
"""

from __future__ import annotations

import difflib
import functools
import getpass
import inspect
import ipaddress
import re
import sys
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
from pyinfra.api import Inventory
from pyinfra.connectors.ssh import ConnectorData

from k3sfleet.errors import ConfigError, K3sfleetError
from k3sfleet.preflight import entry_problems
from k3sfleet.settings import Settings, deploy_data_blocks, setting_fields

ROLE_ALIASES = {"master": "server", "worker": "agent"}
GROUP_ALIASES = {"k3s_masters": "k3s_servers", "k3s_workers": "k3s_agents"}
ROLES = ("server", "agent")


@dataclass
class Node:
    """One VPS: its inventory name (also its hostname and Kubernetes node name) and role.

    ``address`` / ``ssh_user`` override the vault maps (the lab uses them); ``data`` is extra
    pyinfra host data (for example ``firewall_extra_rules``).
    """

    name: str
    role: str
    provider: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[str] = field(default_factory=list)
    address: str | None = None
    tailnet_address: str | None = None
    ssh_user: str | None = None
    ssh_port: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role in ROLE_ALIASES:
            new = ROLE_ALIASES[self.role]
            deprecated(f"node {self.name}: role {self.role!r} is deprecated, use {new!r}")
            self.role = new


_warned: set[str] = set()


def deprecated(message: str) -> None:
    """Tell the user (once per run, on stderr) that an Ansible-era name still works but is
    deprecated. Not a ``DeprecationWarning``: Python hides those outside ``__main__``."""
    if message not in _warned:
        _warned.add(message)
        print(f"k3sfleet: {message}", file=sys.stderr)


def nodes_from_groups(**groups: Iterable[str | tuple[str, dict[str, Any]]]) -> list[Node]:
    """Nodes from Ansible-style groups: ``k3s_servers``/``k3s_agents`` (or the deprecated
    ``k3s_masters``/``k3s_workers``) of names or ``(name, data)`` pairs."""
    nodes = []
    for group, members in groups.items():
        if group in GROUP_ALIASES:
            deprecated(f"group {group} is deprecated, use {GROUP_ALIASES[group]}")
            group = GROUP_ALIASES[group]
        if group not in ("k3s_servers", "k3s_agents"):
            raise ConfigError(f"unknown group {group!r}: use k3s_servers and k3s_agents")
        role = "server" if group == "k3s_servers" else "agent"
        for member in members:
            name, data = (member, {}) if isinstance(member, str) else member
            nodes.append(Node(name, role=role, data=dict(data)))
    return nodes


# The entry files being run, for commands that execute an inventory file themselves (``k3sfleet
# check``, ``k3sfleet upgrade``): set with ``running(...)``.
_running: ContextVar[tuple[str, ...] | None] = ContextVar("k3sfleet_running", default=None)


@contextmanager
def running(entries: Sequence[str | Path]) -> Iterator[None]:
    """Run ``groups()`` of an inventory file executed inside this block for ``entries``.

    Example::

        with running(["deploys/bootstrap.py"]):
            inventory_from_file("inventory.py")   # ConfigError when bootstrap's checks fail
    """
    token = _running.set(tuple(str(e) for e in entries))
    try:
        yield
    finally:
        _running.reset(token)


def entries_being_run() -> list[str]:
    """The entry files being run: those given to ``running()``, else the OPERATIONS of the
    pyinfra command line loading this inventory (its deploy files, or the function of
    ``pyinfra INVENTORY module.function``; nothing for ``fact``, ``exec`` or
    ``debug-inventory``).

    pyinfra's CLI is a click command whose OPERATIONS argument is ``operations``
    (pyinfra_cli/cli.py in pyinfra 3.10: ``@click.argument("operations", nargs=-1, ...)``;
    ``_validate_operations`` there tells deploy files, which all end with ``.py``, from a
    ``module.function``); click's public ``get_current_context`` gives its parsed value.
    """
    given = _running.get()
    if given is not None:
        return list(given)
    context = click.get_current_context(silent=True)
    operations = [str(o) for o in context.params.get("operations") or ()] if context else []
    if operations and all(o.endswith(".py") for o in operations):
        return operations
    if operations and operations[0] not in ("fact", "exec", "debug-inventory") and (
        "." in operations[0] or ":" in operations[0]
    ):
        return operations[:1]
    return []


INGRESS_LABEL = "k3sfleet/ingress"


def is_ingress(labels: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether a node with ``labels`` (and host ``data``) is an ingress node: its
    ``firewall_ingress_label`` (default ``k3sfleet/ingress``) is ``"true"``, the nodes where the
    firewall opens 80/443.

    Example::

        is_ingress({"k3sfleet/ingress": "true"}, {})   # True
    """
    return str(labels.get(data.get("firewall_ingress_label") or INGRESS_LABEL, "")) == "true"


def public_address(node: Node, vault: Mapping[str, Any]) -> str | None:
    """The node's public address: its own ``address``, else its ``vault_ansible_hosts`` entry
    (the address k3sfleet reaches it at with ``K3SFLEET_CONNECT=public``)."""
    if node.address is not None:
        return node.address
    hosts = vault.get("vault_ansible_hosts")
    found = hosts.get(node.name) if isinstance(hosts, Mapping) else None
    return str(found) if found else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
TAINT = re.compile(r"^[^=:\s]+(=[^=:\s]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$")
# Kubernetes label syntax, k8s.io/apimachinery pkg/util/validation/validation.go
# (IsQualifiedName, IsValidLabelValue, IsDNS1123Subdomain): a key is [prefix/]name, the prefix a
# DNS-1123 subdomain of at most 253 characters, the name and the value at most 63 characters of
# [A-Za-z0-9-_.] starting and ending alphanumeric; a value may be empty.
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A host name (RFC 1123 labels); an address made of digits and dots only must be an IPv4 address
HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)"
                      r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\.?$")
# Host data keys the deploys read that no deploy declares in its DEFAULTS block and that are not
# settings: what host_data sets, and what the rolling engine reads (tests/unit/test_inventory.py
# keeps this in step with the deploys).
READ_DATA_KEYS = frozenset({
    "k3s_role", "k3s_node_name", "k3s_node_labels", "k3s_node_taints",
    "k3sfleet_provider", "k3sfleet_tailnet_address", "k3sfleet_public_address",
    "k3sfleet_project_dir", "rolling_ready_timeout",
})


@functools.cache
def declared_data_keys() -> frozenset[str]:
    """The keys of every deploy's ``DEFAULTS`` block, read from the deploy files' source (the
    inventory is checked before any deploy is imported, and k3sfleet does not import deploys)."""
    blocks = deploy_data_blocks(Path(__file__).resolve().parent / "deploys")
    return frozenset(key for block in blocks.values() for key in block)
# Prefixes of k3sfleet's own data: an unknown key with one of them is a typo, not user data
DATA_PREFIXES = ("common_", "firewall_", "tailscale_", "k3s_", "k3sfleet_", "argocd_",
                 "databases_", "rolling_", "maintenance_", "ssh_")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``known``, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


def label_problems(node: Node) -> list[str]:
    """Labels that K3s would refuse or pass on as something else (``True`` is not ``"true"``)."""
    problems = []
    labels = node.labels if isinstance(node.labels, Mapping) else {}
    if not isinstance(node.labels, Mapping):
        problems.append(f"node {node.name}: labels must be a map of key to string value")
    for key, value in labels.items():
        where = f"node {node.name}: label {key!r}"
        prefix, _, name = str(key).rpartition("/")
        if not isinstance(key, str) or not (
            QUALIFIED_NAME.match(name) and len(name) <= 63
            and (not prefix or (DNS1123_SUBDOMAIN.match(prefix) and len(prefix) <= 253))
            and str(key).count("/") <= 1
        ):
            problems.append(f"{where}: a key is [prefix/]name: a DNS subdomain, then at most 63 "
                            "of A-Z a-z 0-9 - _ . starting and ending alphanumeric")
        if not isinstance(value, str):
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            problems.append(f'{where}: the value must be a string, write "{shown}" not {value!r}')
        elif value and not (QUALIFIED_NAME.match(value) and len(value) <= 63):
            problems.append(f"{where}: value {value!r} must be empty or at most 63 of "
                            "A-Z a-z 0-9 - _ . starting and ending alphanumeric")
    return problems


def address_problem(address: Any) -> str | None:
    """Why ``address`` is neither an IP address nor a host name, or ``None``."""
    text = str(address)
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", text):
        return f"{text!r} is not an IPv4 address"
    if not HOSTNAME.match(text):
        return f"{text!r} is neither an IP address nor a host name (no scheme, user, port or space)"
    return None


def data_key_problems(node: Node) -> list[str]:
    """Host data keys of ``node`` that look like k3sfleet's but are not (typos)."""
    known = (declared_data_keys() | READ_DATA_KEYS | {f.name for f in setting_fields()}
             | set(ConnectorData.__annotations__))
    problems = []
    for key in node.data:
        if key in known or key.startswith("_"):
            continue
        hint = did_you_mean(key, known)
        if hint or key.startswith(DATA_PREFIXES):
            problems.append(f"node {node.name}: unknown host data key {key!r}{hint}")
    return problems


def validate(
    nodes: Sequence[Node],
    settings: Settings,
    entry_files: Sequence[str | Path] = (),
    *,
    check_vault: bool = True,
) -> list[str]:
    """Every problem with ``nodes`` and ``settings`` for running ``entry_files``, as text.
    ``check_vault=False`` checks only the nodes themselves (when the vault could not be read).

    Example::

        validate([Node("a", role="agent")], settings)
        # ['the inventory has no server (role=\'server\')', 'node a has no address in ...']
    """
    problems = node_problems(nodes)
    if not check_vault:
        return problems
    problems += vault_problems(nodes, settings)
    problems.extend(entry_problems(entry_files, settings, nodes))
    return list(dict.fromkeys(problems))  # a duplicated node is named once per problem


def node_problems(nodes: Sequence[Node]) -> list[str]:
    """What is wrong with the nodes as declared: names, roles, labels, data keys, addresses,
    taints, and whether there is a server."""
    problems: list[str] = []
    names = [n.name for n in nodes]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"node {name} is declared {names.count(name)} times")
    for n in nodes:
        if not NODE_NAME.match(n.name):
            problems.append(
                f"node {n.name!r}: a name must be a lower-case DNS label (a-z, 0-9, -), "
                "as it is the hostname and the Kubernetes node name"
            )
        if n.role not in ROLES:
            problems.append(f"node {n.name}: role must be server or agent, not {n.role!r}")
        problems += label_problems(n) + data_key_problems(n)
        for attr in ("address", "tailnet_address"):
            value = getattr(n, attr)
            problem = address_problem(value) if value is not None else None
            if problem:
                problems.append(f"node {n.name}: {attr} {problem}")
        for taint in n.taints:
            if not TAINT.match(taint):
                problems.append(
                    f"node {n.name}: taint {taint!r} is not key[=value]:NoSchedule|"
                    "PreferNoSchedule|NoExecute"
                )
    if not any(n.role == "server" for n in nodes):
        problems.append("the inventory has no server (role='server')")
    return problems


def vault_problems(nodes: Sequence[Node], settings: Settings) -> list[str]:
    """What the vault lacks or has too much of for ``nodes``: its file, the address and user
    maps (``vault_ansible_hosts``, ``vault_ansible_users``, ``vault_tailscale_hosts``)."""
    problems: list[str] = []
    from_vault = [n for n in nodes if n.address is None]
    missing_file = settings.vault_path is not None and not settings.vault_path.exists()
    if missing_file and (from_vault or any(n.ssh_user is None for n in nodes)):
        problems.append(
            f"the vault file {settings.vault_path} does not exist (`k3sfleet init` writes one; "
            "K3SFLEET_VAULT_FILE names another)"
        )
    maps, problems_of_maps = _vault_maps(settings.vault)
    problems += problems_of_maps
    if settings.k3sfleet_connect != "tailnet" and from_vault:
        problems += _map_entries(maps, "vault_ansible_hosts", from_vault, settings.vault,
                                 "address")
    need_user = [n for n in from_vault if n.ssh_user is None]
    if need_user:
        problems += _map_entries(maps, "vault_ansible_users", need_user, settings.vault,
                                 "SSH user")
    problems += ingress_problems(nodes, settings)
    known = {n.name for n in nodes}
    for key, mapping in maps.items():
        for extra in sorted(set(mapping or ()) - known):
            problems.append(f"vault {key} names {extra}, which the inventory lacks")
    for key in ("vault_ansible_hosts", "vault_tailscale_hosts"):
        for name, value in (maps[key] or {}).items():
            problem = address_problem(value) if value and name in known else None
            if problem:
                problems.append(f"vault {key}: node {name}: {problem}")
    return problems


def ingress_problems(nodes: Sequence[Node], settings: Settings) -> list[str]:
    """Ingress nodes need a public IP address (their node-external-ip, published in DNS)."""
    problems = []
    for n in nodes:
        if not is_ingress(n.labels, n.data):
            continue
        public = public_address(n, settings.vault)
        if public is None and settings.k3sfleet_connect == "tailnet":
            # (with public, the missing address is named with the vault maps)
            problems.append(
                f"ingress node {n.name} has no public address in vault vault_ansible_hosts "
                "(its node-external-ip, published in DNS)"
            )
        elif public is not None and not _is_ip(public) and address_problem(public) is None:
            # (a malformed address is named with the vault map's problems)
            problems.append(
                f"ingress node {n.name}: public address {public!r} in vault_ansible_hosts must "
                "be an IP address (it becomes node-external-ip, published in DNS)"
            )
    return problems


def _vault_maps(
    vault: Mapping[str, Any],
) -> tuple[dict[str, Mapping[str, Any] | None], list[str]]:
    """The vault's node maps (``None`` where absent or not a map) and the problems with them."""
    maps: dict[str, Mapping[str, Any] | None] = {}
    problems = []
    for key in ("vault_ansible_hosts", "vault_ansible_users", "vault_tailscale_hosts"):
        value = vault.get(key)
        if value is not None and not isinstance(value, Mapping):
            problems.append(f"vault {key} must be a map of node name to value")
            value = None
        maps[key] = value
    return maps, problems


def _map_entries(
    maps: Mapping[str, Mapping[str, Any] | None],
    key: str,
    nodes: Sequence[Node],
    vault: Mapping[str, Any],
    what: str,
) -> list[str]:
    """The nodes that need an entry in vault map ``key`` and have none (or the map is
    missing)."""
    mapping = maps[key]
    if mapping is None and key not in vault:
        return [f"vault has no {key} map (needed for {len(nodes)} node(s))"]
    if mapping is None:
        return []
    return [f"node {n.name} has no {what} in vault {key}" for n in nodes if not mapping.get(n.name)]


def node_address(node: Node, settings: Settings) -> str:
    """The address k3sfleet connects to: with ``K3SFLEET_CONNECT=public`` the node's own
    ``address`` or its ``vault_ansible_hosts`` entry; with ``tailnet`` its ``tailnet_address``,
    its ``vault_tailscale_hosts`` entry, else its MagicDNS name (``name.K3SFLEET_TAILNET_DOMAIN``,
    or the bare name when the domain is unset)."""
    vault = settings.vault
    if settings.k3sfleet_connect == "tailnet":
        if node.tailnet_address:
            return node.tailnet_address
        tailnet_hosts = vault.get("vault_tailscale_hosts") or {}
        if tailnet_hosts.get(node.name):
            return str(tailnet_hosts[node.name])
        domain = settings.k3sfleet_tailnet_domain
        return f"{node.name}.{domain.strip('.')}" if domain else node.name
    if node.address is not None:
        return node.address
    return str(vault["vault_ansible_hosts"][node.name])


def login_user(data: Mapping[str, Any]) -> str:
    """The user pyinfra logs in as on a host with ``data``: ``ssh_user``, else the local user
    (pyinfra then passes no user and paramiko takes ``getpass.getuser()``).

    Example::

        login_user({"ssh_user": "admin"})  # "admin"
    """
    return str(data.get("ssh_user") or getpass.getuser())


def sudo_data(user: str) -> dict[str, Any]:
    """The host data that makes every operation and fact on a host logged in as ``user`` run
    with sudo: ``{"_sudo": True}`` unless ``user`` is root. This is the one sudo rule: pyinfra
    reads each global argument such as ``_sudo`` and ``_sudo_user`` from the host data whenever
    neither the operation nor its ``@deploy`` gives one (pyinfra v3.10.0
    ``pyinfra/api/arguments.py`` ``pop_global_arguments``: "From the host data variables"; facts
    too, through ``pyinfra/api/facts.py`` ``_handle_fact_kwargs``), and k3sfleet's own SSH
    commands read the same keys (``k3sfleet.kube.HostInfo.from_data``). Deploys never decide.

    Example::

        sudo_data("admin")  # {"_sudo": True}
        sudo_data("root")   # {}
    """
    return {} if user == "root" else {"_sudo": True}


def host_data(node: Node, settings: Settings) -> dict[str, Any]:
    """The pyinfra host data of ``node``: every setting (by field name), SSH connection data
    (host keys always checked), ``_sudo`` unless it logs in as root (``sudo_data``), and the
    node's role, provider, labels and taints."""
    vault = settings.vault
    data: dict[str, Any] = settings.as_host_data()
    user = node.ssh_user or (vault.get("vault_ansible_users") or {}).get(node.name)
    data.update(
        ssh_hostname=node_address(node, settings),
        ssh_known_hosts_file=str(Path(settings.k3sfleet_known_hosts).expanduser()),
        ssh_strict_host_key_checking="yes",
        k3s_role=node.role,
        k3sfleet_provider=node.provider,
        k3s_node_name=node.name,
        k3s_node_labels=dict(node.labels),
        k3s_node_taints=list(node.taints),
    )
    if node.tailnet_address:
        data["k3sfleet_tailnet_address"] = node.tailnet_address
    public = public_address(node, vault)
    if public is not None:
        data["k3sfleet_public_address"] = public
    if user:
        data["ssh_user"] = str(user)
    if node.ssh_port:
        data["ssh_port"] = node.ssh_port
    if settings.k3sfleet_ssh_key:
        data["ssh_key"] = str(Path(settings.k3sfleet_ssh_key).expanduser())
    data.update(sudo_data(login_user(data)))
    data.update(node.data)  # (a node's own `_sudo` / `_sudo_user` win)
    return data


def groups(
    nodes: Sequence[Node],
    settings: Settings | None = None,
    *,
    project_dir: Path | str | None = None,
    entry_files: Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """The ``(k3s_servers, k3s_agents)`` pyinfra groups for ``nodes``.

    Loads the settings from ``project_dir`` (default: the caller's directory) unless given,
    validates everything for the entry files on the command line, and raises one
    ``ConfigError`` listing every problem, before any host is contacted. Under the pyinfra CLI
    the error points at the line of the inventory file that called ``groups``.
    """
    caller = inspect.currentframe()
    caller = caller.f_back if caller is not None else None
    problems: list[str] = []
    if settings is None:
        if project_dir is None:
            caller_file = caller.f_globals.get("__file__") if caller else None
            project_dir = Path(caller_file).resolve().parent if caller_file else Path.cwd()
        try:
            settings, problems = Settings.load_partial(project_dir)
        except K3sfleetError as e:
            _raise_in_caller(ConfigError(str(e)), caller)
    entries = entries_being_run() if entry_files is None else entry_files
    if settings.vault_readable:
        problems.extend(validate(nodes, settings, entries))
    else:  # still name the problems of the nodes themselves
        problems.extend(validate(nodes, settings, (), check_vault=False))
    if problems:
        _raise_in_caller(ConfigError(problems), caller)
    servers: list[tuple[str, dict[str, Any]]] = []
    agents: list[tuple[str, dict[str, Any]]] = []
    for node in nodes:
        data = host_data(node, settings)
        if overrides:
            data.update(overrides)
        (servers if node.role == "server" else agents).append((node.name, data))
    return servers, agents


def _raise_in_caller(error: Exception, frame: types.FrameType | None) -> NoReturn:
    """Raise ``error`` with the caller's frame as its innermost traceback entry, so pyinfra's
    CLI (which names the innermost frame outside pyinfra: pyinfra_cli/exceptions.py
    ``get_frame_line_from_tb``, 3.10) reports ``inventory.py line N`` rather than a line inside
    k3sfleet. A traceback entry is made with ``types.TracebackType`` (public since Python 3.7)."""
    if frame is None:
        raise error
    raise error.with_traceback(types.TracebackType(None, frame, frame.f_lasti, frame.f_lineno))


def pyinfra_inventory(
    nodes: Sequence[Node],
    settings: Settings | None = None,
    *,
    project_dir: Path | str = ".",
    entry_files: Sequence[str | Path] = (),
) -> Any:
    """A pyinfra ``Inventory`` of ``nodes`` with the ``k3s_servers`` / ``k3s_agents`` groups,
    for the Python API (validated like ``groups``).

    Example::

        state = State(pyinfra_inventory(NODES, entry_files=["bootstrap"]), Config())
    """
    servers, agents = groups(nodes, settings, project_dir=project_dir, entry_files=entry_files)
    return Inventory(
        ([*servers, *agents], {}),
        k3s_servers=([name for name, _ in servers], {}),
        k3s_agents=([name for name, _ in agents], {}),
    )
