"""The stand-in Tailscale: ``tailscaled`` (daemon.py) and the ``tailscale`` CLI (cli.py).

Both are installed by the stand-in ``tailscale`` .deb (built by k3sfleet.lab.artifacts) as
/usr/sbin/tailscaled and /usr/bin/tailscale, and use only Debian's python3 standard library.
Shared state lives where the real one does: /var/lib/tailscale/tailscaled.state (0600).
"""
