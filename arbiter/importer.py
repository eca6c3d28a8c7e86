"""Resolve "module:attribute" import strings (the app, a worker class).

Errors say which part was not found: the module, an attribute on the way, or
an import inside the module that failed (with its traceback kept as cause).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from arbiter.errors import AppLoadError


def import_from_string(spec: str, *, what: str = "app") -> Any:
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise AppLoadError(f'{what} {spec!r}: expected an import string "module:attribute"')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"{what} {spec!r}: could not import module {module_name!r} "
                               f"(searched sys.path starting with {sys.path[0]!r})") from exc
        raise AppLoadError(f"{what} {spec!r}: importing {module_name!r} failed: "
                           f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(f"{what} {spec!r}: importing {module_name!r} failed: "
                           f"{type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"{what} {spec!r}: module {module_name!r} has no attribute "
                               f"{attr_path!r}") from None
    return obj


def load_app(spec: str, app_dir: str, factory: bool) -> Any:
    """Resolve the app import string; AppLoadError says what went wrong."""
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    app = import_from_string(spec, what="app")
    if factory:
        if not callable(app):
            raise AppLoadError(f"app {spec!r}: --factory was given but it is not callable")
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(f"app factory {spec!r} raised {type(exc).__name__}: {exc}") \
                from exc
    if not callable(app):
        raise AppLoadError(f"app {spec!r} is not callable (an ASGI app is a callable taking "
                           f"scope, receive, send)")
    return app
