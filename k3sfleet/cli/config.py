"""``k3sfleet config``: show the settings in force and where each came from (secrets masked).

``k3sfleet config --readme-table`` prints the README's settings table rows from the code, then
its deploy data table from the deploys' ``DEFAULTS`` blocks.

Example::

    k3sfleet config
    vault file                         vault.yml (read)
    K3S_VERSION                        v1.34.2+k3s1                   (default)
    TAILSCALE_AUTH_KEY                 *MASKED*                       (vault)
"""

from __future__ import annotations

import argparse

from k3sfleet.project import ENTRY_DIR
from k3sfleet.settings import Settings, deploy_data_rows, readme_rows, setting_fields


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("config", help="show the settings in force and their sources")
    parser.add_argument(  # for development: the README's table is generated from the code
        "--readme-table", action="store_true", help=argparse.SUPPRESS
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.readme_table:
        print("| Setting | Meaning | Default | Secret |\n|---|---|---|---|")
        print("\n".join(readme_rows()))
        print("\n| deploy | key | default | meaning |\n|---|---|---|---|")
        print("\n".join(deploy_data_rows(ENTRY_DIR)))
        return 0
    settings = Settings.load(args.project_dir, vault_password_file=args.vault_password_file)
    vault = settings.vault_path
    if vault is not None and vault.exists():
        print(f"{'vault file':34} {vault} (read)")
    else:
        print(f"{'vault file':34} none ({vault or 'vault.yml'} does not exist)")
    for f in setting_fields():
        value = getattr(settings, f.name)
        source = settings.sources.get(f.name, "default")
        print(f"{f.name.upper():34} {str(value) if value is not None else '':30} ({source})")
    return 0
