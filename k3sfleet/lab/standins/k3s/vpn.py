"""k3s's Tailscale integration (``vpn-auth`` / ``vpn-auth-file``), as far as the lab needs it.

Real k3s parses ``name=tailscale,joinKey=KEY[,controlServerURL=URL][,extraArgs=ARGS]`` (ARGS
space-separated, last), accepts only the ``tailscale`` provider, runs ``tailscale up`` when
Tailscale is not up yet, and then uses the Tailscale IPv4 as the node IP, overriding a
configured ``node-ip`` (k3s v1.34.2+k3s1 ``pkg/vpn/vpn.go``, ``pkg/executor/embed/embed.go``).
The stand-in refuses to start unless ``tailscale status --json`` then reports BackendState
Running. The join key is never logged.

Example::

    settings = vpn_settings({"vpn-auth-file": "/etc/rancher/k3s/vpn-auth"})
    node_ip = require_tailscale_up(settings)          # "100.64.1.11"
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from . import log


def parse_vpn_auth(text: str) -> dict[str, Any]:
    """``name=tailscale,joinKey=K,extraArgs=--a=b --c=d,e`` as k3s v1.34.2+k3s1 reads it
    (``pkg/vpn/vpn.go`` ``getVPNAuthInfo`` / ``processCLIArgs``): the part after
    ``,extraArgs=`` is split at whitespace (``strings.Fields``; commas stay inside an arg), the
    rest at ``,`` into ``key=value`` pairs; an unknown key is an error. ``extraArgs`` is a list.
    """
    command, sep, extra = text.strip().partition(",extraArgs=")
    settings: dict[str, Any] = {"extraArgs": extra.split() if sep else []}
    for item in command.split(","):
        key, _, value = item.partition("=")
        if key not in ("name", "joinKey", "controlServerURL"):
            log.fatal(
                "VPN Error. The passed VPN auth info includes an unknown parameter: " + key
            )
        settings[key] = value
    return settings


def vpn_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """The vpn-auth settings from the config (or the file it names), or None when not set."""
    if config.get("vpn-auth-file"):
        path = Path(str(config["vpn-auth-file"]))
        try:
            text = path.read_text()
        except OSError as error:
            log.fatal(f"vpn-auth-file: cannot read {path}: {error.strerror}")
    elif config.get("vpn-auth"):
        text = str(config["vpn-auth"])
    else:
        return None
    settings = parse_vpn_auth(text)
    # pkg/vpn/vpn.go isVPNConfigOK
    if settings.get("name") != "tailscale":
        log.fatal(f"Requested VPN: {settings.get('name', '')} is not supported. "
                  "We currently only support tailscale")
    if not settings.get("joinKey"):
        log.fatal("VPN Error. Tailscale requires a JoinKey")
    return settings


def tailscale_status() -> dict[str, Any]:
    """``tailscale status --json`` (pkg/vpn/vpn.go getTailscaleInfo; its failure messages)."""
    try:
        out = subprocess.run(
            ["tailscale", "status", "--json"], capture_output=True, text=True, timeout=15
        )
    except FileNotFoundError:
        log.fatal('failed to run tailscale status --json: exec: "tailscale": executable file '
                  "not found in $PATH")
    except subprocess.TimeoutExpired:
        log.fatal("failed to run tailscale status --json: timed out")
    try:
        status: dict[str, Any] = json.loads(out.stdout or "{}")
    except json.JSONDecodeError:
        status = {}
    return status


def _ipv4(status: dict[str, Any]) -> str | None:
    """The first IPv4 of the status's top-level ``TailscaleIPs`` (vpn.go ``TailscaleOutput``,
    ``util.GetFirst4String``)."""
    ips = [ip for ip in status.get("TailscaleIPs") or [] if ":" not in ip]
    return str(ips[0]) if ips else None


def require_tailscale_up(settings: dict[str, Any]) -> str:
    """Bring Tailscale up like k3s does, unless it already is; return the Tailscale IPv4.

    Real k3s runs ``tailscale up --authkey <joinKey> --timeout=30s --reset [--login-server URL]
    [extraArgs]`` only when Tailscale is not up yet (so the key is on that command line, as with
    the real k3s), and fails when that does not bring it up.
    """
    status = tailscale_status()
    if status.get("BackendState") != "Running":
        log.info("Starting VPN: tailscale")  # vpn.go StartVPN
        args = ["tailscale", "up", "--authkey", settings["joinKey"], "--timeout=30s", "--reset"]
        if settings.get("controlServerURL"):
            args += ["--login-server", settings["controlServerURL"]]
        args += settings["extraArgs"]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            log.fatal(f"tailscale up failed: : {error}")
        output = (done.stdout + done.stderr).replace(settings["joinKey"], "<joinKey>").strip()
        if done.returncode != 0:  # vpn.go: errors.Wrap(err, "tailscale up failed: "+output)
            log.fatal(f"tailscale up failed: {output}: exit status {done.returncode}")
        status = tailscale_status()
    # the stand-in's own checks (real k3s goes on and fails later without an address)
    state = status.get("BackendState", "Unknown")
    if state != "Running":
        log.fatal(f"vpn-auth: tailscale is not up on this host (BackendState={state})")
    address = _ipv4(status)
    if not address:
        log.fatal("vpn-auth: tailscale is up but has no IPv4 address")
    log.info(f"Tailscale is up, using VPN IP {address} as the node IP")  # (stand-in's line)
    return address


def with_vpn_node_ip(config: dict[str, Any], vpn_ip: str) -> dict[str, Any]:
    """``config`` with the node IP the VPN gives: k3s overrides a configured ``node-ip`` (and
    says so) but keeps ``node-external-ip`` (only a warning), k3s v1.34.2+k3s1
    ``pkg/executor/embed/embed.go`` ``Bootstrap``."""
    log.info(f"Node-ip changed to [{vpn_ip}] due to VPN")
    if config.get("node-ip"):  # any configured node-ip, as embed.go's len(NodeIP) != 0
        log.warning("VPN provider overrides configured node-ip parameter")
    if config.get("node-external-ip"):
        log.warning("VPN provider overrides node-external-ip parameter")
    return {**config, "node-ip": vpn_ip}
