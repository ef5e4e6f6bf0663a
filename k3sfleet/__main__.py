"""``python -m k3sfleet``: the ``k3sfleet`` command."""

import sys

from k3sfleet.cli import main

if __name__ == "__main__":
    sys.exit(main())
