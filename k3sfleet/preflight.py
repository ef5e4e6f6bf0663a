"""Checks that run before any host is contacted, declared by each entry file itself.

An entry file lists what it needs in a module-level ``PREFLIGHT`` (functions of the settings and
the nodes that return problems as text); ``inventory.groups`` runs the ``PREFLIGHT`` of the
entry files being run, so a missing setting stops the run before pyinfra connects. An entry is
found however it is named: a path (``deploys/cluster.py``, a copy anywhere), pyinfra's function
form (``k3sfleet.deploys.bootstrap.run``, ``module:function``) or a bare name (``bootstrap``: the
project's ``deploys/`` first, then the installed entry file, as ``k3sfleet deploy`` finds it).

Example (an entry file)::

    PREFLIGHT = [require("gitops_repo_url"), tailscale_key_check]

    entry_problems(["bootstrap"], settings, nodes)
    # ['TAILSCALE_AUTH_KEY is not set (needed by deploys/bootstrap.py)']
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k3sfleet import databases
from k3sfleet.project import entry_file
from k3sfleet.secret import reveal
from k3sfleet.versions import etcd_on_tailnet, refusal

if TYPE_CHECKING:
    from k3sfleet.inventory import Node
    from k3sfleet.settings import Settings

Check = Callable[["Settings", Sequence["Node"]], list[str]]

# True while an entry file is executed only to read its PREFLIGHT (k3sfleet.entry.under_pyinfra
# is then False, so reading a declaration never runs an operation).
reading_declarations: ContextVar[bool] = ContextVar("reading_declarations", default=False)


def require(*names: str) -> Check:
    """A check that the named settings are set."""

    def check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
        return [f"{name} is not set" for name in settings.missing(*names)]

    return check


def tailscale_key_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """The Tailscale auth key is needed by whoever runs `tailscale up`; with vpn-auth it must
    survive K3s's parser.

    K3s (pkg/vpn/vpn.go ``getVPNAuthInfo``, v1.34.2+k3s1) splits the vpn-auth value on ``,``
    and each item on ``=`` and keeps only the part after the first ``=``: a key with ``=`` is
    silently cut, a key with ``,`` becomes an "unknown parameter" and K3s does not start.
    """
    if settings.tailscale_up_by != "deploy" and not settings.k3s_vpn_auth:
        return []
    missing = require("tailscale_auth_key")(settings, nodes)
    if missing or not settings.k3s_vpn_auth:
        return missing
    key = reveal(settings.tailscale_auth_key)
    bad = [repr(c) for c in (",", "=") if c in str(key)]
    if bad:
        return [
            f"TAILSCALE_AUTH_KEY contains {' and '.join(bad)}, which K3s's vpn-auth parser "
            "splits on (the key would reach Tailscale cut or not at all): make a new key, or "
            "set K3S_VPN_AUTH=false"
        ]
    return []


def vpn_args_problems(data: Mapping[str, Any]) -> list[str]:
    """With vpn-auth the ``tailscale up`` flags also go to k3s as vpn-auth ``extraArgs``, which
    k3s splits at whitespace (k3s v1.34.2+k3s1 ``pkg/vpn/vpn.go`` ``processCLIArgs``): a flag
    holding whitespace would reach ``tailscale up`` cut in pieces.

    Example::

        vpn_args_problems({"k3s_vpn_auth": True, "tailscale_extra_args": ["--a b"]})
        # ["tailscale_extra_args: '--a b' holds whitespace, which k3s's vpn-auth ..."]
    """
    if not data.get("k3s_vpn_auth"):
        return []
    return [
        f"tailscale_extra_args: {arg!r} holds whitespace, which k3s's vpn-auth extraArgs "
        "cannot carry"
        for arg in data.get("tailscale_extra_args") or []
        if len(str(arg).split()) != 1
    ]


def vpn_args_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """The ``tailscale up`` flags k3s gets through vpn-auth ``extraArgs`` (no whitespace)."""
    return [
        f"{n.name}: {p}"
        for n in nodes
        for p in vpn_args_problems({**settings.as_host_data(), **n.data})
    ]


def argocd_oidc_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """With ARGOCD_OIDC_ENABLED, the issuer URL and client ID are needed (both named)."""
    if not settings.argocd_oidc_enabled:
        return []
    missing = settings.missing("argocd_oidc_issuer_url", "argocd_oidc_client_id")
    return [f"{name} is not set (ARGOCD_OIDC_ENABLED=true)" for name in missing]


def k3s_version_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """K3S_VERSION must be a k3s release and not known bad for the servers' configuration
    (k3sfleet.versions)."""
    problem = refusal(
        settings.k3s_version,
        allow=settings.k3s_allow_versions,
        vpn_auth=settings.k3s_vpn_auth,
        etcd_on_tailnet=all(etcd_on_tailnet(n.data) for n in nodes if n.role == "server"),
    )
    return [problem] if problem else []


def k3s_etcd_s3_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """With K3S_ETCD_S3, the servers need the R2 bucket, endpoint and keys."""
    if not settings.k3s_etcd_s3:
        return []
    names = ("k3s_etcd_s3_bucket", "r2_endpoint", "r2_access_key_id", "r2_secret_access_key")
    return [f"{name} is not set (K3S_ETCD_S3=true)" for name in settings.missing(*names)]


def k3s_reset_confirm_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """deploys/reset.py destroys the cluster: it needs K3S_RESET_CONFIRM=yes-destroy-k3s."""
    if settings.k3s_reset_confirm == "yes-destroy-k3s":
        return []
    return ["K3S_RESET_CONFIRM is not yes-destroy-k3s (reset destroys K3s and its data)"]


def rolling_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """What the rolling engine (upgrades, maintenance) needs: at least one agent per batch, a
    positive drain timeout, and positive whole seconds in the nodes' ``rolling_ready_timeout``
    and ``maintenance_reboot_timeout`` data when given.

    Example::

        rolling_check(Settings(rolling_agent_batch=0), [])
        # ["ROLLING_AGENT_BATCH must be at least 1, not 0"]
    """
    problems = []
    if settings.rolling_agent_batch < 1:
        problems.append(
            f"ROLLING_AGENT_BATCH must be at least 1, not {settings.rolling_agent_batch}")
    if settings.rolling_drain_timeout <= 0:
        problems.append(
            f"ROLLING_DRAIN_TIMEOUT must be a positive number of seconds, not "
            f"{settings.rolling_drain_timeout}")
    for node in nodes:
        for key in ("rolling_ready_timeout", "maintenance_reboot_timeout"):
            value = node.data.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                problems.append(f"{node.name}: {key} must be a positive whole number of "
                                f"seconds, not {value!r}")
    return problems


def databases_check(settings: Settings, nodes: Sequence[Node]) -> list[str]:
    """appDatabases well formed, each app's namespace found, each app's password in the vault."""
    return databases.preflight_problems(settings)


def entry_path(entry: str | Path) -> Path:
    """The file of ``entry``: a path, a ``module.function`` / ``module:function`` (pyinfra's
    function form: the module's file) or a bare name (see the module docstring).

    Example::

        entry_path("k3sfleet.deploys.bootstrap.run")   # .../deploys/bootstrap.py
    """
    text = str(entry)
    if text.endswith(".py") or Path(text).is_file():
        return Path(text)
    if ":" in text or "." in text:
        module = text.rsplit(":", 1)[0] if ":" in text else text.rsplit(".", 1)[0]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no module {module} (for {text})")
        return Path(spec.origin)
    return entry_file(text, Path.cwd())


@contextmanager
def _declarations_only() -> Iterator[None]:
    token = reading_declarations.set(True)
    try:
        yield
    finally:
        reading_declarations.reset(token)


def declares_preflight(path: Path) -> bool:
    """Whether the file at ``path`` assigns ``PREFLIGHT`` at module level (read with ``ast``,
    so a plain deploy file that runs operations as it is executed is never executed here)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "PREFLIGHT" for t in targets):
            return True
    return False


def declared_checks(entry: str | Path) -> list[Check]:
    """The ``PREFLIGHT`` that ``entry``'s file declares (none when it declares none).

    A file that declares one is executed as a fresh module with ``under_pyinfra()`` false (its
    operations sit under ``if under_pyinfra():``), so reading it runs no operation and a copy
    of an entry file declares what the original does.
    """
    path = entry_path(entry)
    if not declares_preflight(path):
        return []
    spec = importlib.util.spec_from_file_location(f"k3sfleet_entry_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py file that ast could read
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the file look their module up there
    try:
        with _declarations_only():
            spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return list(module.PREFLIGHT)


def entry_problems(
    entries: Sequence[str | Path], settings: Settings, nodes: Sequence[Node]
) -> list[str]:
    """Problems of every entry in ``entries``, each naming the file, without repeats."""
    problems: list[str] = []
    for entry in entries:
        path = entry_path(entry)
        for check in declared_checks(path):
            for problem in check(settings, nodes):
                line = f"{problem} (needed by {path.parent.name}/{path.name})"
                if line not in problems:
                    problems.append(line)
    return problems


def steps_problems(
    steps: Sequence[Path], settings: Settings, nodes: Sequence[Node]
) -> list[str]:
    """For an entry file that runs other entry files (``init_cluster.py``): what each declares.

    Example::

        PREFLIGHT = [lambda settings, nodes: steps_problems(steps(), settings, nodes)]
    """
    found = [p for step in steps for c in declared_checks(step) for p in c(settings, nodes)]
    return list(dict.fromkeys(found))
