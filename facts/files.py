"""The state of the files a deploy manages, for many paths in one command.

pyinfra 3 reads ``Sha256File`` and ``File`` (two round trips) for each file an operation checks;
``ManagedFiles`` reads the sha256, type, owner, group, mode and link target of every given path
with one ``sha256sum`` and one ``find``, so a deploy compares all its files after one round trip.

Example::

    files = host.get_fact(ManagedFiles, paths=["/etc/timezone"], links=["/etc/localtime"],
                          _sudo=True)
    files["/etc/timezone"]["sha256"]        # "c3ab8f..." (None for a link)
    files["/etc/localtime"]["link_target"]  # "/usr/share/zoneinfo/UTC"
    files["/etc/missing"]                   # None: the path does not exist
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand

#: ``find -printf`` line per existing path: type, owner, group, octal mode, path TAB link target.
_FORMAT = "stat %y %u %g %m %p\\t%l\\n"
_TYPES = {"f": "file", "l": "link", "d": "directory"}


class FileState(TypedDict):
    type: str  # "file", "link", "directory" or "other"
    sha256: str | None  # of the content (``paths`` only; a link's target is followed)
    user: str
    group: str
    mode: str  # octal, as ``stat -c %a`` prints it: "644", "440"
    link_target: str | None


ManagedFilesData = dict[str, FileState | None]


def _check(paths: str | Sequence[str]) -> list[str]:
    paths = [paths] if isinstance(paths, str) else list(paths)
    for path in paths:
        if not path.startswith("/"):
            raise ValueError(f"ManagedFiles needs absolute paths, not {path!r}")
    return paths


class ManagedFiles(FactBase[ManagedFilesData]):
    """sha256, type, owner, group, mode and link target of ``paths``, and all but the sha256
    of ``links`` (not followed); ``None`` for a path that does not exist.

    Example output::

        {"/etc/timezone": {"type": "file", "sha256": "c3ab8f...", "user": "root",
                           "group": "root", "mode": "644", "link_target": None},
         "/etc/localtime": {"type": "link", "sha256": None, "user": "root", "group": "root",
                            "mode": "777", "link_target": "/usr/share/zoneinfo/UTC"},
         "/etc/sudoers.d/90-k3sfleet-admins": None}
    """

    def command(
        self, paths: str | Sequence[str] = (), links: str | Sequence[str] = ()
    ) -> StringCommand:
        # Two processes however many paths: this runs on every node on every run.
        hashed = _check(paths)
        everything = [*hashed, *_check(links)]
        self.requested = everything  # process() gives each a key (None: missing)
        parts: list[str | QuoteString] = []
        if hashed:  # (sha256sum with no path would read stdin)
            parts += ["sha256sum", *[QuoteString(p) for p in hashed], "2>/dev/null", ";"]
        if everything:
            parts += [
                "find", *[QuoteString(p) for p in everything], "-maxdepth", "0",
                "-printf", QuoteString(_FORMAT), "2>/dev/null", ";",
            ]
        return StringCommand(*parts, "true")

    def process(self, output: list[str]) -> ManagedFilesData:
        digests: dict[str, str] = {}
        found: ManagedFilesData = dict.fromkeys(getattr(self, "requested", []))
        for line in output:
            if line.startswith("stat "):
                words = line[len("stat "):].split(" ", 4)
                if len(words) != 5:
                    continue
                kind, user, group, mode, rest = words
                path, _, target = rest.partition("\t")
                found[path] = {
                    "type": _TYPES.get(kind, "other"), "sha256": None, "user": user,
                    "group": group, "mode": mode,
                    "link_target": target if kind == "l" else None,
                }
            else:  # sha256sum: "<64 hex>  <path>"
                digest, sep, path = line.partition("  ")
                if sep and len(digest) == 64:
                    digests[path] = digest
        for path, digest in digests.items():
            state = found.get(path)
            if state is not None:
                state["sha256"] = digest
        return found

    def default(self) -> ManagedFilesData:  # type: ignore[override]
        # (pyinfra calls it on the fact it ran, when nothing at all exists)
        return dict.fromkeys(getattr(self, "requested", []))

