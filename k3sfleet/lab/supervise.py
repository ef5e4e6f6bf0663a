"""Keep one lab host running: restart systemd-nspawn when the host reboots (exit code 133).

Run detached by the lab (``python3 -m k3sfleet.lab.supervise PIDFILE -- systemd-nspawn ...``),
so hosts outlive the ``k3sfleet lab up`` process. SIGTERM is passed on to nspawn, which powers
the host off cleanly; the supervisor then exits. ``PIDFILE`` always holds nspawn's current PID.

Example::

    python3 -m k3sfleet.lab.supervise /var/lib/k3sfleet-lab/lab1/hosts/lab-server-1/nspawn.pid \\
        k3fl1-lab-server-1 -- systemd-nspawn -b -D .../root ...

nspawn starts in its own cgroup (``k3sfleet-lab/<CGROUP>``): with ``--keep-unit`` on a machine
without systemd it uses the cgroup it was started in, and hosts sharing one fail units with
status 219/CGROUP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

REBOOT_EXIT = 133
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Hierarchies systemd-nspawn places the container in (hybrid: name=systemd v1 + unified v2;
# pure v2: the root). Each host needs its own subtree, else containers share `payload/`.
CGROUP_HIERARCHIES = ("systemd", "unified", "")


def cgroup_dirs(name: str) -> list[Path]:
    """The per-host cgroup directories ``name`` would use on this machine."""
    out = []
    for sub in CGROUP_HIERARCHIES:
        base = CGROUP_ROOT / sub if sub else CGROUP_ROOT
        if (base / "cgroup.procs").exists():
            out.append(base / "k3sfleet-lab" / name)
            if sub == "":
                break
    return out


def enter_cgroup(name: str) -> None:
    """Move this process into the cgroup ``k3sfleet-lab/<name>`` of every hierarchy."""
    for path in cgroup_dirs(name):
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").write_text(f"{os.getpid()}\n")


def remove_cgroup(name: str) -> None:
    """Remove ``k3sfleet-lab/<name>`` (bottom-up; it must hold no process any more)."""
    for path in cgroup_dirs(name):
        if not path.exists():
            continue
        for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            path.rmdir()
        except OSError:
            pass


def supervise(pidfile: Path, argv: list[str], cgroup: str | None = None) -> int:
    """Run ``argv`` until it exits with something other than ``REBOOT_EXIT`` or we are told.

    With ``cgroup``, each run of ``argv`` starts in ``k3sfleet-lab/<cgroup>`` (the supervisor
    itself stays where it is, so that cgroup holds only the container: cgroup v2's
    no-internal-processes rule holds on machines with a pure v2 hierarchy).
    """
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rc = 0
    while not stopping:
        child = subprocess.Popen(  # noqa: S603
            argv, stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: enter_cgroup(cgroup)) if cgroup else None,  # noqa: PLW1509
        )
        pidfile.write_text(f"{child.pid}\n")
        rc = child.wait()
        print(f"k3sfleet-lab: nspawn exited {rc} at {time.strftime('%H:%M:%S')}", flush=True)
        if rc != REBOOT_EXIT:
            break
    pidfile.unlink(missing_ok=True)
    return rc


def main() -> int:
    args = sys.argv[1:]
    if len(args) < 4 or args[2] != "--":
        print("usage: python3 -m k3sfleet.lab.supervise PIDFILE CGROUP -- COMMAND...",
              file=sys.stderr)
        return 2
    os.environ["SYSTEMD_NSPAWN_API_VFS_WRITABLE"] = "network"
    return supervise(Path(args[0]), args[3:], cgroup=args[1])


if __name__ == "__main__":
    sys.exit(main())
