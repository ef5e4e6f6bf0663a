"""The lab's artifact server: plain HTTP on the public bridge address, serving one directory.

Run detached by the lab (``python3 -m k3sfleet.lab.serve DIR ADDRESS PORTFILE``): it binds a
free port on ``ADDRESS`` and writes it to ``PORTFILE``, so the hosts reach
``http://<bridge>:<port>/debian/``, ``/k3s/...``, ``/tailscale/...`` and nothing else.

Example::

    python3 -m k3sfleet.lab.serve /var/lib/k3sfleet-lab/lab1/www 10.123.1.1 .../www.port
"""

from __future__ import annotations

import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: python3 -m k3sfleet.lab.serve DIR ADDRESS PORTFILE", file=sys.stderr)
        return 2
    directory, address, portfile = sys.argv[1:]
    handler = functools.partial(_Handler, directory=directory)
    server = ThreadingHTTPServer((address, 0), handler)
    server.daemon_threads = True
    tmp = Path(portfile + ".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.rename(portfile)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
