"""Kubernetes Secrets declared in Python and applied through the API only when they differ.

A ``SecretSpec`` names a Secret (namespace, name, type, labels) and where each key's value
comes from: ``env("NAME")`` (a setting, an exported variable or a ``.envrc`` line, else the
vault key ``vault_name``), ``vault("vault_key.sub")``, ``literal("git")`` or
``template("...${NAME}...")``. ``missing_problems`` names every variable that is not set, so a
run stops before the cluster is touched; ``plan`` reads the Secrets and namespaces as they are
and says which Secrets and keys would change (no values); ``apply`` writes only what differs.

The pyinfra side: ``secrets_deploy(specs)`` (called by entry files such as deploys/secrets.py)
plans once at prepare time through one ``k3sfleet.kube.ApiSession`` and adds one
``k3sfleet.api_ops.api_call`` per Secret, named with what would change, so ``--dry`` lists
Secrets and keys without values.

Example::

    SECRETS = [
        SecretSpec("tailscale", "operator-oauth", {
            "client_id": env("TAILSCALE_OAUTH_CLIENT_ID"),
            "client_secret": env("TAILSCALE_OAUTH_CLIENT_SECRET"),
        }),
    ]
    with cluster_api("inventory.py") as api:
        for secret, change in plan(api, render_all(SECRETS, values)):
            print(secret.namespace, secret.name, change.describe())
"""

from __future__ import annotations

import base64
import json
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pyinfra import host, state

from k3sfleet.api_ops import api_call, api_host_name
from k3sfleet.errors import ConfigError, K3sfleetError
from k3sfleet.kube import ApiSession
from k3sfleet.project import chart_dir
from k3sfleet.secret import reveal
from k3sfleet.settings import Settings, load_env_files, setting_fields, variable

MANAGED_BY = {"app.kubernetes.io/managed-by": "k3sfleet"}

# -- where a value comes from ---------------------------------------------------------------


class Source(Protocol):
    """Where one key's value comes from."""

    def names(self) -> tuple[str, ...]:
        """The variables (or vault keys) it needs, for the missing-variables message."""
        ...

    def resolve(self, values: Values) -> str | None:
        """The value, or ``None`` when something it needs is not set."""
        ...


@dataclass(frozen=True)
class Env:
    """A variable: a k3sfleet setting (env, ``.envrc`` files, or vault ``vault_<name>``) or any
    other exported variable (process environment, then the project's ``.envrc`` files)."""

    name: str

    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def resolve(self, values: Values) -> str | None:
        return values.env(self.name)


@dataclass(frozen=True)
class VaultKey:
    """A vault key; ``vault_app_db_passwords.myapp`` reads into a map."""

    key: str

    def names(self) -> tuple[str, ...]:
        return (f"vault key {self.key}",)

    def resolve(self, values: Values) -> str | None:
        return values.vault_value(self.key)


@dataclass(frozen=True)
class Literal:
    """A fixed value (``type: git`` in a repository Secret)."""

    value: str

    def names(self) -> tuple[str, ...]:
        return ()

    def resolve(self, values: Values) -> str | None:
        return self.value


@dataclass(frozen=True)
class Template:
    """Text with ``${NAME}`` placeholders, each resolved as ``env(NAME)`` (a credentials file)."""

    text: str

    def names(self) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(
                m.group("named") or m.group("braced")
                for m in string.Template.pattern.finditer(self.text)
                if m.group("named") or m.group("braced")
            )
        )

    def resolve(self, values: Values) -> str | None:
        found = {n: values.env(n) for n in self.names()}
        if any(v is None for v in found.values()):
            return None
        return string.Template(self.text).substitute(found)


def env(name: str) -> Env:
    """The value of variable ``name`` (``env("CLOUDFLARE_API_TOKEN")``)."""
    return Env(name)


def vault(key: str) -> VaultKey:
    """The value of vault key ``key`` (dots go into maps)."""
    return VaultKey(key)


def literal(value: str) -> Literal:
    """A fixed value."""
    return Literal(value)


def template(text: str) -> Template:
    """Text with ``${NAME}`` placeholders: ``template("key=${R2_ACCESS_KEY_ID}\\n")``."""
    return Template(text)


# -- the values a run sees ------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Values:
    """What sources read: ``settings`` (setting field name -> value, as in host data), the
    process environment layered over the project's ``.envrc`` files, and the vault.

    Example::

        values = Values.load(Path("."))
        values.env("POSTGRES_PASSWORD")   # the plain value, or None
    """

    settings: Mapping[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)
    vault: Mapping[str, Any] = field(default_factory=dict)
    project_dir: Path = Path(".")

    def __repr__(self) -> str:
        return f"Values(project_dir={str(self.project_dir)!r})"

    @classmethod
    def load(
        cls,
        project_dir: Path | str = ".",
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Values:
        """Settings, env files and vault of ``project_dir``; ``overrides`` (host data) win."""
        project = Path(project_dir)
        environ = dict(os.environ if environ is None else environ)
        settings = Settings.load(project, environ)
        merged = settings.as_host_data()
        names = {f.name for f in setting_fields()}
        for key, value in (overrides or {}).items():
            if key in names:
                merged[key] = value
        layered = load_env_files(project, environ)
        return cls(merged, dict(layered), settings.vault, project)

    def env(self, name: str) -> str | None:
        """Variable ``NAME`` as text: a setting's value (host data wins), else as the settings
        read any variable (``k3sfleet.settings.variable``: environment, ``.envrc`` files,
        vault ``vault_<name>``); ``None`` when unset."""
        key = name.lower()
        if key in self.settings:
            value = self.settings[key]
        else:
            value, _ = variable(name, self.environ, self.vault)
        if isinstance(value, bool):
            return "true" if value else "false"
        text = reveal(value)
        return text if text else None

    def flag(self, name: str) -> bool:
        """Whether variable ``name`` is set to a true value (``ARGOCD_OIDC_ENABLED``)."""
        return (self.env(name) or "").strip().lower() in ("1", "true", "yes", "on")

    def is_set(self, name: str) -> bool:
        return self.env(name) is not None

    def vault_value(self, key: str) -> str | None:
        node: Any = self.vault
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        if node is None or isinstance(node, Mapping | list):
            return None
        text = str(node)
        return text if text else None

    def helm_value(self, chart_setting: str, dotted: str, default: Any = None) -> Any:
        """A value of a chart's ``values.yaml`` (``helm_value("gitops_apps_path",
        "pgadmin4.enabled")``); the chart path is the setting's value under the project."""
        chart = self.settings.get(chart_setting) or ""
        path = chart_dir(self.project_dir, str(chart)) / "values.yaml"
        if not path.is_file():
            return default
        node: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node


# -- the declaration ------------------------------------------------------------------------

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")


@dataclass(frozen=True)
class SecretSpec:
    """One Secret: where it lives, its type and labels, and where each key's value comes from.

    ``when`` (a function of ``Values``) leaves the Secret out when it returns False (Rancher's
    password only when Rancher is enabled or ``RANCHER_PASSWORD`` is set).
    """

    namespace: str
    name: str
    data: Mapping[str, Source]
    type: str = "Opaque"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    when: Callable[[Values], bool] | None = None
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def enabled(self, values: Values) -> bool:
        return self.when is None or bool(self.when(values))

    def problems(self) -> list[str]:
        """Malformed names or keys (checked before anything else)."""
        out = []
        for what, name in (("namespace", self.namespace), ("name", self.name)):
            if not NAME_RE.match(name) or len(name) > 253:
                out.append(f"Secret {self.ref}: {what} {name!r} is not a valid Kubernetes name")
        for key in self.data:
            if not KEY_RE.match(key):
                out.append(f"Secret {self.ref}: key {key!r} is not a valid Secret key")
        return out

    def missing(self, values: Values) -> list[str]:
        """The variables this Secret needs that are not set."""
        out: list[str] = []
        for source in self.data.values():
            if source.resolve(values) is None:
                for name in source.names():
                    if _unset(name, values) and name not in out:
                        out.append(name)
        return out

    def render(self, values: Values) -> DesiredSecret:
        data: dict[str, bytes] = {}
        for key, source in self.data.items():
            value = source.resolve(values)
            if value is None:
                raise ConfigError(f"Secret {self.ref}: key {key} has no value")
            data[key] = value.encode("utf-8")
        return DesiredSecret(
            self.namespace,
            self.name,
            self.type,
            {**MANAGED_BY, **self.labels},
            dict(self.annotations),
            data,
        )


def _unset(name: str, values: Values) -> bool:
    if name.startswith("vault key "):
        return values.vault_value(name.removeprefix("vault key ")) is None
    return values.env(name) is None


@dataclass(frozen=True)
class DesiredSecret:
    """A Secret as it should be. Its ``repr`` names the Secret and its keys, never values."""

    namespace: str
    name: str
    type: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    data: Mapping[str, bytes] = field(repr=False)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __repr__(self) -> str:
        return f"DesiredSecret({self.ref}, keys={sorted(self.data)})"

    def body(self, resource_version: str | None = None) -> dict[str, Any]:
        """The Secret as an API object (``resourceVersion`` for a replace)."""
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": dict(self.labels),
        }
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": self.type,
            "data": {k: base64.b64encode(v).decode() for k, v in sorted(self.data.items())},
        }


def missing_problems(specs: Sequence[SecretSpec], values: Values) -> list[str]:
    """Every unset variable of the enabled Secrets, one line each, naming the Secrets."""
    needed: dict[str, list[str]] = {}
    problems: list[str] = []
    for spec in specs:
        problems += spec.problems()
        if not spec.enabled(values):
            continue
        for name in spec.missing(values):
            needed.setdefault(name, []).append(spec.ref)
    for name, refs in needed.items():
        problems.append(f"{name} is not set (for Secret {', '.join(refs)})")
    refs = [s.ref for s in specs]
    for ref in sorted({r for r in refs if refs.count(r) > 1}):
        problems.append(f"Secret {ref} is declared more than once")
    return problems


def render_all(specs: Sequence[SecretSpec], values: Values) -> list[DesiredSecret]:
    """The enabled Secrets with their values; raises one ``ConfigError`` naming every missing
    variable (all Secrets' problems together), so nothing is written when one is missing."""
    problems = missing_problems(specs, values)
    if problems:
        raise ConfigError(problems)
    return [s.render(values) for s in specs if s.enabled(values)]


# -- comparing with the cluster -------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What applying one Secret would do; names keys, never values.

    ``action``: ``create``, ``update``, ``recreate`` (its type changed: Secrets' type is
    immutable) or ``none``.
    """

    namespace: str
    name: str
    action: str
    keys: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    create_namespace: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def changed(self) -> bool:
        return self.action != "none"

    def describe(self) -> str:
        if not self.changed:
            return "up to date"
        parts = [self.action]
        if self.keys:
            parts.append(f"keys {', '.join(self.keys)}")
        if self.removed:
            parts.append(f"removed keys {', '.join(self.removed)}")
        if self.metadata:
            parts.append(f"metadata {', '.join(self.metadata)}")
        if self.create_namespace:
            parts.append(f"new namespace {self.namespace}")
        return "; ".join(parts)


def diff(current: Mapping[str, Any] | None, desired: DesiredSecret) -> Change:
    """Compare a Secret as read from the API (JSON, or ``None``) with ``desired``."""
    ns, name = desired.namespace, desired.name
    if current is None:
        return Change(ns, name, "create", tuple(sorted(desired.data)))
    data = {k: base64.b64decode(v or "") for k, v in (current.get("data") or {}).items()}
    keys = tuple(sorted(k for k, v in desired.data.items() if data.get(k) != v))
    removed = tuple(sorted(set(data) - set(desired.data)))
    meta = current.get("metadata") or {}
    metadata = tuple(
        f"{kind} {k}"
        for kind, want, have in (
            ("label", desired.labels, meta.get("labels") or {}),
            ("annotation", desired.annotations, meta.get("annotations") or {}),
        )
        for k, v in sorted(want.items())
        if have.get(k) != v
    )
    if (current.get("type") or "Opaque") != desired.type:
        return Change(ns, name, "recreate", tuple(sorted(desired.data)), removed, metadata)
    action = "update" if keys or removed or metadata else "none"
    return Change(ns, name, action, keys, removed, metadata)


class ApiCallError(K3sfleetError):
    """The API refused a call; ``status`` is the HTTP status (409: a conflict)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Api:
    """The few raw calls we need, JSON in and out (no model (de)serialisation)."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        m, url, headers, data, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(m, url, header_params=headers, body=data)
        raw = resp.read()
        if resp.status == 404:
            return 404, None
        if resp.status >= 300:
            try:
                message = json.loads(raw).get("message", "")
            except (ValueError, AttributeError):
                message = ""
            raise ApiCallError(
                f"Kubernetes API {method} {path}: {resp.status} {resp.reason} {message}".rstrip(),
                resp.status,
            )
        return resp.status, json.loads(raw or b"null")

    def get(self, path: str) -> Any | None:
        _, body = self.call("GET", path)
        return body


def _paths(ns: str, name: str = "") -> tuple[str, str]:
    base = f"/api/v1/namespaces/{ns}"
    return base, f"{base}/secrets" + (f"/{name}" if name else "")


def plan(api: Any, desired: Sequence[DesiredSecret]) -> list[tuple[DesiredSecret, Change]]:
    """Read every Secret (and each namespace once) and compare: nothing is written."""
    raw = _Api(api)
    namespaces: dict[str, bool] = {}
    out = []
    for secret in desired:
        ns_path, path = _paths(secret.namespace, secret.name)
        first_in_namespace = secret.namespace not in namespaces
        if first_in_namespace:
            namespaces[secret.namespace] = raw.get(ns_path) is not None
        current = raw.get(path) if namespaces[secret.namespace] else None
        change = diff(current, secret)
        if first_in_namespace and not namespaces[secret.namespace]:
            change = Change(
                change.namespace, change.name, change.action, change.keys, create_namespace=True
            )
        out.append((secret, change))
    return out


# Reads and writes of one Secret before a lost race (409 Conflict) is an error
APPLY_ATTEMPTS = 3


def apply(api: Any, secret: DesiredSecret) -> Change:
    """Make the Secret as desired: read it, and write (create, replace, or delete and create
    when its type changed) only when it differs. The namespace is created when missing. A write
    that loses a race with another writer (409 Conflict) is read and compared again.
    Returns what was done."""
    for attempt in range(APPLY_ATTEMPTS):
        try:
            return _apply_once(api, secret)
        except ApiCallError as e:
            if e.status != 409 or attempt == APPLY_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _apply_once(api: Any, secret: DesiredSecret) -> Change:
    raw = _Api(api)
    ns_path, path = _paths(secret.namespace, secret.name)
    created_ns = False
    if raw.get(ns_path) is None:
        ns_body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": secret.namespace}}
        try:
            status, _ = raw.call("POST", "/api/v1/namespaces", ns_body)
            created_ns = status in (200, 201)
        except ApiCallError as e:
            if e.status != 409:  # created meanwhile by someone else: fine
                raise
    current = raw.get(path)
    change = diff(current, secret)
    if change.action == "create":
        raw.call("POST", _paths(secret.namespace)[1], secret.body())
    elif change.action == "recreate":
        raw.call("DELETE", path)
        raw.call("POST", _paths(secret.namespace)[1], secret.body())
    elif change.action == "update":
        assert current is not None
        meta = current.get("metadata") or {}
        body = secret.body(meta.get("resourceVersion"))
        body["metadata"]["labels"] = {**(meta.get("labels") or {}), **secret.labels}
        annotations = {**(meta.get("annotations") or {}), **secret.annotations}
        if annotations:
            body["metadata"]["annotations"] = annotations
        raw.call("PUT", path, body)
    if created_ns:
        change = Change(
            change.namespace, change.name, change.action, change.keys, create_namespace=True
        )
    return change


# -- pyinfra: one API session per run, one operation per Secret ------------------------------


class _Writes:
    """The writes a run still has to do through ``session``; the last one closes it."""

    def __init__(self, session: ApiSession, pending: int) -> None:
        self.session, self.pending = session, pending
        if pending == 0:
            session.close()

    def __repr__(self) -> str:
        return f"_Writes(pending={self.pending})"

    def done(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.session.close()


def _apply_callback(state: Any, host: Any, secret: DesiredSecret, writes: _Writes) -> None:
    try:
        apply(writes.session.api, secret)
    finally:
        writes.done()


def secrets_ops(
    desired: Sequence[DesiredSecret], session: ApiSession, label: str = "Kubernetes Secret"
) -> list[Change]:
    """Plan ``desired`` through ``session`` and add one ``api_call`` per Secret (current host),
    named with what would change; Secrets that are up to date change nothing."""
    planned = plan(session.api, desired)
    writes = _Writes(session, sum(1 for _, change in planned if change.changed))
    for secret, change in planned:
        api_call(
            name=f"{label} {change.ref}: {change.describe()}",
            function=_apply_callback,
            args=(secret, writes),
            changes=change.changed,
            unchanged=f"Secret {change.ref} is up to date",
        )
    return [change for _, change in planned]


def secrets_deploy(
    specs: Sequence[SecretSpec],
    *,
    values: Values | None = None,
    session: ApiSession | None = None,
) -> list[Change] | None:
    """The body of an entry file: on the run's API host only, check every variable (nothing
    touched when one is missing), plan through one API session, add one op per Secret.
    Returns the planned changes (``None`` on the other hosts)."""
    if host.name != api_host_name(state):
        return None
    if values is None:
        values = Values.load(project_dir(), overrides=host.data.dict())
    desired = render_all(specs, values)
    return secrets_ops(desired, session or ApiSession())


def project_dir() -> Path:
    """The project directory of a pyinfra run: host data ``k3sfleet_project_dir``, else the
    working directory."""
    configured = host.data.get("k3sfleet_project_dir")
    return Path(configured) if configured else Path.cwd()


def preflight_problems(
    settings: Any, specs: Sequence[SecretSpec], project: Path | None = None
) -> list[str]:
    """What applying ``specs`` (an entry file's Secrets list, such as ``deploys/secrets.py``'s
    ``SECRETS``) would miss, from the settings the inventory loaded and the project's
    ``.envrc`` files (the working directory): every unset variable at once."""
    project = project or Path.cwd()
    values = Values(
        settings.as_host_data(),
        dict(load_env_files(project, os.environ)),
        settings.vault,
        project,
    )
    return missing_problems(specs, values)
