"""``k3sfleet kubeconfig``: merge a server's admin kubeconfig into ~/.kube/config.

Example::

    k3sfleet kubeconfig                         # first server, context "k3sfleet", tailnet IP
    k3sfleet kubeconfig --context prod --magicdns --use
    k3sfleet kubeconfig --server vps-hetzner-1 --kubeconfig ./kubeconfig
"""

from __future__ import annotations

import argparse
from pathlib import Path

from k3sfleet.errors import K3sfleetError
from k3sfleet.kube import hosts_from_inventory
from k3sfleet.kubeconfig import fetch, load, merge, rename, tailnet_address, write


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "kubeconfig", help="merge a server's kubeconfig into ~/.kube/config (mode 0600)"
    )
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    parser.add_argument("--server", default=None, help="server to read from (default: first)")
    parser.add_argument("--context", default="k3sfleet", help="context/cluster/user name")
    parser.add_argument(
        "--kubeconfig", default="~/.kube/config", help="file to merge into (default ~/.kube/config)"
    )
    parser.add_argument(
        "--magicdns",
        action="store_true",
        help="point at <server>.<K3SFLEET_TAILNET_DOMAIN> instead of its tailnet IP",
    )
    parser.add_argument("--use", action="store_true", help="make it the current context")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inventory = Path(args.project_dir) / args.inventory
    servers = [h for h in hosts_from_inventory(inventory) if h.role == "server"]
    if args.server:
        servers = [h for h in servers if h.name == args.server]
    if not servers:
        raise K3sfleetError(f"no server {args.server or ''} in {inventory}".replace("  ", " "))
    server = servers[0]
    if args.magicdns:
        domain = server.data.get("k3sfleet_tailnet_domain")
        if not domain:
            raise K3sfleetError("--magicdns needs K3SFLEET_TAILNET_DOMAIN")
        address: str | None = f"{server.data.get('k3s_node_name') or server.name}.{domain}"
    else:
        address = tailnet_address(server)
    if not address:
        raise K3sfleetError(f"{server.name} has no tailnet address (is tailscale up there?)")
    host_part = f"[{address}]" if ":" in address else address
    doc = rename(fetch(server), args.context, f"https://{host_part}:6443")
    path = Path(args.kubeconfig).expanduser()
    write(path, merge(load(path), doc, args.context, use=args.use))
    print(f"k3sfleet: context {args.context} ({server.name}, https://{host_part}:6443) in {path}")
    return 0
