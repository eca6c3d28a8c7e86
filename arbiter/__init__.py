"""arbiter: a pre-fork process manager with pluggable ASGI workers.

Public API: ``run()``, ``Config``, ``__version__`` (pinned by a test).
"""

from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"

from arbiter.config import Config  # noqa: E402

__all__ = ["run", "Config", "__version__"]


def run(app: Any, **settings: Any) -> int:
    """Serve ``app`` (an import string, or an ASGI app object with one worker).

    Keyword arguments are setting names (``host``, ``port``, ``workers``,
    ``worker_class``...). Returns the master's exit code; raises an
    ``arbiter.errors.ArbiterError`` subclass for bad settings or addresses.
    """
    from arbiter.cli import load_config, serve
    from arbiter.errors import UsageError

    app_object = None
    if isinstance(app, str):
        settings["app"] = app
    else:
        app_object = app
        if int(settings.get("workers", 1)) != 1 or settings.get("reload"):
            raise UsageError("an app object can only be served by one worker without --reload; "
                             "pass an import string such as 'main:app' instead")
        settings.setdefault("workers", 1)
        settings["app"] = f"{getattr(app, '__module__', 'app')}:app"
    config = load_config({}, dict(os.environ), overrides=settings)
    return serve(config, reexec_argv=None, app_object=app_object,
                 reload_config=lambda: load_config({}, dict(os.environ), overrides=settings))
