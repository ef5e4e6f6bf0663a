"""The ``k3sfleet`` command.

Each module in this package that defines ``register(subparsers)`` adds one subcommand
(``lab``, ``vault``, ``kubeconfig``, ``db``, ``backup``, ``dr``, ``etcd``, ``verify`` ...), so a new
command is one new file. A subcommand's handler takes the parsed arguments and returns an exit
code; a ``K3sfleetError`` becomes one message on stderr and its ``exit_code``.

Exit codes (the README's "Exit codes"): 0 done; 1 the operation failed; 2 the command line is
wrong (argparse); 3 bad input found before any host was contacted (settings, inventory, vault);
130 interrupted. The global options are accepted before or after the subcommand
(``k3sfleet vault view --project-dir x``), as ``ansible-vault`` accepts them.

Example::

    k3sfleet --help
    k3sfleet vault view
    python -m k3sfleet check bootstrap
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from k3sfleet import __version__
from k3sfleet.errors import K3sfleetError
from k3sfleet.vault import use_password

GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--project-dir",), {"default": ".",
                          "help": "the project (inventory.py, .envrc, vault): default ."}),
    (("--vault-password-file",), {"default": None,
                                  "help": "Ansible Vault password file (an executable is run)"}),
    (("--ask-vault-pass", "-J"), {"action": "store_true", "default": False,
                                  "help": "ask for the vault password"}),
]
# Commands for developing k3sfleet itself: they work, but stay out of `k3sfleet --help`.
DEVELOPMENT_COMMANDS = ("lab",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="k3sfleet",
        description="K3s on VPSes across clouds, joined over Tailscale.",
        epilog="exit codes: 0 done, 1 failed, 2 usage error, 3 bad input (no host contacted). "
        "For development: k3sfleet lab (real Debian hosts on this machine).",
    )
    parser.add_argument("--version", action="version", version=f"k3sfleet {__version__}")
    for flags, options in GLOBAL_OPTIONS:
        parser.add_argument(*flags, **options)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    sub._choices_actions = [  # noqa: SLF001 - argparse has no public way to hide a command
        a for a in sub._choices_actions if a.dest not in DEVELOPMENT_COMMANDS
    ]
    for command in _subparsers(parser):
        for flags, options in GLOBAL_OPTIONS:
            # SUPPRESS: given after the subcommand, the option overrides; else the global stays
            command.add_argument(*flags, **{**options, "default": argparse.SUPPRESS})
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand parser below ``parser``, nested ones included, each once."""
    found: dict[int, argparse.ArgumentParser] = {}
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in action.choices.values():
                if id(child) not in found:
                    found[id(child)] = child
                    for grandchild in _subparsers(child):
                        found.setdefault(id(grandchild), grandchild)
    return list(found.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.ask_vault_pass:
            use_password(getpass.getpass("Vault password: ").encode())
        return int(args.func(args) or 0)
    except K3sfleetError as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("k3sfleet: interrupted", file=sys.stderr)
        return 130
    finally:
        use_password(None)


if __name__ == "__main__":
    sys.exit(main())
