"""The stand-in ``tailscale`` CLI: up, set, down, logout, status [--json], ip, debug prefs,
version.

``up`` takes ``--auth-key=KEY`` or ``--auth-key=file:PATH`` (also ``--authkey``), ``--hostname``,
``--advertise-tags``, ``--accept-routes``, ``--reset``; a key is valid when its sha256 is in the
host's /etc/k3sfleet-lab/host.json. Every call's argv is appended to /var/lib/tailscale/argv.log
(JSON lines) so tests can prove no secret was passed on a command line. Messages and exit codes
follow the real CLI.

Example::

    tailscale up --auth-key=file:/etc/tailscale/authkey --hostname lab-server-1
    tailscale status --json | jq -r .BackendState     # Running
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from .common import (
    ARGV_LOG,
    SOCKET,
    STATE_DIR,
    VERSION,
    apply_interface,
    host_info,
    load_state,
    save_state,
)

NOT_RUNNING = (
    "failed to connect to local tailscaled; it doesn't appear to be running "
    "(sudo systemctl start tailscaled ?)"
)


def _record(argv: list[str]) -> None:
    try:
        STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fd = os.open(ARGV_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(
                json.dumps({"time": stamp, "argv": ["tailscale", *argv], "uid": os.getuid()}) + "\n"
            )
    except OSError:
        pass


def _daemon_state() -> dict[str, Any] | None:
    """The daemon's view of the state (readable by any user), or None if it is not running."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(SOCKET))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
    except (OSError, ValueError):
        return None
    state: dict[str, Any] = reply.get("state", {})
    return state


def _fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def backend_state(state: dict[str, Any]) -> str:
    if not state.get("LoggedIn"):
        return "NeedsLogin"
    return "Running" if state.get("WantRunning") else "Stopped"


def _flags(args: list[str]) -> dict[str, str | bool]:
    flags: dict[str, str | bool] = {}
    valued = {
        "auth-key",
        "authkey",
        "hostname",
        "advertise-tags",
        "login-server",
        "advertise-routes",
        "timeout",
        "operator",
        "exit-node",
    }
    index = 0
    while index < len(args):
        arg = args[index].lstrip("-")
        index += 1
        name, sep, value = arg.partition("=")
        if sep:
            flags[name] = value
        elif name in valued and index < len(args):
            flags[name] = args[index]
            index += 1
        else:
            flags[name] = True
    if "authkey" in flags:
        flags["auth-key"] = flags.pop("authkey")
    return flags


def _read_key(value: str) -> str:
    if value.startswith("file:"):
        return Path(value[5:]).read_text().strip()
    return value


def up(args: list[str]) -> int:
    flags = _flags(args)
    state = load_state()
    info = host_info()
    hostname = str(flags.get("hostname") or state.get("HostName") or socket.gethostname())
    tags = sorted(t for t in str(flags.get("advertise-tags") or "").split(",") if t)
    if state.get("LoggedIn") and not flags.get("reset"):
        changed = []
        if "hostname" in flags and hostname != state.get("HostName"):
            changed.append(f"--hostname={state.get('HostName', '')}")
        if "advertise-tags" in flags and tags != state.get("AdvertiseTags", []):
            changed.append(f"--advertise-tags={','.join(state.get('AdvertiseTags', []))}")
        changed += _route_reverts(flags, state)
        if changed:
            return _fail(
                "Error: changing settings via 'tailscale up' requires mentioning all\n"
                "non-default flags. To proceed, either re-run your command with --reset "
                "or use the command below to explicitly mention the current value of "
                f"all non-default settings:\n\n\ttailscale up {' '.join(changed)}"
            )
    routes = _routes(flags, state)
    if isinstance(routes, str):
        return _fail(routes)
    key = flags.get("auth-key")
    if isinstance(key, str) and key:
        try:
            secret = _read_key(key)
        except OSError as error:
            return _fail(f"reading auth key from file: {error.strerror}")
        valid = set(info.get("auth_key_sha256") or [])
        if hashlib.sha256(secret.encode()).hexdigest() not in valid:
            return _fail("backend error: invalid key: unable to validate API key")
        state["LoggedIn"] = True
        state["NodeKey"] = state.get("NodeKey") or "nodekey:" + os.urandom(16).hex()
    elif not state.get("LoggedIn"):
        print("\nTo authenticate, visit:\n\n\thttps://login.tailscale.com/a/standin\n")
        return _fail("timeout waiting for login (the lab stand-in cannot log in interactively)")
    state.update(
        {
            "WantRunning": True,
            "HostName": hostname,
            "AdvertiseTags": tags
            if "advertise-tags" in flags or flags.get("reset")
            else state.get("AdvertiseTags", []),
            "AcceptRoutes": bool(flags.get("accept-routes")),
            "AdvertiseRoutes": routes,
        }
    )
    save_state(state)
    apply_interface(state)
    return 0


# -- subnet routes (what K3s's flannel tailscale backend uses) -------------------------------
# Real sources, tailscale.com v1.102.5: cmd/tailscale/cli/up.go (--reset resets every setting
# not given to its default, so advertised routes are dropped; without --reset a setting that
# would change must be mentioned), cmd/tailscale/cli/set.go (`set` changes only the flags
# given), net/netutil/routes.go CalcAdvertiseRoutes (comma-separated prefixes, deduplicated,
# "%s has non-address bits set; expected %s"), ipn/ipnlocal/local.go Logout (deletes the
# profile: every pref, routes included, is gone), ipn/ipnstate/ipnstate.go PeerStatus
# PrimaryRoutes ("the routes this node is currently the primary subnet router for, as
# determined by the control plane", omitted when empty).


def _parse_routes(text: str) -> list[str] | str:
    """``--advertise-routes`` as CalcAdvertiseRoutes reads it: sorted, unique; or an error."""
    import ipaddress

    routes: set[str] = set()
    for item in (text.split(",") if text else []):
        try:
            network = ipaddress.ip_network(item, strict=False)
            given = ipaddress.ip_interface(item)
        except ValueError:
            return f"{item!r} is not a valid IP address or CIDR prefix"
        if given.ip != network.network_address:
            return f"{item} has non-address bits set; expected {network}"
        routes.add(str(network))
    return sorted(routes)


def _routes(flags: dict[str, str | bool], state: dict[str, Any]) -> list[str] | str:
    """The advertised routes after ``up``: the flag's, else none with --reset, else kept."""
    if "advertise-routes" in flags:
        return _parse_routes(str(flags["advertise-routes"] or ""))
    return [] if flags.get("reset") else list(state.get("AdvertiseRoutes") or [])


def _route_reverts(flags: dict[str, str | bool], state: dict[str, Any]) -> list[str]:
    """What ``up`` without --reset would silently drop (the real CLI refuses it)."""
    current = list(state.get("AdvertiseRoutes") or [])
    return [f"--advertise-routes={','.join(current)}"] if current and (
        "advertise-routes" not in flags) else []


def approved_routes(routes: list[str]) -> list[str]:
    """The routes the lab's tailnet policy approves (the lab's control plane).

    A route is approved when it lies inside a prefix of ``auto_approved_routes`` in
    /etc/k3sfleet-lab/host.json: the lab's ``autoApprovers.routes`` (its owners are not
    modelled). Anything else stays pending, as on a tailnet without a matching policy.
    """
    import ipaddress

    approvers = [ipaddress.ip_network(p) for p in host_info().get("auto_approved_routes") or []]
    return [
        r for r in routes
        if any(ipaddress.ip_network(r).subnet_of(a) for a in approvers  # type: ignore[arg-type]
               if ipaddress.ip_network(r).version == a.version)
    ]


def set_prefs(args: list[str]) -> int:
    """``tailscale set``: change only the given settings of the current profile."""
    flags = _flags(args)
    state = load_state()
    unknown = sorted(set(flags) - {"advertise-routes", "accept-routes", "hostname"})
    if unknown:
        return _fail(f"flag provided but not defined: -{unknown[0]}", 2)
    if "advertise-routes" in flags:
        routes = _parse_routes(str(flags["advertise-routes"] or ""))
        if isinstance(routes, str):
            return _fail(routes)
        state["AdvertiseRoutes"] = routes
    if "accept-routes" in flags:
        state["AcceptRoutes"] = flags["accept-routes"] not in ("false", "0")
    if "hostname" in flags:
        state["HostName"] = str(flags["hostname"])
    save_state(state)
    return 0


def prefs_json(state: dict[str, Any]) -> dict[str, Any]:
    """``tailscale debug prefs``: ipn.Prefs as JSON (the fields k3sfleet and K3s read)."""
    return {
        "ControlURL": "https://controlplane.tailscale.com",
        "RouteAll": bool(state.get("AcceptRoutes")),
        "WantRunning": bool(state.get("WantRunning")),
        "LoggedOut": not state.get("LoggedIn"),
        "AdvertiseTags": state.get("AdvertiseTags") or None,
        "Hostname": state.get("HostName") or "",
        "AdvertiseRoutes": state.get("AdvertiseRoutes") or None,
    }


def status_json(state: dict[str, Any]) -> dict[str, Any]:
    info = host_info()
    running = backend_state(state) == "Running"
    domain = info.get("tailnet_domain", "lab.ts.net")
    ips = [info["tailnet_address"]] if running and info.get("tailnet_address") else []
    hostname = state.get("HostName") or socket.gethostname()
    me = {
        "ID": "n" + hashlib.sha256(hostname.encode()).hexdigest()[:12],
        "HostName": hostname,
        "DNSName": f"{hostname}.{domain}." if state.get("LoggedIn") else "",
        "OS": "linux",
        "TailscaleIPs": ips,
        "Online": running,
        "Tags": state.get("AdvertiseTags") or None,
    }
    primary = approved_routes(list(state.get("AdvertiseRoutes") or [])) if running else []
    if primary:
        me["PrimaryRoutes"] = primary
    return {
        "Version": VERSION,
        "TUN": True,
        "BackendState": backend_state(state),
        "TailscaleIPs": ips,
        "Self": me,
        "Health": [],
        "MagicDNSSuffix": domain,
        "CurrentTailnet": {"Name": domain, "MagicDNSSuffix": domain, "MagicDNSEnabled": True}
        if state.get("LoggedIn")
        else None,
        "Peer": {},
        "User": {},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _record(argv)
    command = argv[0] if argv else "help"
    rest = argv[1:]
    if command in ("version", "--version"):
        print(f"{VERSION}\n  tailscale commit: standin\n  go version: go1.25.3")
        return 0
    if command not in ("up", "set", "down", "logout", "status", "ip", "debug"):
        return _fail(
            f"tailscale: unknown subcommand: {command}\n"
            "usage: tailscale [up|set|down|logout|status|ip|debug|version]",
            2,
        )
    daemon_state = _daemon_state()
    if daemon_state is None:
        return _fail(NOT_RUNNING)
    if command in ("up", "set", "down", "logout") and os.geteuid() != 0:
        return _fail(
            "Access denied: prefs write access denied\n\nUse 'sudo tailscale " + command + "'."
        )
    state = load_state()
    if command == "up":
        return up(rest)
    if command == "set":
        return set_prefs(rest)
    if command == "debug":
        if rest[:1] != ["prefs"]:
            return _fail("tailscale debug: the stand-in knows only `debug prefs`", 2)
        print(json.dumps(prefs_json(daemon_state), indent="\t"))
        return 0
    if command == "down":
        state["WantRunning"] = False
        save_state(state)
        apply_interface(state)
        return 0
    if command == "logout":
        # Logout deletes the profile (ipn/ipnlocal/local.go): its prefs, routes included, go.
        state = {"LoggedIn": False, "WantRunning": False}
        save_state(state)
        apply_interface(state)
        return 0
    status = status_json(daemon_state)
    if command == "status":
        if "--json" in rest or "-json" in rest:
            print(json.dumps(status, indent=2))
            return 0
        if status["BackendState"] == "NeedsLogin":
            return _fail("Logged out.", 1)
        if status["BackendState"] == "Stopped":
            return _fail("Tailscale is stopped.", 1)
        me = status["Self"]
        print(f"{status['TailscaleIPs'][0]:<15} {me['HostName']:<20} tagged-devices linux   -")
        return 0
    ips = status["TailscaleIPs"]
    if not ips:
        return _fail(f"no current Tailscale IPs; state: {status['BackendState']}")
    if "-6" in rest:
        return _fail("no current Tailscale IPv6 address")
    print(ips[0])
    return 0
