"""The lab's hosts: SSH with strict host keys, systemd running, two networks, reboots, teardown.

These boot real Debian hosts (systemd-nspawn); they are skipped with one reason where the lab
cannot run. Each test that changes a host's state uses its own lab from ``lab_factory``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from k3sfleet.lab import Lab, network
from k3sfleet.lab import hosts as hostproc
from k3sfleet.lab.standins import LAB_K3S_VERSIONS

pytestmark = pytest.mark.lab

PROJECT = Path(__file__).resolve().parents[2]


def test_hosts_answer_ssh_with_strict_host_key_checking(lab: Lab) -> None:
    for host in lab.hosts:
        rc, out, _ = lab.ssh(host, "hostname; id -un; sudo -n id -u")
        assert rc == 0
        assert out.split() == [host.name, "k3sfleet", "0"]
    # a key that is not the host's is refused: strict checking is really on
    wrong = lab.known_hosts.parent / "known_hosts.wrong"
    other = lab.hosts[1]
    lines = lab.known_hosts.read_text().splitlines()
    first_key = lines[0].split(" ", 1)[1]
    wrong.write_text(f"{lab.hosts[1].public_ip} {first_key}\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(wrong))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(other.public_ip, username=other.user, key_filename=str(lab.ssh_key),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()
    # and a host missing from known_hosts is refused, not added
    wrong.write_text("")
    client = paramiko.SSHClient()
    client.load_host_keys(str(wrong))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(other.public_ip, username=other.user, key_filename=str(lab.ssh_key),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


def test_each_host_has_its_own_identity(lab: Lab) -> None:
    seen: dict[str, set[str]] = {"machine-id": set(), "hostkey": set()}
    for host in lab.hosts:
        rc, out, _ = lab.ssh(host, "cat /etc/machine-id /var/lib/dbus/machine-id; "
                                   "cat /etc/ssh/ssh_host_ed25519_key.pub; "
                                   "cat /etc/tailscale/syspolicy.json")
        assert rc == 0
        mid, dbus_mid, hostkey, *rest = out.splitlines()
        assert mid == dbus_mid and len(mid) == 32
        seen["machine-id"].add(mid)
        seen["hostkey"].add(hostkey.split()[1])
        # tailscaled's system policy points it at the lab's control server
        assert json.loads("\n".join(rest)) == {"LoginURL": lab.control_url}
    assert len(seen["machine-id"]) == len(lab.hosts)
    assert len(seen["hostkey"]) == len(lab.hosts)


def test_systemd_is_running(lab: Lab) -> None:
    for host in lab.hosts:
        assert lab.wait_running(host) == "running", lab.ssh(host, "systemctl --failed")[1]
        rc, out, _ = lab.ssh(host, "ps -p 1 -o comm=")
        assert out.strip() == "systemd"


def test_hosts_reach_only_the_lab(lab: Lab) -> None:
    host = lab.hosts[0]
    rc, out, _ = lab.ssh(host, "ip -4 route; cat /etc/resolv.conf")
    assert "default" not in out
    assert not [line for line in out.splitlines() if line.startswith("nameserver")]
    # offline apt from the lab's own repository works (signature checks untouched elsewhere)
    rc, out, err = lab.ssh(host, "sudo apt-get update 2>&1 && apt-cache policy jq", timeout=120)
    assert rc == 0, out + err
    assert f"{lab.net.gateway}:{lab.artifact_port}/debian" in out
    # where the machine forwards IP, its forward hook still drops what would leave the bridge
    table = subprocess.run(["nft", "list", "table", "inet", network.guard_table(lab.net)],
                           capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    bridge = lab.net.public_bridge
    assert f'iifname "{bridge}" oifname != "{bridge}" drop' in table.stdout, table.stdout
    assert f'oifname "{bridge}" iifname != "{bridge}" drop' in table.stdout, table.stdout
    assert table.stdout.count(" drop") == 2


def test_reboot_completes_and_pyinfra_sees_it(lab_factory, run_pyinfra, pyinfra_counts) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(1, 0)
    host = lab.hosts[0]
    rc, before, _ = lab.ssh(host, "cat /proc/uptime")
    # the host's own uptime (lxcfs), not the machine's
    machine_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert float(before.split()[0]) < machine_uptime
    time.sleep(2)
    deploy = PROJECT / "tests/lab/reboot_deploy.py"
    proc = run_pyinfra(lab, str(deploy), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    counts = pyinfra_counts(proc.stdout)
    assert counts["error"] == 0 and counts["success"] >= 1
    rc, after, _ = lab.ssh(host, "cat /proc/uptime; systemctl is-system-running --wait")
    uptime, state = float(after.split()[0]), after.split()[-1]
    assert uptime < 30, f"uptime {uptime}: the host did not reboot"
    assert state == "running"


def test_add_host_time_is_measured(lab_factory, lab_timing) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(1, 0)
    start = time.monotonic()
    host = lab.add_host("agent")
    took = time.monotonic() - start
    lab_timing(f"{lab.name}: one more host ({host.name}) in {took:.1f} s (target <= 3 s)")
    assert host.name == "lab-agent-1"
    assert lab.ssh(host, "hostname")[1].strip() == host.name
    assert f"{host.public_ip} " in lab.known_hosts.read_text().replace(",", " ")


def test_lab_down_leaves_nothing_behind(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(1, 1)
    lab.reboot(lab.hosts[1])  # a rebooted host's processes must go too
    pids = [h.supervisor_pid for h in lab.hosts]
    assert all(pids)
    before = lab.leftovers()
    assert before["processes"] and before["mounts"] and before["netns"] and before["links"]
    assert before["cgroups"] and before["nftables"] and before["routes"]
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "import sys; from k3sfleet.cli import main; sys.exit(main())",
         "lab", "down", lab.name],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    left = lab.leftovers()
    assert left == {"processes": [], "cgroups": [], "mounts": [], "netns": [], "links": [],
                    "nftables": [], "routes": []}
    assert not [pid for pid in pids if hostproc.alive(pid, "k3sfleet.lab.supervise")]
    net = lab.net
    assert not network.link_exists(net.public_bridge)
    assert not network.tailnet_blocked(net)
    assert not lab.directory.exists()
    assert lab.name not in Lab.running(lab.directory.parent)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-c", "import sys; from k3sfleet.cli import main; sys.exit(main())",
         *args], cwd=PROJECT, capture_output=True, text=True, timeout=timeout,
    )


def test_cli_drives_a_lab_from_separate_processes(tmp_path: Path) -> None:
    name = f"clitest{os.getpid()}"
    up = _cli("lab", "up", "--servers", "1", "--agents", "0", "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        assert "lab-server-1" in up.stdout
        status = _cli("lab", "status")
        assert status.returncode == 0
        line = next(ln for ln in status.stdout.splitlines()
                    if "lab-server-1" in ln and name in status.stdout)
        assert " up " in line
        inventory = tmp_path / "inv.py"
        written = _cli("lab", "inventory", name, "-o", str(inventory))
        assert written.returncode == 0, written.stderr
        assert oct(inventory.stat().st_mode & 0o777) == "0o600"
        proc = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "pyinfra", "-y", str(inventory), "exec", "--", "hostname"],
            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert "[lab-server-1] lab-server-1" in " ".join(proc.stdout.split())
    finally:
        down = _cli("lab", "down", name)
    assert down.returncode == 0, down.stderr
    assert f"lab {name}: down" in down.stdout
    assert name not in _cli("lab", "status").stdout


def test_a_failed_create_cleans_up_and_keeps_the_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ssh(address: str, port: int = 22, timeout: float = 60) -> float:
        raise hostproc.HostError(f"no SSH on {address}:{port} (test)")

    monkeypatch.setattr(hostproc, "wait_ssh", no_ssh)
    made: list[Lab] = []
    real_boot = Lab._boot

    def boot(self: Lab, *args: object) -> None:
        made.append(self)
        real_boot(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Lab, "_boot", boot)
    with pytest.raises(hostproc.HostError) as failed:
        Lab.create(1, 1)
    lab = made[0]
    notes = " ".join(getattr(failed.value, "__notes__", []))
    assert "logs are kept in" in notes
    kept = Path(notes.rsplit(" ", 1)[1])
    try:
        assert (kept / "lab-server-1-console.log").exists()
        assert lab.leftovers() == {"processes": [], "cgroups": [], "mounts": [], "netns": [],
                                   "links": [], "nftables": [], "routes": []}
        assert not lab.directory.exists()
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def test_demo_runs_the_main_job() -> None:
    """`k3sfleet lab demo`: 1 server + 2 agents, bootstrap then cluster through the pyinfra CLI,
    then the Nodes read through the Kubernetes API."""
    demo = _cli("lab", "demo", timeout=1200)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "demo: pyinfra" in demo.stdout and "deploys/bootstrap.py" in demo.stdout
    assert "deploys/cluster.py" in demo.stdout
    assert "demo: 3 Node(s) through the API of lab-server-1" in demo.stdout
    nodes = [ln.split() for ln in demo.stdout.splitlines() if "Ready=" in ln]
    assert sorted(n[0] for n in nodes) == ["lab-agent-1", "lab-agent-2", "lab-server-1"]
    assert all(n[1] == "Ready=True" for n in nodes), nodes
    assert all(n[-1] == LAB_K3S_VERSIONS[-1] for n in nodes), nodes  # the lab's k3s_version
