"""``k3sfleet tailnet-policy``: the tailnet policy stanza the pod network needs (JSON).

Merge it into the tailnet policy file (admin console, Access controls) before the first
``deploys/cluster.py``: without it the nodes' pod routes stay unapproved and pods on different
nodes cannot reach each other.

Example::

    k3sfleet tailnet-policy
    {
      "autoApprovers": {
        "routes": {
          "10.42.0.0/16": ["tag:k3s"]
        }
      }
    }
"""

from __future__ import annotations

import argparse
import json

from k3sfleet.settings import Settings
from k3sfleet.tailnet import policy


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "tailnet-policy", help="print the tailnet policy stanza that approves the pod routes"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.load(args.project_dir, vault_password_file=args.vault_password_file)
    print(json.dumps(policy(settings.tailscale_tags), indent=2))
    return 0
