"""Tailscale on every node: the official apt repository, tailscaled, and ``tailscale up``.

The auth key never appears on a command line: it is uploaded into a root-only directory
(``/run/k3sfleet``, tmpfs, mode 0700; the file 0600), read by ``tailscale up
--auth-key=file:PATH`` and removed right after, whether ``up`` worked or not. A node that is
already logged in as itself (``TailscaleStatus``: Running, HostName = inventory name) is left
alone: no re-authentication, no new node key.

``TAILSCALE_UP_BY=k3s`` installs and enables tailscaled only and leaves ``up`` to k3s's
vpn-auth. k3s runs ``tailscale up`` only when Tailscale is not already up, with the flags the
vpn-auth file gives as ``extraArgs`` (``deploys.k3s_node.vpn_up_args``: the same hostname, tags,
accept-routes and extra args as here, without ``--reset``, which k3s adds); with ``k3s`` the
node is not on the tailnet until k3s starts (the firewall's tailnet rules wait for it), and
``k3s-killall.sh`` removes every route Tailscale advertises.

Example::

    from k3sfleet.deploys.tailscale import tailscale

    tailscale()
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, deploy, operation

from k3sfleet.deploys.ops import LOGIN_USER, download, file, packages, service
from k3sfleet.deploys.readmodel import section, watch
from k3sfleet.errors import refuse_host_problems
from k3sfleet.facts.tailscale import AdvertisedRoutes, logged_in_as, routes_to_keep
from k3sfleet.preflight import vpn_args_problems
from k3sfleet.secret import Secret, reveal
from k3sfleet.settings import Default, data_value, default_values

KEYRING = "/usr/share/keyrings/tailscale-archive-keyring.gpg"
SOURCES_LIST = "/etc/apt/sources.list.d/tailscale.list"
SECRET_DIR = "/run/k3sfleet"
UPLOAD_DIR = "/run/k3sfleet-upload"
AUTH_KEY_FILE = f"{SECRET_DIR}/tailscale-authkey"
DAEMON_UNIT = "tailscaled.service"
PACKAGES = ("tailscale", "tailscale-archive-keyring")
#: What ``tailscale`` consults in the host's snapshot (``deploys.readmodel.watch``).
FILES: tuple[str, ...] = (KEYRING, SOURCES_LIST)
UNITS: tuple[str, ...] = (DAEMON_UNIT,)
EXTRAS: tuple[str, ...] = ("system", "packages", "tailscale")  # (the last: unless up by k3s)
TAG_RE = re.compile(r"^tag:[A-Za-z0-9-]+$")

DEFAULTS: dict[str, Default] = {
    "tailscale_extra_args": Default(
        [], 'more `tailscale up` flags (`["--ssh"]`; never the key; no whitespace with vpn-auth)'),
}


def repo_urls(base_url: str, distro: str, codename: str) -> tuple[str, str]:
    """The keyring URL and the apt source line of Tailscale's repository for a release.

    Example::

        repo_urls("https://pkgs.tailscale.com/stable", "debian", "bookworm")
        # ("https://pkgs.tailscale.com/stable/debian/bookworm.noarmor.gpg",
        #  "deb [signed-by=/usr/share/keyrings/tailscale-archive-keyring.gpg] "
        #  "https://pkgs.tailscale.com/stable/debian bookworm main")
    """
    base = f"{base_url.rstrip('/')}/{distro}"
    return f"{base}/{codename}.noarmor.gpg", f"deb [signed-by={KEYRING}] {base} {codename} main"


def up_flags(data: Mapping[str, Any], name: str, routes: Sequence[str] = ()) -> list[str]:
    """The ``tailscale up`` flags besides the auth key, for node ``name``.

    ``--reset`` sets every setting not given back to its default (tailscale.com v1.102.5
    ``cmd/tailscale/cli/up.go``), so what K3s set is given again: ``routes`` (the node's
    advertised routes and pod subnet, ``facts.tailscale.routes_to_keep``) and, with vpn-auth,
    ``--accept-routes`` (K3s's flannel backend runs ``tailscale set --accept-routes
    --advertise-routes=$SUBNET``, k3s-io/k3s v1.34.2+k3s1 ``pkg/agent/flannel/setup.go``).

    Example::

        up_flags({"k3s_vpn_auth": True}, "vps-1", ["10.42.1.0/24"])
        # ["--reset", "--hostname=vps-1", "--accept-routes", "--advertise-routes=10.42.1.0/24"]
    """
    flags = ["--reset", f"--hostname={name}"]
    tags = [t.strip() for t in str(data.get("tailscale_tags") or "").split(",") if t.strip()]
    if tags:
        flags.append(f"--advertise-tags={','.join(tags)}")
    if data.get("tailscale_accept_routes") or data.get("k3s_vpn_auth"):
        flags.append("--accept-routes")
    extra = [str(a) for a in data.get("tailscale_extra_args") or []]
    wanted = set(routes)
    for arg in [a for a in extra if a.startswith("--advertise-routes=")]:
        # the user's own routes join K3s's (a second --advertise-routes would replace them)
        wanted.update(r for r in arg.partition("=")[2].split(",") if r)
        extra.remove(arg)
    if wanted:
        flags.append(f"--advertise-routes={','.join(sorted(wanted))}")
    return flags + extra


def problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with the tailscale_* data of a node, as text."""
    found = []
    up_by = data_value(data, "tailscale_up_by")
    if up_by not in ("deploy", "k3s"):
        found.append(f"TAILSCALE_UP_BY must be deploy or k3s, not {up_by!r}")
    if up_by == "deploy" and not reveal(data.get("tailscale_auth_key")):
        found.append("TAILSCALE_AUTH_KEY is not set (needed for `tailscale up`)")
    for tag in str(data.get("tailscale_tags") or "").split(","):
        if tag.strip() and not TAG_RE.match(tag.strip()):
            found.append(f"TAILSCALE_TAGS: {tag.strip()!r} is not a tag (tag:name)")
    if not re.match(r"^https?://[^\s]+$", str(data.get("tailscale_apt_url") or "")):
        found.append("TAILSCALE_APT_URL must be an http(s) URL")
    for arg in data.get("tailscale_extra_args") or []:
        if not str(arg).startswith("--") or "auth-key" in str(arg) or "authkey" in str(arg):
            found.append(f"tailscale_extra_args: {arg!r} must be a --flag, and not the auth key")
    return found + vpn_args_problems(data)


@operation()
def tailscale_up(
    auth_key: Secret,
    flags: Callable[[Sequence[str]], list[str]],
) -> Generator[Any, None, None]:
    """Log the node in with ``auth_key`` unless its ``tailscale status`` shows it up as itself.

    ``flags`` gives the ``tailscale up`` flags for the routes to keep (read only when ``up``
    runs: what K3s advertised, kept across ``--reset``). The key goes through a root-only file
    that is removed right after ``tailscale up``.

    Example::

        tailscale_up(auth_key=Secret("tskey-auth-..."),
                     flags=lambda routes: ["--hostname=vps-1"])
    """
    status = section("tailscale")
    if logged_in_as(status, host.name):
        host.noop(f"Tailscale is up as {host.name} ({', '.join(status.get('ips') or [])})")
        return
    routes = routes_to_keep(host.get_fact(AdvertisedRoutes))
    # With sudo (``_sudo`` in host data) pyinfra uploads the file as the login user first
    # (pyinfra v3.10.0 pyinfra/connectors/ssh.py ``put_file``: "you can only sftp with the SSH
    # user connected"), so that upload goes into a directory only the login user can read. Under
    # sudo the login user is $SUDO_USER (sudo-project/sudo plugins/sudoers/env.c: "Add the
    # SUDO_USER, SUDO_UID, SUDO_GID environment variables", the invoking user's name), else the
    # user running the command (``deploys.ops.LOGIN_USER``, as the file primitive finds it).
    yield StringCommand(
        "install", "-d", "-m", "0700", "-o", "root", "-g", "root", SECRET_DIR, "&&",
        "install", "-d", "-m", "0700", "-o", LOGIN_USER, UPLOAD_DIR,
    )
    yield FileUploadCommand(
        StringIO(auth_key.unmask() + "\n"), AUTH_KEY_FILE,
        remote_temp_filename=f"{UPLOAD_DIR}/tailscale-authkey",
    )
    yield StringCommand("chmod", "0600", AUTH_KEY_FILE)
    message = (
        f"k3sfleet: `tailscale up` failed on {host.name}: the Tailscale auth key "
        "(TAILSCALE_AUTH_KEY / vault_tailscale_auth_key) was refused or the control server "
        "is unreachable (the message from tailscale is above)"
    )
    yield StringCommand(
        "out=$(", "tailscale", "up", f"--auth-key=file:{AUTH_KEY_FILE}",
        *[QuoteString(f) for f in flags(routes)], "2>&1", ")", ";",
        "rc=$?", ";", "rm", "-f", AUTH_KEY_FILE, ";",
        "printf", QuoteString("%s\\n"), '"$out"', ">&2", ";",
        *settle_after_backend_error(),
        "if", "[", "$rc", "-ne", "0", "]", ";", "then",
        "echo", QuoteString(message), ">&2", ";", "exit", "$rc", ";", "fi",
    )


# `tailscale up` subscribes to tailscaled's bus before it hands the backend the new login
# (tailscale.com v1.102.5 cmd/tailscale/cli/up.go: WatchIPNBus, then Start) and ends at the first
# error it reads there, while the backend forwards its current control client's errors until
# Start replaces that client (ipn/ipnlocal/local.go setControlClientStatusLocked ignores only an
# old client's). A login still retrying a refused key (control/controlclient/auto.go
# authRoutine: n^2 x 10 ms backoff, at most 30 s) can so end the next `up` with "backend error:
# invalid authkey" while the new key logs in. After such an error the node gets
# UP_SETTLE_SECONDS to reach Running before the run counts as failed.
UP_SETTLE_SECONDS = 15


def settle_after_backend_error() -> list[Any]:
    """Shell words that, after ``out=$(tailscale up ... 2>&1); rc=$?``, set ``rc=0`` when ``up``
    ended with "backend error:" and the node then reaches Running within UP_SETTLE_SECONDS.

    Example::

        StringCommand("out=$(", "tailscale", "up", "2>&1", ")", ";", "rc=$?", ";",
                      *settle_after_backend_error(), "exit", "$rc")
    """
    return [
        "case", '"$out"', "in", "*'backend error:'*)",
        "n=0", ";", "while", "[", "$rc", "-ne", "0", "]", "&&",
        "[", "$n", "-lt", str(UP_SETTLE_SECONDS), "]", ";", "do",
        "sleep", "1", ";", "n=$((n", "+", "1))", ";",
        "tailscale", "status", "--json", "2>/dev/null", "|",
        "grep", "-q", QuoteString('"BackendState": "Running"'), "&&", "rc=0", ";",
        "done", ";;", "esac", ";",
    ]


@deploy("k3sfleet tailscale", data_defaults=default_values(DEFAULTS))
def tailscale() -> None:
    """Install Tailscale from its apt repository, enable tailscaled, and bring the node up.

    Example::

        tailscale()
    """
    data = host.data
    refuse_host_problems(host.name, problems(data.dict()))
    up_here = data.tailscale_up_by != "k3s"
    watch(files=FILES, units=UNITS, extras=EXTRAS if up_here else EXTRAS[:-1])
    system = section("system")
    key_url, source = repo_urls(str(data.tailscale_apt_url), system["id"], system["codename"])

    download(name="Tailscale apt key", src=key_url, dest=KEYRING, mode="0644")
    file(name="Tailscale apt repository", path=SOURCES_LIST, content=f"{source}\n",
         then=["apt-get update"])
    # The keyring package keeps the repository's signing key current (Tailscale's installer
    # installs it with tailscale, tailscale.com v1.102.5 scripts/installer.sh; the tailscale
    # package only Recommends it, which the nodes' apt policy does not install).
    packages(name="tailscale installed", packages=list(PACKAGES))
    service(name="tailscaled running", unit=DAEMON_UNIT, running=True, enabled=True)
    if not up_here:
        host.noop("TAILSCALE_UP_BY=k3s: k3s's vpn-auth runs `tailscale up`")
        return
    key = data.tailscale_auth_key
    tailscale_up(
        name="tailscale up",
        auth_key=key if isinstance(key, Secret) else Secret(str(reveal(key))),
        flags=functools.partial(up_flags, data.dict(), host.name),
    )
