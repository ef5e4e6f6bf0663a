"""The rolling engine shared by K3s upgrades and OS maintenance.

One driver walks an explicit node order (servers one at a time, then agents one at a time or
in batches of ``rolling_agent_batch``) and, for each batch, talks to the Kubernetes API between
the steps and runs the node action on the nodes themselves::

    health gate -> cordon -> drain (Eviction API) -> node action -> wait Ready -> uncordon

It stops at the first failure: later nodes are untouched, the failing node's state and the next
step are reported (``RollingFailed``, a ``K3sfleetError``: non-zero exit).

Cordons the engine makes carry the annotation ``k3sfleet.io/cordoned-by``; a node that was
cordoned without it (by a human) is drained and changed like the others but stays cordoned.
A node the engine left cordoned (a failed run) is recognised on the next run and finished.

Example::

    engine = RollingEngine(
        api_client,
        [RollingTarget("vps-aws-1", "server"), RollingTarget("vps-vultr-1", "agent")],
        action=lambda names: run_upgrade_on(names),
        needs_action=lambda target, node: kubelet_version(node) != "v1.34.2+k3s1",
        target_version="v1.34.2+k3s1",
    )
    print(engine.plan().render())
    engine.run()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import NestedOperationError, PyinfraError
from pyinfra.api.facts import get_facts
from pyinfra.api.operations import run_ops
from pyinfra.context import ctx_host
from urllib3.exceptions import HTTPError

from k3sfleet.errors import K3sfleetError
from k3sfleet.settings import Settings

CORDON_ANNOTATION = "k3sfleet.io/cordoned-by"
CORDON_OWNER = "k3sfleet-rolling"
ETCD_ROLE_LABEL = "node-role.kubernetes.io/etcd"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

# The engine's defaults. Host data overrides them (``engine_options``): the ROLLING_* settings,
# whose defaults are defined once, as settings, and ``rolling_ready_timeout``.
AGENT_BATCH: int = Settings.rolling_agent_batch
DRAIN_TIMEOUT = float(Settings.rolling_drain_timeout)  # seconds
READY_TIMEOUT = 600.0  # seconds; host data rolling_ready_timeout
POLL_INTERVAL = 2.0

NodeAction = Callable[[Sequence[str]], None]
"""Runs the change on the named nodes (one batch); raises ``NodeActionFailed`` on failure."""

NeedsAction = Callable[["RollingTarget", Any], bool]
"""Whether a node (its ``RollingTarget`` and its ``V1Node``) still needs the node action."""


class RollingFailed(K3sfleetError):
    """The run stopped at a node: names the node, the step, its state and what to do next."""

    def __init__(self, node: str, step: str, reason: str, state: str, next_step: str) -> None:
        self.node, self.step, self.reason, self.state, self.next_step = (
            node,
            step,
            reason,
            state,
            next_step,
        )
        super().__init__(
            f"k3sfleet: stopped at node {node}, step {step}: {reason}\n"
            f"  node state: {state}\n"
            f"  next step: {next_step}"
        )


class NodeActionFailed(K3sfleetError):
    """The node action failed on some nodes of a batch (node name -> reason)."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = dict(failures)
        super().__init__("; ".join(f"{n}: {r}" for n, r in self.failures.items()))


@dataclass(frozen=True)
class RollingTarget:
    """One node in the rolling order: its Kubernetes node name and its role."""

    name: str
    role: str  # "server" or "agent"


@dataclass
class PlannedNode:
    """One node of a plan and what the run will do with it."""

    target: RollingTarget
    status: str  # "to do", "done", "finish" (left cordoned by a failed run)
    human_cordoned: bool = False
    version: str = ""

    def describe(self) -> str:
        text = {
            "to do": "to do",
            "done": "already done: skipped",
            "finish": "changed by an earlier run, left cordoned: wait Ready and uncordon",
        }[self.status]
        if self.version:
            text += f" (kubelet {self.version})"
        if self.human_cordoned:
            text += "; cordoned by a human: stays cordoned"
        return text


@dataclass
class Plan:
    """The order (batches) and which nodes are already done."""

    batches: list[list[PlannedNode]]
    action_name: str

    @property
    def nodes(self) -> list[PlannedNode]:
        return [n for batch in self.batches for n in batch]

    @property
    def pending(self) -> list[PlannedNode]:
        return [n for n in self.nodes if n.status != "done"]

    def render(self) -> str:
        lines = [f"Plan for {self.action_name}: {len(self.pending)} of {len(self.nodes)} node(s)"]
        for i, batch in enumerate(self.batches, 1):
            for node in batch:
                lines.append(f"  {i}. {node.target.name} ({node.target.role}): {node.describe()}")
        if not self.pending:
            lines.append("Nothing to do: every node is done.")
        return "\n".join(lines)


def order(targets: Iterable[RollingTarget], agent_batch: int = 1) -> list[list[RollingTarget]]:
    """Servers one at a time in the given order, then agents in batches of ``agent_batch``.

    Example::

        order([RollingTarget("a1", "agent"), RollingTarget("s1", "server")])
        # [[s1], [a1]]
    """
    targets = list(targets)
    if agent_batch < 1:
        raise K3sfleetError(f"k3sfleet: ROLLING_AGENT_BATCH must be 1 or more, not {agent_batch}")
    servers = [[t] for t in targets if t.role == "server"]
    agents = [t for t in targets if t.role != "server"]
    return servers + [agents[i : i + agent_batch] for i in range(0, len(agents), agent_batch)]


def kubelet_version(node: Any) -> str:
    """The ``status.nodeInfo.kubeletVersion`` of a ``V1Node`` ("" when unknown)."""
    info = node.status.node_info if node.status is not None else None
    return (info.kubelet_version or "") if info is not None else ""


def is_ready(node: Any) -> bool:
    """Whether a ``V1Node``'s ``Ready`` condition is ``True`` (the one Ready check: the
    rolling engine's gate and waits, and the DR target check)."""
    conditions = (node.status.conditions if node.status is not None else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def cordon_patch(owner: str = CORDON_OWNER) -> dict[str, Any]:
    """The Node patch of a k3sfleet cordon: unschedulable, annotated with who cordoned it."""
    return {
        "metadata": {"annotations": {CORDON_ANNOTATION: owner}},
        "spec": {"unschedulable": True},
    }


def cordoned_by_us(node: Any) -> bool:
    annotations = node.metadata.annotations or {}
    return bool(node.spec and node.spec.unschedulable) and (
        annotations.get(CORDON_ANNOTATION) == CORDON_OWNER
    )


def cordoned_by_human(node: Any) -> bool:
    return bool(node.spec and node.spec.unschedulable) and not cordoned_by_us(node)


def engine_options(data: Any) -> dict[str, Any]:
    """``RollingEngine`` options from pyinfra host data (``rolling_agent_batch``,
    ``rolling_drain_timeout``, ``rolling_drain_force``, ``rolling_ready_timeout``).

    Example::

        RollingEngine(api, targets, ..., **engine_options(inventory.get_host("vps-1").data))
    """
    return {
        "agent_batch": int(data.get("rolling_agent_batch") or AGENT_BATCH),
        "drain_timeout": float(data.get("rolling_drain_timeout") or DRAIN_TIMEOUT),
        "drain_force": bool(data.get("rolling_drain_force")),
        "ready_timeout": float(data.get("rolling_ready_timeout") or READY_TIMEOUT),
    }


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f}s"


@dataclass
class RollingEngine:
    """Drives one rolling run. ``api`` is a ``kubernetes.client.ApiClient``.

    ``action`` changes the nodes of one batch; ``needs_action`` says whether a node still needs
    it (nodes that do not are skipped, so a re-run resumes where a failed run stopped);
    ``target_version`` (upgrades) is the kubeletVersion a node must report before uncordon;
    ``reconnect`` reopens the API when it dies mid-run (``ApiSession.reopen``).
    """

    api: Any
    targets: Sequence[RollingTarget]
    action: NodeAction
    needs_action: NeedsAction
    action_name: str = "change"
    target_version: str | None = None
    agent_batch: int = AGENT_BATCH
    drain_timeout: float = DRAIN_TIMEOUT
    drain_force: bool = False
    ready_timeout: float = READY_TIMEOUT
    reconnect: Callable[[], Any] | None = None
    core: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)

    # -- plan ------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """The order and each node's status, read from the API (nothing is changed)."""
        nodes = self._nodes("plan")
        unknown = [t.name for t in self.targets if t.name not in nodes]
        if unknown:
            raise K3sfleetError(
                "k3sfleet: these inventory nodes are not Nodes of the cluster: "
                + ", ".join(unknown)
            )
        batches = []
        for batch in order(self.targets, self.agent_batch):
            planned = []
            for target in batch:
                node = nodes[target.name]
                if self.needs_action(target, node):
                    status = "to do"
                elif cordoned_by_us(node):
                    status = "finish"
                else:
                    status = "done"
                planned.append(
                    PlannedNode(
                        target,
                        status,
                        human_cordoned=cordoned_by_human(node),
                        version=kubelet_version(node),
                    )
                )
            batches.append(planned)
        return Plan(batches, self.action_name)

    # -- run -------------------------------------------------------------------------------
    def run(self, plan: Plan | None = None) -> Plan:
        """Run the plan batch by batch; raise ``RollingFailed`` at the first failure."""
        plan = plan or self.plan()
        print(plan.render())
        started = time.monotonic()
        total = len(plan.batches)
        for index, batch in enumerate(plan.batches, 1):
            todo = [n for n in batch if n.status != "done"]
            if not todo:
                continue
            self._run_batch(index, total, todo, plan)
        print(f"{self.action_name}: all nodes done in {_fmt(time.monotonic() - started)}")
        return plan

    def _run_batch(self, index: int, total: int, batch: list[PlannedNode], plan: Plan) -> None:
        """One batch through the steps; any failure becomes ``RollingFailed`` naming where."""
        print(
            f"[{index}/{total}] " + ", ".join(f"{n.target.name} ({n.target.role})" for n in batch)
        )
        started = time.monotonic()
        at = _Position("health gate", batch[0].target.name)
        try:
            self._gate_step(at, batch)
            self._cordon_step(at, batch)
            self._drain_step(at, batch)
            self._action_step(at, batch)
            self._ready_step(at, batch)
            self._uncordon_step(at, batch)
        except _StepError as e:
            raise self._failure(at, str(e), e.node, batch, plan) from None
        except ApiException as e:
            reason = f"Kubernetes API error {e.status} {e.reason}"
            raise self._failure(at, reason, None, batch, plan) from None
        except (OSError, ValueError, HTTPError) as e:  # connection refused, timeouts
            reason = f"Kubernetes API unreachable: {e}"
            raise self._failure(at, reason, None, batch, plan) from None
        print(f"  done in {_fmt(time.monotonic() - started)}")

    # -- the steps of a batch (``at`` follows the step and node in hand) ---------------------
    def _gate_step(self, at: _Position, batch: list[PlannedNode]) -> None:
        started = time.monotonic()
        self._health_gate([n.target.name for n in batch])
        print(f"  health gate ok ({_fmt(time.monotonic() - started)})")

    def _cordon_step(self, at: _Position, batch: list[PlannedNode]) -> None:
        for node in at.each("cordon", batch):
            if node.human_cordoned:
                print(f"  {at.node}: cordoned by a human, leaving it so")
            else:
                self._cordon(at.node)
                print(f"  {at.node}: cordoned")

    def _drain_step(self, at: _Position, batch: list[PlannedNode]) -> None:
        for _ in at.each("drain", batch):
            started = time.monotonic()
            moved = self._drain(at.node)
            print(f"  {at.node}: drained {moved} pod(s) ({_fmt(time.monotonic() - started)})")

    def _action_step(self, at: _Position, batch: list[PlannedNode]) -> None:
        at.step = self.action_name
        todo = [n.target.name for n in batch if n.status == "to do"]
        if not todo:
            return
        at.node = todo[0]
        started = time.monotonic()
        try:
            self.action(todo)
        except NodeActionFailed as e:
            raise _StepError(str(e), next(iter(e.failures))) from None
        except K3sfleetError as e:
            raise _StepError(str(e)) from None
        print(f"  {self.action_name} on {', '.join(todo)} ({_fmt(time.monotonic() - started)})")

    def _ready_step(self, at: _Position, batch: list[PlannedNode]) -> None:
        version = f" at {self.target_version}" if self.target_version else ""
        for _ in at.each("wait Ready", batch):
            started = time.monotonic()
            self._wait_ready(at.node)
            print(f"  {at.node}: Ready{version} ({_fmt(time.monotonic() - started)})")

    def _uncordon_step(self, at: _Position, batch: list[PlannedNode]) -> None:
        for node in at.each("uncordon", batch):
            if not node.human_cordoned:
                self._uncordon(at.node)
                print(f"  {at.node}: uncordoned")

    def _failure(
        self, at: _Position, reason: str, node: str | None, batch: list[PlannedNode], plan: Plan
    ) -> RollingFailed:
        """``RollingFailed`` for the step in hand: the node's state, what to do, and the later
        nodes this run leaves untouched."""
        who = node or at.node
        names = {n.target.name for n in batch}
        after = plan.nodes[next(i for i, n in enumerate(plan.nodes) if n.target.name in names) :]
        rest = [n.target.name for n in after if n.target.name not in names and n.status != "done"]
        untouched = f" Later nodes not touched: {', '.join(rest)}." if rest else ""
        next_step = self._next_step(at.step, who) + untouched
        return RollingFailed(who, at.step, reason, self._describe_state(who), next_step)

    # -- steps -----------------------------------------------------------------------------
    def _nodes(self, step: str) -> dict[str, Any]:
        try:
            items = self.core.list_node().items
        except ApiException as e:
            raise _StepError(f"Kubernetes API error {e.status} {e.reason} listing nodes") from None
        except (OSError, ValueError, HTTPError) as e:
            raise K3sfleetError(f"k3sfleet: Kubernetes API unreachable ({step}): {e}") from None
        return {n.metadata.name: n for n in items}

    def _health_gate(self, batch: Sequence[str] = ()) -> None:
        """The API answers, every other Node is Ready, and (several servers) the etcd members.

        The batch's own nodes may be NotReady: a failed earlier run may have left them so, and
        the node action is what repairs them.
        """
        nodes = self._nodes("health gate")
        not_ready = sorted(
            name for name, n in nodes.items() if not is_ready(n) and name not in batch
        )
        if not_ready:
            raise _StepError(f"nodes not Ready: {', '.join(not_ready)}")
        members = [
            n for n in nodes.values() if (n.metadata.labels or {}).get(ETCD_ROLE_LABEL) == "true"
        ]
        servers = [t for t in self.targets if t.role == "server"]
        if len(servers) > 1 and len(members) < len(servers):
            raise _StepError(
                f"etcd membership incomplete: {len(members)} etcd member Node(s) for "
                f"{len(servers)} servers"
            )

    def _cordon(self, name: str) -> None:
        self.core.patch_node(name, cordon_patch())

    def _uncordon(self, name: str) -> None:
        self.core.patch_node(
            name,
            {
                "metadata": {"annotations": {CORDON_ANNOTATION: None}},
                "spec": {"unschedulable": False},
            },
        )

    def _evictable(self, name: str) -> list[Any]:
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items
        keep = []
        for pod in pods:
            meta = pod.metadata
            if MIRROR_ANNOTATION in (meta.annotations or {}):
                continue
            if any(o.kind == "DaemonSet" for o in (meta.owner_references or [])):
                continue
            if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
                continue
            keep.append(pod)
        return keep

    def _drain(self, name: str) -> int:
        """Evict every pod but DaemonSet and mirror pods, honouring PodDisruptionBudgets."""
        deadline = time.monotonic() + self.drain_timeout
        seen: set[tuple[str, str]] = set()
        blocked: dict[tuple[str, str], str] = {}
        while True:
            pods = self._evictable(name)
            if not pods:
                return len(seen)
            for pod in pods:
                key = (pod.metadata.namespace, pod.metadata.name)
                seen.add(key)
                if pod.metadata.deletion_timestamp is not None:
                    continue  # already terminating
                body = client.V1Eviction(
                    metadata=client.V1ObjectMeta(name=key[1], namespace=key[0])
                )
                try:
                    self.core.create_namespaced_pod_eviction(key[1], key[0], body)
                    blocked.pop(key, None)
                except ApiException as e:
                    if e.status == 404:
                        continue
                    if e.status == 429:  # a PodDisruptionBudget says not now
                        blocked[key] = "disruption budget"
                        continue
                    raise
            if time.monotonic() >= deadline:
                stuck = [(p.metadata.namespace, p.metadata.name) for p in pods]
                if self.drain_force:
                    for ns, pod_name in stuck:
                        print(f"  {name}: drain timeout, deleting {ns}/{pod_name} (forced)")
                        try:
                            self.core.delete_namespaced_pod(pod_name, ns)
                        except ApiException as e:
                            if e.status != 404:
                                raise
                    deadline = time.monotonic() + self.drain_timeout
                    time.sleep(POLL_INTERVAL)
                    if not self._evictable(name):
                        return len(seen)
                    raise _StepError("pods still present after forced deletion", name)
                names = ", ".join(
                    f"{ns}/{p}" + (f" ({blocked[(ns, p)]})" if (ns, p) in blocked else "")
                    for ns, p in stuck
                )
                raise _StepError(
                    f"drain timed out after {self.drain_timeout:.0f}s; pods not evicted: {names}"
                    " (ROLLING_DRAIN_FORCE=true deletes them)",
                    name,
                )
            time.sleep(POLL_INTERVAL)

    def _wait_ready(self, name: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = ""
        while True:
            try:
                node = self.core.read_node(name)
                ready = is_ready(node)
                version = kubelet_version(node)
                if ready and (self.target_version is None or version == self.target_version):
                    return
                last = f"Ready={ready}, kubelet {version or 'unknown'}"
            except ApiException as e:
                last = f"API error {e.status}"
            except (OSError, ValueError, HTTPError, K3sfleetError) as e:
                # the API restarts with a server upgrade; the tunnel dies with a reboot
                last = f"API unreachable: {e}"
                if self.reconnect is not None:
                    try:
                        self.core = client.CoreV1Api(self.reconnect())
                    except (OSError, K3sfleetError) as again:
                        last = f"API unreachable: {again}"
            if time.monotonic() >= deadline:
                want = f" at {self.target_version}" if self.target_version else ""
                raise _StepError(
                    f"not Ready{want} after {self.ready_timeout:.0f}s (last seen: {last})", name
                )
            time.sleep(POLL_INTERVAL)

    # -- reporting -------------------------------------------------------------------------
    def _describe_state(self, name: str) -> str:
        try:
            node = self.core.read_node(name)
        except Exception as e:  # noqa: BLE001 - reporting must not hide the real failure
            return f"unknown (API: {e.__class__.__name__})"
        parts = ["Ready" if is_ready(node) else "NotReady"]
        if cordoned_by_us(node):
            parts.append("cordoned by k3sfleet")
        elif cordoned_by_human(node):
            parts.append("cordoned by a human")
        else:
            parts.append("schedulable")
        version = kubelet_version(node)
        if version:
            parts.append(f"kubelet {version}")
        return ", ".join(parts)

    def _next_step(self, step: str, name: str) -> str:
        if step == "health gate":
            return f"make every Node Ready (kubectl get nodes), then re-run; {name} was not changed"
        return (
            f"fix the cause on {name}, then re-run: the run resumes at {name} "
            f"(or `kubectl uncordon {name}` to return it to service as it is)."
        )


@dataclass
class _Position:
    """Where a batch is: the step and the node in hand (what a failure names)."""

    step: str
    node: str

    def each(self, step: str, batch: list[PlannedNode]) -> Iterator[PlannedNode]:
        """The batch's nodes for ``step``, each becoming the node in hand."""
        self.step = step
        for node in batch:
            self.node = node.target.name
            yield node


class _StepError(K3sfleetError):
    def __init__(self, message: str, node: str | None = None) -> None:
        self.node = node
        super().__init__(message)


# -- pyinfra glue: the node action runs a @deploy on the batch's hosts -----------------------


def inventory_targets(inventory: Any, limit: Sequence[str] = ()) -> list[RollingTarget]:
    """``RollingTarget``s of a pyinfra ``Inventory`` in inventory order (``k3s_role`` data)."""
    targets = []
    for host in inventory:
        if limit and host.name not in limit:
            continue
        role = host.data.get("k3s_role") or ("agent" if "k3s_agents" in host.groups else "server")
        targets.append(RollingTarget(str(host.data.get("k3s_node_name") or host.name), role))
    return targets


def _sub_inventory(inventory: Any, names: Sequence[str]) -> Any:
    """A new pyinfra ``Inventory`` holding only ``names``, with the same data and groups."""
    wanted = [h for h in inventory if h.name in names]
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for host in wanted:
        for group in host.groups:
            groups.setdefault(group, ([], {}))[0].append(host.name)
    return Inventory(([(h.name, h.data.dict()) for h in wanted], {}), **groups)


def _failure_reason(state: Any, host: Any) -> str:
    for op_hash in state.get_op_order():
        meta = state.ops.get(host, {}).get(op_hash)
        # OperationMeta's public is_complete/did_error/stderr_lines (pyinfra/api/operation.py)
        result = meta.operation_meta if meta is not None else None
        if result is None or not result.is_complete() or not result.did_error():
            continue
        names = ", ".join(sorted(state.get_op_meta(op_hash).names))
        lines = [line for line in result.stderr_lines if line.strip()]
        return f"operation {names!r} failed" + (f": {lines[-1].strip()}" if lines else "")
    return "failed (connection or operation error; see the output above)"


class StateRunner:
    """Runs node actions through pyinfra's Python API: a fresh ``State`` per batch.

    For ``k3sfleet upgrade`` / ``maintenance`` and your own Python code (not inside a pyinfra
    CLI run: pyinfra refuses ``add_deploy`` there; use ``NestedRunner``).

    Example::

        StateRunner(inventory_from_file("inventory.py")).deploy(["vps-1"], k3s_upgrade)
    """

    def __init__(self, inventory: Any) -> None:
        self.inventory = inventory

    def deploy(self, names: Sequence[str], deploy: Callable[..., Any]) -> Any:
        """Run ``deploy`` on ``names`` (in parallel); return the ``State``.

        Raises ``NodeActionFailed`` naming each failed host and its first failed operation.
        """
        sub = _sub_inventory(self.inventory, names)
        state = State(sub, Config(FAIL_PERCENT=0))
        try:
            try:
                connect_all(state)
            except PyinfraError:  # hosts that failed to connect are in failed_hosts
                pass
            if not state.failed_hosts:
                add_deploy(state, deploy)
                try:
                    run_ops(state)
                except PyinfraError:  # "No hosts remaining" / FAIL_PERCENT: reported below
                    pass
        finally:
            for host in sub:
                if host.connected:
                    host.disconnect()
        failed = {h.name: _failure_reason(state, h) for h in state.failed_hosts}
        known = {h.name for h in sub}
        failed.update({n: "not in the inventory" for n in names if n not in known})
        if failed:
            raise NodeActionFailed(failed)
        return state

    def fact(self, names: Sequence[str], fact: Any, **kwargs: Any) -> dict[str, Any]:
        """``fact`` read once on each of ``names`` (hosts in parallel)."""
        sub = _sub_inventory(self.inventory, names)
        state = State(sub, Config(FAIL_PERCENT=0))
        try:
            connect_all(state)
            results = get_facts(state, fact, kwargs=kwargs)
        except PyinfraError as e:
            raise K3sfleetError(f"k3sfleet: could not read {fact.__name__}: {e}") from None
        finally:
            for host in sub:
                if host.connected:
                    host.disconnect()
        return {h.name: value for h, value in results.items()}


class NestedRunner:
    """Runs node actions inside a pyinfra CLI run, from an ``api_call`` callback.

    The deploy's operations run as pyinfra "nested operations" on the node's own (already
    connected) host: they execute at once, in the CLI's output. A batch's hosts are changed one
    after the other (they are still drained and uncordoned together).

    Example (an entry file)::

        def drive(state, host):
            engine = upgrade_engine(api, state.inventory, NestedRunner(state))
    """

    def __init__(self, state: Any) -> None:
        self.state = state

    def _host(self, name: str) -> Any:
        host = self.state.inventory.get_host(name, None)
        if host is None:
            raise NodeActionFailed({name: "not in the inventory"})
        if not host.connected:
            host.connect(raise_exceptions=True)
        return host

    def deploy(self, names: Sequence[str], deploy: Callable[..., Any]) -> None:
        for name in names:
            host = self._host(name)
            try:
                with ctx_host.use(host):
                    deploy()
            except NestedOperationError:
                raise NodeActionFailed({name: _failure_reason(self.state, host)}) from None
            except K3sfleetError as e:
                raise NodeActionFailed({name: str(e)}) from None

    def fact(self, names: Sequence[str], fact: Any, **kwargs: Any) -> dict[str, Any]:
        values = {}
        for name in names:
            host = self._host(name)
            with ctx_host.use(host):
                values[name] = host.get_fact(fact, **kwargs)
        return values
