"""--reload: notice source changes by polling mtimes (development only).

The master calls ``changed()`` from its loop about twice a second; a change
starts the same rolling reload as SIGHUP, so the socket stays bound. The
master turns off writing .pyc files in this mode: a cache written within the
second of a save would hide a second same-size save from the import system.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path

POLL_INTERVAL_S = 0.5


ALWAYS_INCLUDED = ("*.py",)
DEFAULT_EXCLUDE = (".*", "*.py[cod]", "*~")


class StatReloader:
    """Watches ``dirs`` recursively. Patterns match a file's name or its full path.

    As with uvicorn, --reload-include adds to ``*.py`` (source stays watched when
    templates are added) and --reload-exclude adds to the default exclusions
    (dot-files, bytecode, editor backups), unless a default is named as an
    include. An exclusion wins over an inclusion, so ``--reload-exclude '*.py'``
    stops watching source.
    """

    def __init__(self, dirs: Iterable[str], include: Iterable[str],
                 exclude: Iterable[str]) -> None:
        self.dirs = [Path(d).resolve() for d in dirs] or [Path.cwd()]
        include = tuple(include)
        self.include = tuple(dict.fromkeys((*include, *ALWAYS_INCLUDED)))
        self.exclude = tuple(dict.fromkeys(
            (*exclude, *(p for p in DEFAULT_EXCLUDE if p not in include))))
        self._mtimes = self._scan()

    def _wanted(self, path: Path) -> bool:
        name = path.name
        if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(str(path), p) for p in self.exclude):
            return False
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(str(path), p)
                   for p in self.include)

    def _scan(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        for root in self.dirs:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")
                               and d not in ("__pycache__", "node_modules")
                               and not any(fnmatch.fnmatch(d, p) for p in self.exclude)]
                for filename in filenames:
                    path = Path(dirpath, filename)
                    if self._wanted(path):
                        try:
                            seen[str(path)] = path.stat().st_mtime
                        except OSError:
                            pass
        return seen

    def changed(self) -> list[str]:
        """Files added, removed or modified since the last call."""
        now = self._scan()
        diff = [p for p in now.keys() | self._mtimes.keys() if now.get(p) != self._mtimes.get(p)]
        self._mtimes = now
        return sorted(diff)
