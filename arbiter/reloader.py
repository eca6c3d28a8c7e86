"""--reload: notice source changes (development only).

The master calls ``changed()`` from its loop about twice a second; a change
starts the same rolling reload as SIGHUP, so the socket stays bound. With
watchfiles installed, changes come from the OS (inotify on Linux) through it;
without, every watched directory is scanned for mtimes on each call. The
master turns off writing .pyc files in this mode: a cache written within the
second of a save would hide a second same-size save from the import system.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

POLL_INTERVAL_S = 0.5
ALWAYS_INCLUDED = ("*.py",)
DEFAULT_EXCLUDE = (".*", "*.py[cod]", "*~")
SKIPPED_DIRS = ("__pycache__", "node_modules")


class _Watch:
    """What to watch: directories, recursively, and file patterns.

    Patterns match a file's name or its full path. As with uvicorn,
    --reload-include adds to ``*.py`` (source stays watched when templates are
    added) and --reload-exclude adds to the default exclusions (dot-files,
    bytecode, editor backups), unless a default is named as an include. An
    exclusion wins over an inclusion, so ``--reload-exclude '*.py'`` stops
    watching source. Hidden directories, ``__pycache__``, ``node_modules`` and
    directories matching an exclusion are skipped.
    """

    backend = ""

    def __init__(self, dirs: Iterable[str], include: Iterable[str],
                 exclude: Iterable[str]) -> None:
        self.dirs = [Path(d).resolve() for d in dirs] or [Path.cwd()]
        include = tuple(include)
        self.include = tuple(dict.fromkeys((*include, *ALWAYS_INCLUDED)))
        self.exclude = tuple(dict.fromkeys(
            (*exclude, *(p for p in DEFAULT_EXCLUDE if p not in include))))

    def _wanted(self, path: Path) -> bool:
        name = path.name
        if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(str(path), p) for p in self.exclude):
            return False
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(str(path), p)
                   for p in self.include)

    def _dir_wanted(self, name: str) -> bool:
        return not (name.startswith(".") or name in SKIPPED_DIRS
                    or any(fnmatch.fnmatch(name, p) for p in self.exclude))

    def _in_wanted_dirs(self, path: Path) -> bool:
        for root in self.dirs:
            try:
                parts = path.relative_to(root).parts[:-1]
            except ValueError:
                continue
            return all(self._dir_wanted(part) for part in parts)
        return False

    def changed(self) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class StatReloader(_Watch):
    """Polls: every call walks the directories and compares mtimes."""

    backend = "polling mtimes"

    def __init__(self, dirs: Iterable[str], include: Iterable[str],
                 exclude: Iterable[str]) -> None:
        super().__init__(dirs, include, exclude)
        self._mtimes = self._scan()

    def _scan(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        for root in self.dirs:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if self._dir_wanted(d)]
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


class WatchfilesReloader(_Watch):
    """Event-driven through watchfiles (its notifier runs in a thread of its own).

    ``changed()`` never blocks for long: it asks watchfiles for what happened
    with a 1 ms timeout; when something did, watchfiles gathers the burst for
    up to ``step`` ms (an editor's save is often several events).
    """

    backend = "watchfiles"

    def __init__(self, dirs: Iterable[str], include: Iterable[str],
                 exclude: Iterable[str]) -> None:
        super().__init__(dirs, include, exclude)
        import watchfiles

        self._events: Any = watchfiles.watch(
            *self.dirs, watch_filter=self._filter, debounce=400, step=50, rust_timeout=1,
            yield_on_timeout=True, raise_interrupt=False)
        next(self._events)  # start the notifier now, so a change right after is seen

    def _filter(self, change: Any, path: str) -> bool:
        p = Path(path)
        return self._in_wanted_dirs(p) and self._wanted(p)

    def changed(self) -> list[str]:
        try:
            events = next(self._events)
        except StopIteration:
            return []
        return sorted({path for _, path in events})

    def close(self) -> None:
        self._events.close()


def make_reloader(dirs: Iterable[str], include: Iterable[str],
                  exclude: Iterable[str]) -> _Watch:
    """watchfiles when it is installed, else mtime polling."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return StatReloader(dirs, include, exclude)
    return WatchfilesReloader(dirs, include, exclude)
