"""A one-operation deploy for the lab test: reboot the host and wait for it (pyinfra checks
/proc/uptime, which the lab makes each host's own through lxcfs)."""

from pyinfra.operations import server

server.reboot(name="Reboot the lab host", delay=5, interval=1, reboot_timeout=120, _sudo=True)
