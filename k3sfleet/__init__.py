"""k3sfleet: K3s on VPSes across clouds, joined over Tailscale, managed with pyinfra."""

__version__ = "0.1.0"
