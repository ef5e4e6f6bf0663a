"""SSH hardening from deploys/common.py is in effect (read from `sshd -T`, the effective config)."""

from __future__ import annotations

from typing import Any


def sshd_effective(host: Any) -> dict[str, str]:
    out = host.run("sshd -T")
    assert out.rc == 0, f"`sshd -T` failed on the host: {out.stderr.strip()}"
    pairs = (line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
    return {p[0].lower(): (p[1] if len(p) > 1 else "") for p in pairs}


def test_password_login_disabled(node: Any, host: Any) -> None:
    cfg = sshd_effective(host)
    assert cfg.get("passwordauthentication") == "no", (
        f"{node.name}: sshd accepts passwords (PasswordAuthentication "
        f"{cfg.get('passwordauthentication')}); re-run deploys/bootstrap.py"
    )
    assert cfg.get("kbdinteractiveauthentication") == "no", (
        f"{node.name}: keyboard-interactive login is on; re-run deploys/bootstrap.py"
    )


def test_root_login_policy(node: Any, host: Any) -> None:
    want = node.data.get("common_ssh_permit_root_login") or "no"
    got = sshd_effective(host).get("permitrootlogin")
    assert got == want, f"{node.name}: PermitRootLogin is {got}, the settings say {want}"


def test_tcp_forwarding_kept_for_k3sfleet(node: Any, host: Any) -> None:
    got = sshd_effective(host).get("allowtcpforwarding")
    assert got in ("yes", "local", "all"), (
        f"{node.name}: AllowTcpForwarding is {got}; k3sfleet's API tunnel needs local forwarding"
    )
