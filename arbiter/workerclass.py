"""Name -> worker class. Built-in names map to import strings, so a third-party
worker and a built-in one are resolved by the same loader.

The master also warms the class it resolved (``warm``): the worker's own
machinery is imported once, here, instead of after every fork. This module
reaches ``workers/`` only through the class the import string named.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from arbiter.config import Config
from arbiter.errors import AppLoadError, UsageError
from arbiter.importer import import_from_string

BUILTIN = {
    "uvloop": "workers.asgi:UvloopWorker",
    "asyncio": "workers.asgi:AsyncioWorker",
}


def resolve(name: str) -> type:
    if name == "auto":
        name = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    spec = BUILTIN.get(name, name)
    try:
        cls = import_from_string(spec, what="worker class")
    except AppLoadError as exc:
        raise UsageError(f"--worker-class {name!r}: {exc}") from None
    if not isinstance(cls, type) or not callable(getattr(cls, "run", None)):
        raise UsageError(f"--worker-class {name!r}: {spec} is not a worker class "
                         f"(subclass workers.Worker)")
    return cls


def warm(worker_cls: type, config: Config) -> None:
    """Let the class import what its workers need before the first fork (``Worker.warm``).

    Never fatal: a worker that then fails to import the same thing reports it
    itself, through the boot-failure path, with its exit code.
    """
    hook = getattr(worker_cls, "warm", None)
    if hook is None:
        return
    try:
        hook(config.worker())
    except Exception as exc:
        logging.getLogger("arbiter.error").warning(
            "%s:%s.warm() failed, each worker will import for itself: %s: %s",
            worker_cls.__module__, worker_cls.__qualname__, type(exc).__name__, exc)


def make_entry(worker_cls: type, first_name: str) -> Any:
    """The function the master calls in each forked child."""

    def run_worker(slot: int, generation: int, config: Config, sockets: list[Any],
                   heartbeat_fd: int, app: Any) -> int:
        cls = worker_cls if config["worker_class"] == first_name else resolve(
            config["worker_class"])  # a reload may have changed the worker class
        worker = cls(slot=slot, generation=generation, config=config.worker(),
                     sockets=sockets, heartbeat_fd=heartbeat_fd, master_pid=os.getppid(),
                     app=app)
        return int(worker.run())

    return run_worker
