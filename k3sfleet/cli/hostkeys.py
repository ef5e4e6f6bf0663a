"""``k3sfleet hostkeys [NODE ...]``: first contact with fresh servers (see ``k3sfleet.hostkeys``).

For each node of the inventory (at the address k3sfleet connects to: the public one unless
``K3SFLEET_CONNECT=tailnet``), fetch its SSH host keys, print their fingerprints as
``ssh-keygen -lf`` does, and, once confirmed (``--yes`` confirms all), record them in the
known_hosts file k3sfleet uses (``K3SFLEET_KNOWN_HOSTS``). Nodes already recorded are left
alone; a changed key is refused.

Example::

    k3sfleet hostkeys                 # compare with each provider's console, answer yes
    k3sfleet hostkeys vps-aws-1 --yes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from k3sfleet.errors import ConfigError
from k3sfleet.hostkeys import HostKeyError, fingerprint, known_hosts_file, record, scan_host
from k3sfleet.kube import hosts_from_inventory


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "hostkeys", help="first contact: fetch, show and record the nodes' SSH host keys"
    )
    parser.add_argument("--inventory", default="inventory.py", help="pyinfra inventory file")
    parser.add_argument("--yes", action="store_true", help="record without asking")
    parser.add_argument("nodes", nargs="*", help="only these nodes (default: all)")
    parser.set_defaults(func=run)


def _confirm(question: str) -> bool:
    while True:
        answer = input(f"{question} (yes/no) ").strip().lower()
        if answer in ("yes", "no"):
            return answer == "yes"
        print("Please type 'yes' or 'no'.", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    hosts = hosts_from_inventory(Path(args.project_dir) / args.inventory)
    unknown = sorted(set(args.nodes) - {h.name for h in hosts})
    if unknown:
        raise ConfigError([f"node {name} is not in {args.inventory}" for name in unknown])
    if not args.yes and not sys.stdin.isatty():
        raise ConfigError("k3sfleet hostkeys asks before recording: answer on a terminal, or "
                          "give --yes once you compared the fingerprints another way")
    chosen = [h for h in hosts if not args.nodes or h.name in args.nodes]
    failed = 0
    for host in chosen:
        try:
            scan = scan_host(host)
        except HostKeyError as e:
            print(f"k3sfleet: {e}", file=sys.stderr)
            failed += 1
            continue
        if not scan.new:
            print(f"{host.name}: {scan.entry} already recorded in {known_hosts_file(host)}")
            continue
        print(f"{host.name} ({scan.entry}) offers these host keys:")
        for key in scan.keys:
            print(f"  {fingerprint(key, host.name)}")
        if scan.changed:
            record([scan])  # raises, naming the file and the fix
        if args.yes or _confirm(f"Do these match {host.name}'s console? Record them"):
            for line in record([scan]):
                print(f"  recorded in {known_hosts_file(host)}: {line.split()[1]}")
        else:
            print(f"  {host.name}: not recorded")
    return 1 if failed else 0
