"""``k3sfleet config``: show the settings in force and where each came from (secrets masked)."""

from __future__ import annotations

import argparse

from k3sfleet.settings import Settings, setting_fields


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("config", help="show the settings in force and their sources")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.load(args.project_dir, vault_password_file=args.vault_password_file)
    for f in setting_fields():
        value = getattr(settings, f.name)
        source = settings.sources.get(f.name, "default")
        print(f"{f.name.upper():34} {str(value) if value is not None else '':30} ({source})")
    return 0
