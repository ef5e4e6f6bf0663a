"""One typed settings object for the whole project.

Sources, in rising precedence: the defaults below, the vault (key ``vault_<name>``), ``.envrc``,
``.envrc.local``, ``.env``, then the process environment. The direnv files are parsed with
python-dotenv and their values expanded with expandvars, so ``export KEY=value``, ``$VAR`` and
``${VAR:-default}`` work as direnv would.

Each setting's environment variable is its field name in upper case (``k3s_version`` ->
``K3S_VERSION``) and it reaches every host as host data under the field name, so deploys read
``host.data.k3s_version``. Secret settings are ``Secret`` values (pyinfra masks them).

Example::

    settings = Settings.load(Path("."))
    settings.k3s_version            # "v1.34.2+k3s1"
    settings.tailscale_auth_key     # Secret('*MASKED*'); .unmask() gives the value
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import functools
import json
import os
import types
import typing
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from dotenv.parser import parse_stream
from expandvars import ExpandvarsException, expand

from k3sfleet.errors import ConfigError
from k3sfleet.secret import Secret
from k3sfleet.vault import (
    VaultError,
    find_vault_file,
    load_vault,
    needs_password,
    resolve_password,
)

ENV_FILES = (".envrc", ".envrc.local", ".env")
# Argo CD's namespace, fixed: the HelmChart installs it there, the secrets deploy writes its
# OIDC and repository secrets there, the infrastructure chart routes argocd-server there, and
# `k3sfleet dr` and the verify suite find the Applications there.
ARGOCD_NAMESPACE = "argocd"
# The root App-of-Apps Applications deploys/argocd.py writes there, one per chart of the GitOps
# repository (helm/infrastructure, helm/apps); `k3sfleet dr` moves services through the
# second's values, and the verify suite checks both exist.
INFRASTRUCTURE_APPLICATION = "infrastructure"
APPS_APPLICATION = "apps"


def setting(default: Any, doc: str, *, secret: bool = False, choices: tuple[str, ...] = ()) -> Any:
    """Declare one setting: its default, one line of documentation, and whether it is secret."""
    return field(default=default, metadata={"doc": doc, "secret": secret, "choices": choices})


@dataclass(frozen=True)
class Settings:
    """Every setting k3sfleet reads. The README's settings table is kept in step by a test."""

    # -- how k3sfleet reaches the nodes ------------------------------------------------------
    k3sfleet_connect: str = setting(
        "public",
        "Which node address to connect to: `public` (vault_ansible_hosts, for bootstrap) "
        "or `tailnet` (vault_tailscale_hosts, else the MagicDNS name)",
        choices=("public", "tailnet"),
    )
    k3sfleet_vault_file: str = setting(
        "vault.yml",
        "Ansible Vault file, relative to the project; without it and without `vault.yml`, "
        "the Ansible repository's `ansible/inventory/group_vars/all/vault.yml` is used",
    )
    k3sfleet_vault_password_file: str | None = setting(
        None,
        "Vault password file (an executable one is run); ANSIBLE_VAULT_PASSWORD_FILE also works",
    )
    k3sfleet_ssh_key: str | None = setting(None, "Private key for SSH to the nodes")
    k3sfleet_known_hosts: str = setting(
        "~/.ssh/known_hosts", "known_hosts file; host keys are always checked"
    )
    k3sfleet_tailnet_domain: str | None = setting(
        None, "MagicDNS suffix of the tailnet (for example `tail1234.ts.net`)"
    )
    k3sfleet_api_server: str | None = setting(
        None,
        "Reach the Kubernetes API directly at this URL (a tailnet address) "
        "instead of an SSH tunnel",
    )
    k3sfleet_lab_dir: str = setting("/var/lib/k3sfleet-lab", "Where `k3sfleet lab` keeps its hosts")
    k3sfleet_lab_cache_dir: str = setting(
        "~/.cache/k3sfleet", "Cache for the lab's root filesystem and artifacts"
    )

    # -- common / firewall -------------------------------------------------------------------
    common_timezone: str = setting("UTC", "Timezone of every node")
    common_unattended_upgrades: bool = setting(True, "Install unattended security upgrades")
    common_ssh_permit_root_login: str = setting(
        "no", "sshd PermitRootLogin", choices=("no", "prohibit-password")
    )
    common_journald_max_use: str = setting("500M", "journald SystemMaxUse cap")

    # -- Tailscale ---------------------------------------------------------------------------
    tailscale_auth_key: Secret | None = setting(
        None, "Tailscale auth key for the nodes (vault_tailscale_auth_key)", secret=True
    )
    tailscale_apt_url: str = setting(
        "https://pkgs.tailscale.com/stable", "Base URL of Tailscale's apt repository"
    )
    tailscale_up_by: str = setting(
        "deploy",
        "Who runs `tailscale up`: the `deploy` or k3s's vpn-auth (`k3s`)",
        choices=("deploy", "k3s"),
    )
    tailscale_tags: str = setting("", "Comma-separated tags to advertise (`tag:k3s`)")
    tailscale_accept_routes: bool = setting(False, "Pass --accept-routes to `tailscale up`")
    tailscale_oauth_client_id: str | None = setting(
        None, "OAuth client ID for the Tailscale Kubernetes operator"
    )
    tailscale_oauth_client_secret: Secret | None = setting(
        None, "OAuth client secret for the Tailscale Kubernetes operator", secret=True
    )

    # -- K3s ---------------------------------------------------------------------------------
    k3s_version: str = setting("v1.34.2+k3s1", "K3s version to install and upgrade to")
    k3s_release_url: str = setting(
        "https://github.com/k3s-io/k3s/releases/download", "Base URL of K3s releases"
    )
    k3s_token: Secret | None = setting(
        None,
        "Cluster token (vault_k3s_token; `k3sfleet token save` stores it); empty: read from "
        "the first server at run time",
        secret=True,
    )
    k3s_vpn_auth: bool = setting(True, "Join nodes through k3s's Tailscale integration (vpn-auth)")
    k3s_allow_versions: str = setting(
        "", "Comma-separated known-bad K3s versions to allow anyway"
    )
    k3s_reset_confirm: str = setting(
        "", "Must be `yes-destroy-k3s` for deploys/reset.py to uninstall K3s"
    )
    k3s_etcd_s3: bool = setting(False, "Send etcd snapshots to R2 (embedded etcd only)")
    k3s_etcd_s3_bucket: str | None = setting(None, "R2 bucket for etcd snapshots")

    # -- Kubernetes secrets and apps ---------------------------------------------------------
    domain: str | None = setting(None, "Public DNS domain of the cluster's services")
    velero_bucket: str | None = setting(None, "R2 bucket for Velero backups")
    r2_endpoint: str | None = setting(
        None, "R2 S3 endpoint (`https://<account>.r2.cloudflarestorage.com`)"
    )
    r2_access_key_id: Secret | None = setting(None, "R2 access key ID", secret=True)
    r2_secret_access_key: Secret | None = setting(None, "R2 secret access key", secret=True)
    cloudflare_api_token: Secret | None = setting(
        None, "Cloudflare API token (external-dns, cert-manager)", secret=True
    )
    postgres_password: Secret | None = setting(None, "PostgreSQL admin password", secret=True)
    rancher_password: Secret | None = setting(None, "Rancher bootstrap password", secret=True)
    pgadmin_password: Secret | None = setting(None, "pgAdmin login password", secret=True)

    # -- GitOps ------------------------------------------------------------------------------
    argocd_chart_version: str = setting("9.1.4", "argo-cd Helm chart version")
    argocd_chart_repo: str = setting(
        "https://argoproj.github.io/argo-helm", "Helm repository of the argo-cd chart"
    )
    argocd_oidc_enabled: bool = setting(False, "Log in to Argo CD through OIDC")
    argocd_oidc_issuer_url: str | None = setting(None, "OIDC issuer URL")
    argocd_oidc_client_id: str | None = setting(None, "OIDC client ID")
    argocd_oidc_client_secret: Secret | None = setting(None, "OIDC client secret", secret=True)
    argocd_oidc_logout_url: str | None = setting(None, "OIDC end-session URL")
    gitops_repo_url: str | None = setting(None, "Git repository Argo CD syncs from")
    gitops_revision: str = setting("main", "Revision Argo CD syncs")
    gitops_infrastructure_path: str = setting("helm/infrastructure", "Path of the infra chart")
    gitops_apps_path: str = setting("helm/apps", "Path of the apps chart")
    gitops_repo_username: str | None = setting(None, "Username for a private Git repository")
    gitops_repo_password: Secret | None = setting(
        None, "Password or token for a private Git repository", secret=True
    )

    # -- day-2 operations --------------------------------------------------------------------
    rolling_agent_batch: int = setting(1, "Agents changed at once by upgrades and maintenance")
    rolling_drain_timeout: int = setting(300, "Seconds to wait for a node to drain")
    rolling_drain_force: bool = setting(
        False, "Delete pods that eviction cannot move once the drain timeout passed"
    )
    maintenance_upgrade: str = setting(
        "all", "Packages maintenance upgrades", choices=("all", "security")
    )

    # -- not settings: where each value came from, and the raw vault ---------------------------
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    vault: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # False when a vault file exists but could not be read (then ``vault`` is empty)
    vault_readable: bool = field(default=True, repr=False, compare=False)
    # The vault file looked for (read when it exists): what `k3sfleet config` names
    vault_path: Path | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        project_dir: Path | str = ".",
        environ: Mapping[str, str] | None = None,
        *,
        vault_password_file: str | None = None,
        use_vault: bool = True,
    ) -> Settings:
        """Build the settings for ``project_dir``; raise ``ConfigError`` naming every problem."""
        settings, problems = cls.load_partial(
            project_dir, environ, vault_password_file=vault_password_file, use_vault=use_vault
        )
        if problems:
            raise ConfigError(problems)
        return settings

    @classmethod
    def load_partial(
        cls,
        project_dir: Path | str = ".",
        environ: Mapping[str, str] | None = None,
        *,
        vault_password_file: str | None = None,
        use_vault: bool = True,
    ) -> tuple[Settings, list[str]]:
        """Like ``load``, but return the problems with settings in which every bad value is
        left at its default, so callers can go on checking and report everything at once."""
        project = Path(project_dir)
        env = dict(os.environ if environ is None else environ)
        layered = load_env_files(project, env)
        vault, vault_path, problems = _read_vault(project, layered, vault_password_file, use_vault)
        readable = not problems

        problems += unknown_names(layered)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for f in setting_fields():
            env_name = f.name.upper()
            raw, source = variable(env_name, layered, vault)
            if raw is None:
                continue
            sources[f.name] = source
            try:
                values[f.name] = _coerce(f, raw)
            except ValueError as e:
                problems.append(f"{env_name}: {e}")
        settings = cls(
            **values, sources=sources, vault=vault, vault_readable=readable,
            vault_path=vault_path if use_vault else None,
        )
        return settings, problems

    def as_host_data(self) -> dict[str, Any]:
        """The settings as pyinfra host data (field name -> value)."""
        return {f.name: getattr(self, f.name) for f in setting_fields()}

    def missing(self, *names: str) -> list[str]:
        """The environment names of those settings that are unset."""
        return [n.upper() for n in names if getattr(self, n) in (None, "")]


def _read_vault(
    project: Path, layered: LayeredEnv, password_file: str | None, use_vault: bool
) -> tuple[dict[str, Any], Path, list[str]]:
    """The project's vault (empty when there is none, it is not used, or it cannot be read),
    the file looked for, and what went wrong reading it."""
    vault_path = find_vault_file(project, layered.get("K3SFLEET_VAULT_FILE"))
    if use_vault and layered.get("K3SFLEET_VAULT_FILE") and not vault_path.exists():
        return {}, vault_path, [f"vault file {vault_path} (K3SFLEET_VAULT_FILE) does not exist"]
    if not (use_vault and vault_path.exists()):
        return {}, vault_path, []
    try:
        password = None
        if needs_password(vault_path):
            password = resolve_password(
                password_file or layered.get("K3SFLEET_VAULT_PASSWORD_FILE"), layered, project
            )
        return load_vault(vault_path, password), vault_path, []
    except VaultError as e:
        return {}, vault_path, [str(e)]


def variable(
    name: str, environ: Mapping[str, str], vault: Mapping[str, Any]
) -> tuple[Any, str]:
    """Where variable ``NAME`` is set, and its raw value: the environment layered over the
    project's files (``environ``), else vault key ``vault_<name>``; an empty value is unset.
    Returns ``(None, "")`` when it is set nowhere. Every setting is read this way, and so is
    any other variable (``k3sfleet.k8s_secrets.Values.env``).

    Example::

        variable("K3S_TOKEN", load_env_files(project, os.environ), vault)   # (Secret, "vault")
    """
    if environ.get(name, "") != "":
        source = environ.source(name) if isinstance(environ, LayeredEnv) else "environment"
        return environ[name], source
    value = vault.get(f"vault_{name.lower()}")
    if value not in (None, ""):  # "" in the vault: unset
        return value, "vault"
    return None, ""


def unknown_names(layered: LayeredEnv) -> list[str]:
    """Names set in the project's files (``.envrc`` ...) that are close to a setting's name but
    are none (``K3S_VERISON``): a typo would otherwise leave the setting at its default. Other
    names are left alone (the Secrets list reads any variable)."""
    names = {f.name.upper() for f in setting_fields()}
    problems = []
    for layer, source in zip(layered.maps[1:], layered.names[1:], strict=True):
        for key in sorted(set(layer) - names):
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.85)
            if close:
                problems.append(f"{key} in {source} is not a setting (did you mean {close[0]}?)")
    return problems


def setting_fields() -> list[Any]:
    """The dataclass fields that are settings (documented in the README)."""
    return [f for f in fields(Settings) if "doc" in f.metadata]


def format_default(value: Any) -> str:
    """A default as the README table and ``.envrc.example`` show it (``true``, ``300``, ``""``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Default(NamedTuple):
    """One entry of a deploy's ``DEFAULTS`` block (its ``defaults/main.yml``, in Ansible's
    terms): the default of a prefixed host-data key, and one line saying what the key does. The
    value is a literal, so ``deploy_data_rows`` reads the block without importing the deploy.

    Example (the top of a deploy module)::

        DEFAULTS = {"common_swap_off": Default(True, "swap off now and in `/etc/fstab`")}

        @deploy("k3sfleet common", data_defaults=default_values(DEFAULTS))
    """

    value: Any
    doc: str


def default_values(block: Mapping[str, Default]) -> dict[str, Any]:
    """The key -> value mapping of a ``DEFAULTS`` block (``@deploy(data_defaults=...)``).

    Example::

        default_values({"common_swap_off": Default(True, "...")})  # {"common_swap_off": True}
    """
    return {key: entry.value for key, entry in block.items()}


def data_value(data: Any, key: str, block: Mapping[str, Default] | None = None) -> Any:
    """Host data ``key`` as a deploy reads it outside pyinfra's own defaulting (checks before
    contact, a caller's plain dict): the value in ``data`` unless ``None``, else the deploy's
    ``block`` default, else the setting's default (every setting is host data under its field
    name). The one place such a default is looked up: none is repeated inline.

    Example::

        data_value({}, "tailscale_up_by")  # "deploy" (the setting's default)
    """
    value = data.get(key) if isinstance(data, Mapping) else getattr(data, key, None)
    if value is not None:
        return value
    if block is not None and key in block:
        return block[key].value
    return _setting_defaults().get(key)


@functools.cache
def _setting_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in setting_fields()}


def deploy_data_blocks(folder: Path) -> dict[str, dict[str, Default]]:
    """Every ``DEFAULTS`` block of the deploy modules in ``folder``, by module name, read from
    their source with ``ast`` (``k3sfleet`` never imports ``deploys``); ``**other`` entries (a
    block that extends another module's) are left to that module.

    Example::

        deploy_data_blocks(PACKAGE_DIR / "deploys")["common"]["common_swap_off"].value  # True
    """
    blocks: dict[str, dict[str, Default]] = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) else None)
            value = getattr(node, "value", None)
            if not (isinstance(target, ast.Name) and target.id == "DEFAULTS"
                    and isinstance(value, ast.Dict)):
                continue
            block = blocks.setdefault(path.stem, {})
            for key, entry in zip(value.keys, value.values, strict=True):
                if key is None:
                    continue
                if not (isinstance(entry, ast.Call) and getattr(entry.func, "id", "") == "Default"):
                    raise ConfigError(f"{path.name}: DEFAULTS[{ast.unparse(key)}] is not a Default")
                block[ast.literal_eval(key)] = Default(*(ast.literal_eval(a) for a in entry.args))
    return blocks


def format_data_default(value: Any) -> str:
    """A host-data default as the README's deploy data table shows it: a one-line string as it
    is, anything else as JSON (``null``, ``true``, ``["80/tcp"]``, ``"a\\nb"``)."""
    if isinstance(value, str) and value and "\n" not in value:
        return value
    return json.dumps(value)


def deploy_data_rows(folder: Path) -> list[str]:
    """The README's deploy data table rows, one per key of each deploy's ``DEFAULTS`` block
    (``k3sfleet config --readme-table``)."""
    return [
        f"| {deploy} | `{key}` | `{format_data_default(entry.value)}` | {entry.doc} |"
        for deploy, block in deploy_data_blocks(folder).items() for key, entry in block.items()
    ]


def readme_rows() -> list[str]:
    """The README settings table rows, one per setting (``k3sfleet config --readme-table``)."""
    rows = []
    for f in setting_fields():
        default = format_default(f.default)
        rows.append(
            f"| `{f.name.upper()}` | {f.metadata['doc']} | {f'`{default}`' if default else ''} "
            f"| {'yes' if f.metadata['secret'] else 'no'} |"
        )
    return rows


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def _field_type(f: Any) -> type:
    hint = _type_hints()[f.name]
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint  # type: ignore[no-any-return]


def _coerce(f: Any, raw: Any) -> Any:
    kind = _field_type(f)
    choices = f.metadata.get("choices") or ()
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind is int:
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
    if kind is Secret:
        return raw if isinstance(raw, Secret) else Secret(str(raw))
    value = str(raw)
    if choices and value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
    return value


class LayeredEnv(ChainMap[str, str]):
    """The process environment over ``.env`` over ``.envrc.local`` over ``.envrc``."""

    def __init__(self, *maps: dict[str, str], names: tuple[str, ...]) -> None:
        super().__init__(*maps)
        self.names = names

    def source(self, key: str) -> str:
        for name, mapping in zip(self.names, self.maps, strict=True):
            if key in mapping:
                return name
        raise KeyError(key)


def load_env_files(project: Path, environ: Mapping[str, str]) -> LayeredEnv:
    """Read the direnv/dotenv files of ``project`` layered under ``environ``.

    ``${VAR:-default}`` in a file sees the process environment first, then the files before it,
    then the lines above it in the same file, as direnv's bash would. A single-quoted value is
    literal; a value bash could not expand (``${VAR``, ``${VAR:?}`` unset) is kept as written.

    python-dotenv's own interpolation is not enough (dotenv/variables.py, 1.2.4: only
    ``${VAR}`` and ``${VAR:-default}``, no ``$VAR``, the default not expanded, and
    ``resolve_variables`` in dotenv/main.py reads ``os.environ``, not the layers given here), so
    values are expanded with expandvars, a bash parameter-expansion parser that takes the
    environment as an argument.
    """
    layers: list[dict[str, str]] = []
    for name in ENV_FILES:
        path = project / name
        if not path.is_file():
            layers.append({})
            continue
        values: dict[str, str] = {}
        context = ChainMap(dict(environ), values, *reversed(layers))
        with path.open(encoding="utf-8") as stream:
            for binding in parse_stream(stream):
                if binding.key is None or binding.error:
                    continue  # direnv commands such as `source_env_if_exists .envrc.local`
                value = binding.value or ""
                quoted = binding.original.string.split("=", 1)[-1].lstrip().startswith("'")
                if not quoted:
                    with contextlib.suppress(ExpandvarsException):
                        value = expand(value, environ=context)
                values[binding.key] = value
        layers.append(values)
    return LayeredEnv(
        dict(environ),
        *reversed(layers),
        names=("environment", *reversed(ENV_FILES)),
    )
