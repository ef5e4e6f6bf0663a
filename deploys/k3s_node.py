"""What K3s servers and agents share: the cluster plan, config, unit rendering, service.

* ``cluster_plan()`` reads, all at once, the snapshot (``deploys.readmodel``, with K3s's files,
  units and ``K3sState``) of every server and of every node in this run (and the first server's
  node-token when a node joins with it), then decides who runs ``cluster-init`` and whom each
  server joins (``k3sfleet.k3s_plan``). The operations consult the same snapshots: one remote
  command per node per run.
* ``k3s_config`` renders /etc/rancher/k3s/config.yaml when it runs: the token and server URL of
  a joining node come from its server's facts at that moment, so a fresh cluster comes up in
  one run. The previous config is kept as ``config.yaml.previous``.
* ``k3s_service`` restarts K3s only when its binary, unit, config or vpn-auth file changed this
  run (or it is not running), waits until it is healthy (one failed start is left to the
  unit's own restart), and when it is not, puts the previous config back, restarts, and fails
  with a clear message.

Example::

    plan = cluster_plan()
    plan.joins["lab-server-2"]   # "lab-server-1"
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent.lock
from pyinfra import host, inventory, logger, state
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_state

from k3sfleet.deploys.k3s_install import k3s_binary
from k3sfleet.deploys.ops import file
from k3sfleet.deploys.readmodel import read_at_once, snapshot, unit_state, watch
from k3sfleet.deploys.tailscale import up_flags
from k3sfleet.errors import ConfigError
from k3sfleet.facts.k3s import CONFIG, DIRECTORIES, K3S_BIN, NODE_TOKEN, VPN_AUTH_FILE
from k3sfleet.facts.tailscale import TailscaleStatus
from k3sfleet.inventory import is_ingress
from k3sfleet.k3s_plan import joining_servers, plan_servers
from k3sfleet.secret import Secret, read_secret_file, reveal
from k3sfleet.settings import Default
from k3sfleet.templating import environment
from k3sfleet.token import notice as token_notice
from k3sfleet.versions import etcd_on_tailnet, refusal

API_PORT = 6443
# The host data servers and agents share (k3s_server.py and k3s_agent.py extend this block).
DEFAULTS: dict[str, Default] = {
    "k3s_flannel_iface": Default(
        "tailscale0", "flannel's interface, pinning the node IP to the tailnet (`null`: none)"),
    "k3s_extra_config": Default(
        {}, "more config.yaml keys, passed through (never the ones k3sfleet manages)"),
    "k3s_health_timeout": Default(
        120, "seconds a restarted K3s has to answer healthy before its config is rolled back"),
}
HEALTH_TIMEOUT: int = DEFAULTS["k3s_health_timeout"].value
SERVICE = {"server": "k3s", "agent": "k3s-agent"}
UNIT = {role: f"/etc/systemd/system/{svc}.service" for role, svc in SERVICE.items()}
#: What the cluster deploys consult in a node's snapshot (``deploys.readmodel.watch``).
FILES = (CONFIG, VPN_AUTH_FILE, *UNIT.values())
UNITS = tuple(f"{svc}.service" for svc in SERVICE.values())

ETCD_WAN_WARNING = (
    "k3s does not support embedded etcd across servers that are not on one LAN "
    "(https://docs.k3s.io/networking/distributed-multicloud): servers {servers} form one "
    "etcd cluster over the tailnet; keep them in one region/provider or run a single server"
)


# -- rendering ---------------------------------------------------------------------------------


def render_config(settings: Mapping[str, Any], entry: str) -> str:
    """config.yaml text for ``settings`` (key -> value, in order); values are JSON-quoted."""
    plain = {k: reveal(v) if isinstance(v, Secret) else v for k, v in settings.items()}
    return environment().get_template("k3s-config.yaml.j2").render(settings=plain, entry=entry)


def render_unit(role: str, after_tailscale: bool = True) -> str:
    """The systemd unit of ``role`` (``k3s.service`` or ``k3s-agent.service``); no secrets."""
    name = "k3s.service.j2" if role == "server" else "k3s-agent.service.j2"
    template = environment().get_template(name)
    return template.render(k3s_bin=K3S_BIN, after_tailscale=after_tailscale)


def vpn_auth_text(auth_key: Secret | str, up_args: Iterable[str] = ()) -> Secret:
    """The vpn-auth file content: ``name=tailscale,joinKey=<key>[,extraArgs=<args>]``.

    k3s's ``tailscale up`` passes only what follows ``,extraArgs=`` (the last item: k3s
    v1.34.2+k3s1 ``pkg/vpn/vpn.go`` ``processCLIArgs`` splits the value at ``,extraArgs=`` and
    that part at whitespace with ``strings.Fields``, so the args may hold commas, never spaces).

    Example::

        vpn_auth_text("tskey-1", ["--hostname=vps-1"]).unmask()
        # "name=tailscale,joinKey=tskey-1,extraArgs=--hostname=vps-1\n"
    """
    args = " ".join(up_args)
    extra = f",extraArgs={args}" if args else ""
    return Secret(f"name=tailscale,joinKey={reveal(auth_key)}{extra}\n")


def vpn_up_args(data: Any, name: str) -> list[str]:
    """What k3s's own ``tailscale up`` must add (vpn-auth ``extraArgs``): the same flags as the
    deploy's ``tailscale up`` (hostname, tags, accept-routes, ``tailscale_extra_args``) except
    ``--reset``, which k3s always passes (``pkg/vpn/vpn.go`` ``StartVPN``)."""
    return [f for f in up_flags(data, name) if f != "--reset"]


def server_url(address: str, port: int = API_PORT) -> str:
    """``https://<address>:6443`` (IPv6 addresses bracketed)."""
    host_part = f"[{address}]" if ":" in address else address
    return f"https://{host_part}:{port}"


def fail_command(message: str) -> StringCommand:
    """A command that prints ``message`` on stderr and fails (how an op stops a host cleanly)."""
    return StringCommand("sh", "-c", QuoteString(f"echo {shlex.quote(message)} >&2; exit 1"))


PROTECTED_KEYS = frozenset(
    {
        "server",
        "token",
        "token-file",
        "agent-token",
        "cluster-init",
        "vpn-auth",
        "vpn-auth-file",
        "node-name",
    }
)


#: servicelb runs its svclb pods only on nodes labelled ``...=true`` once any node has the
#: label (k3s v1.34.2+k3s1 ``pkg/cloudprovider/servicelb.go`` ``nodeHasDaemonSetLabel``).
SERVICELB_LABEL = "svccontroller.k3s.cattle.io/enablelb"


def node_settings(
    data: Any, name: str, *, agent: bool = False
) -> tuple[dict[str, Any], dict]:
    """The config keys servers and agents share, and the ``k3s_extra_config`` passthrough.

    Only an ingress node (``k3sfleet/ingress: "true"``, where the firewall opens 80/443) gets
    ``node-external-ip`` (its public address) and runs the service load balancer
    (``svccontroller.k3s.cattle.io/enablelb=true``; every other node ``false``): servicelb
    reports the ExternalIPs of the nodes running its pods as the load balancer's addresses,
    Traefik copies them to the Gateway, and external-dns publishes them
    (``pkg/cloudprovider/servicelb.go`` ``podIPs``). An agent whose vpn-auth brings Tailscale up
    (``TAILSCALE_UP_BY=k3s``) gets no ``flannel-iface``: k3s resolves it before it starts the
    VPN (``pkg/cli/agent/agent.go`` ``Run``), so ``tailscale0`` has no address yet, and it takes
    the interface from the VPN anyway (``pkg/executor/embed/embed.go``). Where Tailscale is up
    before k3s (``deploy``), the interface keeps pinning the node IP to the tailnet.

    Raises ``ConfigError`` when the passthrough sets a key k3sfleet manages (join, token,
    vpn-auth, node name).

    Example::

        node_settings(host.data, "vps-1", agent=True)[0]["node-label"]
        # ["k3sfleet/ingress=true", "svccontroller.k3s.cattle.io/enablelb=true"]
    """
    settings: dict[str, Any] = {"node-name": data.get("k3s_node_name") or name}
    labels = dict(data.get("k3s_node_labels") or {})
    ingress = is_ingress(labels, data)
    if ingress and data.get("k3sfleet_public_address"):
        settings["node-external-ip"] = data.get("k3sfleet_public_address")
    k3s_brings_vpn_up = bool(data.get("k3s_vpn_auth")) and data.get("tailscale_up_by") == "k3s"
    if data.get("k3s_flannel_iface") and not (agent and k3s_brings_vpn_up):
        settings["flannel-iface"] = data.get("k3s_flannel_iface")
    if data.get("k3s_vpn_auth"):
        settings["vpn-auth-file"] = VPN_AUTH_FILE
    labels.setdefault(SERVICELB_LABEL, "true" if ingress else "false")
    settings["node-label"] = [f"{k}={v}" for k, v in sorted(labels.items())]
    taints = data.get("k3s_node_taints") or []
    if taints:
        settings["node-taint"] = list(taints)
    extra = dict(data.get("k3s_extra_config") or {})
    clash = sorted(PROTECTED_KEYS & set(extra))
    if clash:
        raise ConfigError(
            f"{name}: k3s_extra_config sets {', '.join(clash)}, which k3sfleet manages "
            "(use K3S_TOKEN, K3S_VPN_AUTH and the inventory instead)"
        )
    return settings, extra


def version_guard(data: Any, server: bool) -> None:
    """Refuse a ``k3s_version`` that is known bad for this node's configuration (see
    ``k3sfleet.versions``); agents run no etcd."""
    problem = refusal(
        str(data.get("k3s_version")),
        allow=str(data.get("k3s_allow_versions") or ""),
        vpn_auth=bool(data.get("k3s_vpn_auth")),
        etcd_on_tailnet=not server or etcd_on_tailnet(data),
    )
    if problem:
        raise ConfigError(problem)


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class ClusterPlan:
    """What the run knows about the servers, computed once (prepare) and shared by all hosts."""

    servers: list[str]
    agents: list[str]
    joins: dict[str, str | None]
    states: dict[str, dict[str, Any]]
    addresses: dict[str, str | None]
    joining: set[str]
    tokens: dict[str, Secret] = field(default_factory=dict)
    # Hosts prepare in parallel greenlets: without a lock per value every agent would read the
    # same server's token (one remote command each) before the first answer is cached.
    _locks: dict[str, gevent.lock.Semaphore] = field(
        default_factory=dict, repr=False, compare=False
    )

    def _lock(self, key: str) -> gevent.lock.Semaphore:
        """The lock guarding the read of ``key`` (greenlets switch only on I/O, so the
        check-and-create here needs no lock of its own)."""
        return self._locks.setdefault(key, gevent.lock.Semaphore())

    @property
    def anchor(self) -> str:
        """The server agents join: the first server in the inventory."""
        return self.servers[0]

    def address(self, name: str) -> str | None:
        """The tailnet address of ``name``: known at prepare, else read now (run time)."""
        with self._lock(f"address:{name}"):
            if not self.addresses.get(name):
                other = inventory.get_host(name)
                ips = other.get_fact(TailscaleStatus)["ips"]
                self.addresses[name] = next((ip for ip in ips if ":" not in ip), None)
            return self.addresses[name]

    def state_of(self, name: str) -> dict[str, Any]:
        """The ``K3sState`` of ``name``: servers' from the plan, others' read once on demand."""
        with self._lock(f"state:{name}"):
            if name not in self.states:
                self.states[name] = node_state(inventory.get_host(name))
            return self.states[name]

    def token_of(self, name: str) -> Secret | None:
        """The node-token of server ``name``, read once it exists."""
        with self._lock(f"token:{name}"):
            if name not in self.tokens:
                token = node_token(inventory.get_host(name))
                if token is None:
                    return None
                self.tokens[name] = token
            return self.tokens[name]


_PLAN_ATTR = "_k3sfleet_cluster_plan"
_plan_lock = gevent.lock.Semaphore()


def node_token(h: Any) -> Secret | None:
    """Server ``h``'s node-token, read so that no pyinfra verbosity prints it (not a fact:
    ``k3sfleet.secret.read_secret_file`` says why)."""
    return read_secret_file(h, NODE_TOKEN)


def node_state(h: Any) -> dict[str, Any]:
    """Host ``h``'s ``K3sState`` from its snapshot, which watches what the cluster deploys
    consult (without ``tailscale ip`` when the inventory gives the node's tailnet address)."""
    known = bool(h.data.get("k3sfleet_tailnet_address"))
    watch(files=FILES, links=DIRECTORIES, units=UNITS, extras=["k3s"], tailnet=not known, h=h)
    return snapshot(h)["k3s"]  # type: ignore[no-any-return]


def _role_hosts(role: str) -> list[Any]:
    return [h for h in inventory if h.data.get("k3s_role") == role]


def cluster_plan() -> ClusterPlan:
    """The plan of the current pyinfra state (computed by the first host that asks)."""
    current = ctx_state.get()
    with _plan_lock:
        plan: ClusterPlan | None = getattr(current, _PLAN_ATTR, None)
        if plan is None:
            plan = _compute_plan()
            setattr(current, _PLAN_ATTR, plan)
    return plan


def _needs_token(hosts: Iterable[Any], servers: list[Any]) -> bool:
    """Whether a node of this run joins with the first server's node-token (no K3S_TOKEN)."""
    if not servers:
        return False
    return any(
        not h.data.get("k3s_token") and (h.data.get("k3s_role") == "agent" or h is not servers[0])
        for h in hosts
    )


def _read_concurrently(
    hosts: list[Any], token_host: Any | None
) -> tuple[dict[str, dict[str, Any]], Secret | None]:
    """The ``K3sState`` (snapshot) of every host in ``hosts`` and the node-token of
    ``token_host``, read at the same time: one round trip of waiting, however many nodes."""
    reads: dict[str, Callable[[], Any]] = {
        f"state:{h.name}": functools.partial(node_state, h) for h in hosts
    }
    if token_host is not None:
        reads["token"] = functools.partial(node_token, token_host)
    values = read_at_once(reads)
    return {h.name: values[f"state:{h.name}"] for h in hosts}, values.get("token")


def _compute_plan() -> ClusterPlan:
    servers = _role_hosts("server")
    agents = _role_hosts("agent")
    # The servers (the plan needs them) and every node of this run (each needs its own state),
    # plus the first server's token when a node joins with it.
    active = [h for h in inventory.get_active_hosts() if h.data.get("k3s_role") in SERVICE]
    hosts = list({h.name: h for h in [*servers, *active]}.values())
    token_host = servers[0] if _needs_token(active, servers) else None
    states, token = _read_concurrently(hosts, token_host)
    addresses = {
        h.name: h.data.get("k3sfleet_tailnet_address") or states[h.name].get("tailnet_ip")
        for h in servers
    }
    names = [h.name for h in servers]
    datastores = {n: states[n].get("datastore") for n in names}
    joins = plan_servers(
        names,
        datastores,
        {n: states[n].get("join") for n in names},
        {n: server_url(a) if a else None for n, a in addresses.items()},
    )
    if len(names) > 1:
        logger.warning("k3sfleet: " + ETCD_WAN_WARNING.format(servers=", ".join(names)))
    if servers and not servers[0].data.get("k3s_token"):
        logger.warning(token_notice(names[0]))
    return ClusterPlan(
        servers=names,
        agents=[h.name for h in agents],
        joins=joins,
        states=states,
        addresses=addresses,
        joining=joining_servers(joins, datastores),
        tokens={names[0]: token} if token is not None else {},
    )


# -- operations --------------------------------------------------------------------------------


@operation()
def phase(description: str) -> Generator[Any, None, None]:
    """A step boundary every host passes: call it from one line for all hosts.

    pyinfra orders operations per host; operations of different hosts only wait for each other
    when they share an operation. One ``phase`` call made by every host from the same line is
    one shared operation, so everything before it (on any host) finishes before anything after
    it starts.

    + description: what is complete at this point (printed as a no-op)
    """
    host.noop(description)
    yield from ()


@operation()
def k3s_config(
    settings: Callable[[str | None], dict[str, Any]],
    entry: str,
    address: str | None = None,
    join: str | None = None,
    token: Secret | None = None,
    token_source: str | None = None,
) -> Generator[Any, None, None]:
    """/etc/rancher/k3s/config.yaml for this node, completed when the operation runs.

    + settings: gives every config key except ``server`` / ``token`` / ``cluster-init`` (in
      the order to write them) for this node's tailnet address
    + entry: the deploy named in the file's header comment
    + address: this node's tailnet address if known before the run; else it is read when the
      operation runs (Tailscale may come up earlier in the same run, from bootstrap)
    + join: the server whose URL and token this node uses (``None``: it starts the cluster)
    + token: the cluster token from the settings (vault); when ``None`` a joining node takes
      its server's node-token at run time
    + token_source: the server whose node-token to use when ``token`` is ``None`` (default:
      ``join``; a server that already holds the cluster uses its own, which is the same token)
    """
    plan = cluster_plan()
    values = dict(settings(address or plan.address(host.name)))
    if join is not None:
        address = plan.address(join)
        use_token = token or plan.token_of(token_source or join)
        if address is None or use_token is None:
            missing = "tailnet address" if address is None else "node-token"
            if not state.is_executing:
                host.log(
                    f"k3s config: the token and server URL will come from {join} at run time "
                    f"(its {missing} is not there yet)",
                    logger.warning,
                )
                yield StringCommand("true")  # a change: the config is written at run time
                return
            yield fail_command(
                f"k3sfleet: {host.name} cannot join {join}: {join} has no {missing} "
                f"({'tailscale is not up there' if address is None else 'its k3s never started'})"
                f"; check `systemctl status k3s` and `tailscale status` on {join}"
            )
            return
        values = {"server": server_url(address), "token": use_token, **values}
    elif token is not None:
        values = {"cluster-init": True, "token": token, **values}
    else:
        values = {"cluster-init": True, **values}
    text = render_config(values, entry)
    yield from file._inner(CONFIG, content=Secret(text), keep_previous=True)


def _changed(metas: Iterable[OperationMeta]) -> bool:
    return any(m.changed for m in metas)


def restart_script(
    service: str,
    role: str,
    restore_config: bool,
    timeout: int = HEALTH_TIMEOUT,
    settle: int = 3,
    config: str = CONFIG,
) -> str:
    """Restart ``service``, wait until healthy; if not, restore config.yaml.previous (when
    ``restore_config``), restart again and exit 1 with a message saying what happened.

    Not healthy means: ``timeout`` seconds passed, systemd gave the unit up (SubState
    ``failed``), or two runs of it failed. One failed start is K3s's own unit's business: it
    restarts K3s (Restart=always, RestartSec=5s) and a transient start failure heals there. One
    such failure is real: with ``tailscale_up_by: k3s`` right after a refused auth key, K3s's
    own ``tailscale up`` can end on the old login's late "backend error: invalid authkey" while
    the new key logs in (``tailscale.UP_SETTLE_SECONDS``). Runs are told apart by the unit's
    InvocationID, which every start renews; a failed run waits in SubState ``auto-restart``
    until systemd starts the next (systemd src/core/service.c ``service_enter_restart``).
    """
    q = shlex.quote
    if role == "server":
        healthy = (
            f"systemctl is-active --quiet {q(service)} && test -s {q(NODE_TOKEN)} && "
            f"curl -ksf --max-time 5 -o /dev/null https://127.0.0.1:{API_PORT}/ping"
        )
    else:
        healthy = f"systemctl is-active --quiet {q(service)}"
    lines = [
        "set -u",
        f"svc={q(service)}; cfg={q(config)}; node=$(hostname)",
        f"healthy() {{ {healthy}; }}",
        'broken() { case "$(systemctl show -p SubState --value "$svc")" in failed) return 0;; '
        'auto-restart) run=$(systemctl show -p InvocationID --value "$svc"); '
        'case "$failed_runs" in *"$run"*) ;; *) failed_runs="$failed_runs $run"; '
        "fails=$((fails+1));; esac; [ \"$fails\" -ge 2 ] && return 0;; esac; return 1; }",
        'wait_healthy() { i=0; fails=0; failed_runs=; while [ "$i" -lt ' + str(int(timeout))
        + " ]; do "
        "healthy && { sleep " + str(int(settle)) + "; healthy && return 0; }; "
        "broken && return 1; sleep 1; i=$((i+1)); done; return 1; }",
        "systemctl daemon-reload",
        'systemctl reset-failed "$svc" 2>/dev/null || true',
        'systemctl restart --no-block "$svc"',
        "if wait_healthy; then exit 0; fi",
    ]
    if restore_config:
        lines += [
            'if [ -e "$cfg.previous" ]; then',
            '  mv -f "$cfg" "$cfg.failed"; cp -p "$cfg.previous" "$cfg"',
            '  systemctl reset-failed "$svc" 2>/dev/null || true',
            '  systemctl restart --no-block "$svc"',
            "  if wait_healthy; then",
            '    echo "k3sfleet: $svc on $node did not become healthy with the new '
            "/etc/rancher/k3s/config.yaml; the previous config is restored and $svc is "
            'healthy again. The rejected config is $cfg.failed (see journalctl -u $svc)." >&2',
            "  else",
            '    echo "k3sfleet: $svc on $node did not become healthy with the new config, '
            'and not with the restored previous one either: see journalctl -u $svc" >&2',
            "  fi",
            "  exit 1",
            "fi",
        ]
    why = "and there is no previous config to restore" if restore_config else "after the change"
    lines += [
        f'echo "k3sfleet: $svc on $node did not become healthy within {int(timeout)}s {why}: '
        'see journalctl -u $svc" >&2',
        "exit 1",
    ]
    return "\n".join(lines)


def converge_node(
    role: str,
    plan: ClusterPlan,
    config_name: str,
    settings: Callable[[str | None], dict[str, Any]],
    address: str | None,
    join: str | None,
    token_source: str | None = None,
) -> None:
    """Converge this host as a ``role`` node: the K3s binary, the vpn-auth file (with
    ``k3s_vpn_auth``), the systemd unit and config.yaml, each changed only when it differs from
    the node's snapshot; then the service, restarted only when one of them changed.

    + config_name: the name of the config.yaml operation
    + settings, address, join, token_source: as for ``k3s_config``
    """
    data = host.data
    plan.state_of(host.name)  # (this host's snapshot is read with the plan's)
    service = SERVICE[role]
    binary = k3s_binary(
        name=f"Install k3s {data.k3s_version}",
        version=data.k3s_version,
        release_url=data.k3s_release_url,
    )
    config_changes = []
    if data.k3s_vpn_auth:
        config_changes.append(
            file(
                name="K3s vpn-auth file",
                path=VPN_AUTH_FILE,
                content=vpn_auth_text(data.tailscale_auth_key, vpn_up_args(data, host.name)),
            )
        )
    unit = file(
        name=f"{service}.service",
        path=UNIT[role],
        content=render_unit(role, after_tailscale=True),
    )
    config_changes.append(
        k3s_config(
            name=config_name,
            settings=settings,
            address=address,
            entry=f"deploys/k3s_{role}.py",
            join=join,
            token=data.get("k3s_token"),
            token_source=token_source,
        )
    )
    k3s_service(
        name=f"{service} service",
        role=role,
        config_changes=config_changes,
        other_changes=[binary, unit],
        timeout=int(data.k3s_health_timeout),
    )


@operation()
def k3s_service(
    role: str,
    config_changes: list[OperationMeta],
    other_changes: list[OperationMeta],
    timeout: int = HEALTH_TIMEOUT,
) -> Generator[Any, None, None]:
    """K3s enabled and running; restarted (with roll-back of a bad config) only on change.

    + role: ``server`` (``k3s``) or ``agent`` (``k3s-agent``)
    + config_changes: operations that change config.yaml / vpn-auth: a failed restart after
      one of them restores config.yaml.previous
    + other_changes: binary and unit operations
    + timeout: seconds to wait for the service to be healthy
    """
    service = SERVICE[role]
    config_changed = _changed(config_changes)
    changed = config_changed or _changed(other_changes)
    status = unit_state(f"{service}.service")
    running = status["active_state"] == "active"
    if status["unit_file_state"] != "enabled":
        yield StringCommand("systemctl", "enable", QuoteString(service))
    if changed or not running:
        script = restart_script(service, role, restore_config=config_changed, timeout=timeout)
        yield StringCommand("sh", "-c", QuoteString(script))
    else:
        host.noop(f"{service} is running and nothing it runs changed")
