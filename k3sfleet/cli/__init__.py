"""The ``k3sfleet`` command.

Each module in this package that defines ``register(subparsers)`` adds one subcommand
(``lab``, ``vault``, ``kubeconfig``, ``db``, ``backup``, ``dr``, ``etcd``, ``verify`` ...), so a new
command is one new file. A subcommand's handler takes the parsed arguments and returns an exit
code; a ``K3sfleetError`` becomes one message on stderr and exit code 2.

Example::

    k3sfleet --help
    k3sfleet vault view
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from k3sfleet import __version__
from k3sfleet.errors import K3sfleetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="k3sfleet", description="K3s on VPSes across clouds, joined over Tailscale."
    )
    parser.add_argument("--version", action="version", version=f"k3sfleet {__version__}")
    parser.add_argument(
        "--project-dir", default=".", help="the project (inventory.py, .envrc, vault): default ."
    )
    parser.add_argument(
        "--vault-password-file", default=None, help="Ansible Vault password file (or script)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except K3sfleetError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("k3sfleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
