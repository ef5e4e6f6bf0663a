"""Lab hosts as processes: overlay mounts, lxcfs, and one supervised systemd-nspawn per host.

Each host boots Debian with systemd as PID 1 (``systemd-nspawn -b``) in its own network
namespace. A detached supervisor (``k3sfleet.lab.supervise``) restarts nspawn when the host
reboots (exit 133). The lab runs its own lxcfs (own mountpoint, own PID) so that each host's
/proc/uptime is its own and pyinfra's ``server.reboot`` sees a reboot.

Example::

    mount_overlay(lower, hdir)
    pid = start_host(hdir, "lab-server-1", "k3fl1-lab-server-1", lab_dir / "lxcfs")
    wait_ssh("10.123.1.11")
    stop_host(pid, hdir)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from k3sfleet.errors import K3sfleetError


class HostError(K3sfleetError):
    """A host or a lab helper process did not start or stop as it should."""


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# PF_KTHREAD in the flags field of /proc/<pid>/stat (Linux include/linux/sched.h).
_PF_KTHREAD = 0x00200000


def _stat(pid: int) -> tuple[str, int]:
    """The state letter and flags of ``pid`` (``/proc/<pid>/stat``); ``("", 0)`` if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[6])
    except (OSError, IndexError, ValueError):
        return "", 0


# How long a live process may show an empty command line while it is in execve(2).
EXEC_GRACE_SECONDS = 0.5


def alive(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``marker`` (guards PID reuse).

    A process in the middle of execve(2) has an empty ``/proc/<pid>/cmdline``: the new image's
    memory is installed before its arguments are (Linux fs/proc/base.c ``get_mm_cmdline``
    returns nothing while ``mm->arg_end`` is 0; fs/binfmt_elf.c sets it in
    ``create_elf_tables``, after ``begin_new_exec``). ``ip netns exec tailscaled ...`` is such
    a process right after it starts, so an empty command line on a process that is not a
    zombie is read again for up to EXEC_GRACE_SECONDS before the answer is "not alive".

    Example::

        alive(lab.control_pid, str(lab.control_config))  # is tscontrol still running?
    """
    if not pid:
        return False
    deadline = time.monotonic() + EXEC_GRACE_SECONDS
    while True:
        state, flags = _stat(pid)
        if state in ("", "Z", "X") or flags & _PF_KTHREAD:
            return False
        cmd = _cmdline(pid)
        if cmd:
            return marker in cmd
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def processes(marker: str) -> dict[int, str]:
    """Every running process whose command line contains ``marker``, by PID, with that command
    line; one caught in execve(2) is waited for as :func:`alive` does.

    Example::

        processes(f"{lab.directory}/")  # {4242: "/var/lib/k3sfleet-lab/lab1/bin/tscontrol ..."}
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            pid = int(entry.name)
            if alive(pid, marker):
                found[pid] = _cmdline(pid)
    return found


def wait_gone(pid: int, marker: str, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to end (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not alive(pid, marker):
            return True
        time.sleep(0.1)
    return False


_SPAWN = (
    "import subprocess, sys\n"
    "with open(sys.argv[1], 'ab') as out:\n"
    "    p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=out,"
    " stderr=subprocess.STDOUT, start_new_session=True)\n"
    "print(p.pid)\n"
)


def detached(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` fully detached (own session, not our child, so whoever runs
    ``lab down`` can stop it and nobody is left with a zombie); output appended to ``log``.
    Returns its PID once it has been exec'd."""
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _SPAWN, str(log), *argv],
        env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise HostError(f"could not start {argv[0]}: {done.stderr.strip()[-500:]}")
    return int(done.stdout)


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mountpoint (per /proc/self/mountinfo, FUSE included)."""
    target = str(path)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == target for line in info)


def mounts_under(path: Path) -> list[str]:
    """Every mountpoint at or below ``path``."""
    top = str(path)
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4] for line in info]
    return [p for p in points if p == top or p.startswith(top + "/")]


def umount(path: Path) -> None:
    """Unmount ``path`` (lazily if it is busy)."""
    if not is_mounted(path):
        return
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)  # noqa: S603


# Every host's systemd takes inotify instances from root's per-user budget (no user
# namespaces); the kernel default of 128 runs out at a dozen hosts ("Failed to allocate
# manager object: Too many open files"). The values LXD and kind document for many containers.
INOTIFY_LIMITS = {
    "/proc/sys/fs/inotify/max_user_instances": 8192,
    "/proc/sys/fs/inotify/max_user_watches": 1048576,
}


def raise_inotify_limits() -> list[str]:
    """Raise the machine's inotify limits to ``INOTIFY_LIMITS`` where they are lower (never
    lowers them); return what was changed, as ``"path: old -> new"``."""
    changed = []
    for path, wanted in INOTIFY_LIMITS.items():
        current = int(Path(path).read_text())
        if current < wanted:
            Path(path).write_text(f"{wanted}\n")
            changed.append(f"{path}: {current} -> {wanted}")
    return changed


# How long a detached helper (lxcfs, the artifact server, tscontrol) may take to come up: a cold
# start takes seconds on a loaded 2-core machine (10 s ran out in full test runs).
START_TIMEOUT = 30.0


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n  ".join(tail)


def wait_started(pid: int, marker: str, ready: Callable[[], bool], log: Path, what: str,
                 timeout: float = START_TIMEOUT) -> None:
    """Wait until ``ready()`` says the detached process ``pid`` (started by :func:`detached`
    with ``marker`` in its command line) is up. Raises HostError naming ``what``, whether it
    exited or is still starting after ``timeout`` s, and the last lines of its ``log``.

    Example::

        pid = detached([tscontrol, "-ready", str(ready)], log)
        wait_started(pid, str(ready), ready.exists, log, "tscontrol")
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive(pid, marker):
            why = f"{what} exited"
        elif time.monotonic() > deadline:
            why = f"{what} was not up after {timeout:g} s"
        else:
            time.sleep(0.05)
            continue
        tail = _log_tail(log)
        raise HostError(f"{why}; see {log}" + (f":\n  {tail}" if tail else " (empty)"))


def start_lxcfs(mountpoint: Path, log: Path) -> int:
    """Start the lab's own lxcfs on ``mountpoint``; return its PID once it is mounted."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    pid = detached(
        ["lxcfs", "-f", "-p", str(mountpoint.parent / "lxcfs.pid"), str(mountpoint)], log
    )
    wait_started(pid, str(mountpoint), (mountpoint / "proc/uptime").exists, log,
                 f"lxcfs on {mountpoint}")
    return pid


def stop_lxcfs(pid: int | None, mountpoint: Path) -> None:
    """Stop the lab's lxcfs and remove its mount."""
    marker = str(mountpoint)
    if pid and alive(pid, marker):
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, marker, 5):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, marker, 5)
    umount(mountpoint)  # as root, umount takes a FUSE mount too (no fusermount needed)


def mount_overlay(lower: Path, hdir: Path) -> Path:
    """Mount ``hdir/root`` as an overlay of ``lower`` with ``hdir/upper`` (kept across reboots)."""
    for sub in ("upper", "work", "root"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    root = hdir / "root"
    if not is_mounted(root):
        opts = f"lowerdir={lower},upperdir={hdir / 'upper'},workdir={hdir / 'work'}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(root)],  # noqa: S603
                       check=True, capture_output=True)
    return root


def nspawn_argv(
    root: Path, name: str, netns: str, lxcfs: Path, binds: Sequence[tuple[Path, str]] = ()
) -> list[str]:
    """The systemd-nspawn command line of one host (flags from docs/lab-contract.md).

    The machine name is the namespace name (``k3fl<I>-<host>``), unique on the machine: nspawn
    keys /run/systemd/nspawn/propagate/<machine> by it, and hosts of parallel labs share host
    names. The host's own hostname comes from its /etc/hostname. ``binds`` are (directory on
    the machine, path in the host) pairs bound read-only (the lab's built Go programs).
    """
    return [
        "systemd-nspawn", "--boot", f"--directory={root}", f"--machine={netns}",
        "--register=no", "--keep-unit", f"--network-namespace-path=/run/netns/{netns}",
        "--capability=CAP_NET_ADMIN", f"--bind-ro={lxcfs}:/run/lxcfs",
        *(f"--bind-ro={source}:{target}" for source, target in binds),
        "--console=read-only", "--resolv-conf=off", "--timezone=off", "--link-journal=no",
    ]


def start_host(
    hdir: Path, name: str, netns: str, lxcfs: Path, binds: Sequence[tuple[Path, str]] = ()
) -> int:
    """Boot the host in ``hdir`` under a detached supervisor; return the supervisor's PID."""
    env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="network")
    argv = [sys.executable, "-m", "k3sfleet.lab.supervise", str(hdir / "nspawn.pid"), netns, "--",
            *nspawn_argv(hdir / "root", name, netns, lxcfs, binds)]
    return detached(argv, hdir / "console.log", env)


def nspawn_pid(hdir: Path) -> int | None:
    try:
        return int((hdir / "nspawn.pid").read_text())
    except (OSError, ValueError):
        return None


def stop_host(supervisor: int | None, hdir: Path, timeout: float = 30) -> None:
    """Power the host off (SIGTERM to its supervisor -> nspawn), killing it after ``timeout``."""
    marker = str(hdir / "nspawn.pid")
    if supervisor and alive(supervisor, marker):
        os.kill(supervisor, signal.SIGTERM)
        if wait_gone(supervisor, marker, timeout):
            return
    child = nspawn_pid(hdir)
    for pid, mark in ((supervisor, marker), (child, str(hdir / "root"))):
        if pid and alive(pid, mark):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, mark, 10)


def wait_ssh(address: str, port: int = 22, timeout: float = 60) -> float:
    """Wait until sshd at ``address`` sends its banner; return the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1) as conn:
                conn.settimeout(2)
                if conn.recv(4).startswith(b"SSH-"):
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise HostError(f"no SSH on {address}:{port} after {timeout:.0f} s")
