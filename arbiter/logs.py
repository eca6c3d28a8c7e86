"""Logging setup for the master and (inherited across fork) its workers.

Two loggers: ``arbiter.error`` (stderr or --error-log) and ``arbiter.access``
(stdout or --access-log-file). File handlers reopen on SIGUSR1 so logrotate
works. Library code only calls getLogger(); this module is the only one that
installs handlers, and only the CLI calls it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

ERROR_LOGGER = "arbiter.error"
ACCESS_LOGGER = "arbiter.access"


class _Formatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.created))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, pid, message; a lifecycle
    line adds its event and fields (``extra={"event": ..., "fields": ...}``), and an
    exception its traceback. Newlines are escaped by JSON, so a record is one line."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created)
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "pid": record.process,
            "message": record.getMessage()}
        event = getattr(record, "event", "")
        if event:
            line["event"] = event
            for key, value in getattr(record, "fields", ()):
                if value is not None and key not in ("time", "level", "message", "event"):
                    line[key] = value  # a worker event's pid is the worker's
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class ReopenableFileHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Appends to a file; reopen() picks up a file renamed away by logrotate.

    With --user the master gives the file to that user (``owner``), as gunicorn
    does: the master reopens first and creates the new file as root, then the
    workers, no longer root, reopen it too."""

    def __init__(self, path: str, owner: tuple[int, int] | None = None) -> None:
        self.path = path
        self.owner = owner
        super().__init__(self._open())

    def _open(self) -> Any:
        stream = open(self.path, "a", buffering=1, encoding="utf-8")
        if self.owner is not None and os.geteuid() == 0:
            try:
                os.chown(self.path, *self.owner)
            except OSError:
                pass  # /dev/stderr, a file on a filesystem without owners
        return stream

    def reopen(self) -> None:
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            old.close()
        finally:
            self.release()


def setup(level: str, error_log: str | None, access_log_file: str | None,
          json_lines: bool = False, owner: tuple[int, int] | None = None) -> None:
    error = logging.getLogger(ERROR_LOGGER)
    error.handlers.clear()
    handler: logging.Handler = (ReopenableFileHandler(error_log, owner) if error_log
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if json_lines else
                         _Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
    error.addHandler(handler)
    error.setLevel(level.upper())
    error.propagate = False

    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers.clear()
    ahandler: logging.Handler = (ReopenableFileHandler(access_log_file, owner)
                                 if access_log_file else logging.StreamHandler(sys.stdout))
    ahandler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(ahandler)
    access.setLevel(logging.INFO)
    access.propagate = False


def reopen() -> None:
    for name in (ERROR_LOGGER, ACCESS_LOGGER):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, ReopenableFileHandler):
                handler.reopen()


def flush() -> None:
    for name in (ERROR_LOGGER, ACCESS_LOGGER):
        for handler in logging.getLogger(name).handlers:
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
