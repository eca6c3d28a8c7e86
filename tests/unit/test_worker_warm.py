"""Worker.warm: the master imports the worker's machinery before it forks, never the app.

Each case runs in a fresh interpreter (what is in sys.modules is the thing measured,
and this test process has imported half the package already): the master's own
imports, then ``workerclass.warm`` for the class the master resolved.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from arbiter import cli, master, workerclass
from arbiter.config import resolve
config = resolve({}, {}, {}, overrides=dict(app="basic:app", app_dir=sys.argv[1],
                                            worker_class=sys.argv[2], http=sys.argv[3]))
cls = workerclass.resolve(config["worker_class"])
before = set(sys.modules)
workerclass.warm(cls, config)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _warmed(worker_class: str, backend: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "tests" / "apps"),
                          worker_class, backend], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("worker_class, backend, loaded, not_loaded", [
    ("uvloop", "httptools", {"uvloop", "workers.http.server", "workers.http.connection",
                             "workers.websocket", "workers.http.parser_httptools", "httptools"},
     {"workers.http.parser_h11", "basic"}),
    ("uvloop", "h11", {"uvloop", "workers.http.server", "workers.http.parser_h11"},
     {"workers.http.parser_httptools", "basic"}),
    ("asyncio", "httptools", {"workers.http.server", "workers.http.parser_httptools"},
     {"uvloop", "basic"}),
])
def test_warm_imports_the_worker_machinery_for_the_configured_backend_and_not_the_app(
        worker_class: str, backend: str, loaded: set[str], not_loaded: set[str]) -> None:
    warmed = _warmed(worker_class, backend)
    assert loaded <= warmed, f"not warmed: {sorted(loaded - warmed)}"
    assert not (not_loaded & warmed), f"warmed but must not be: {sorted(not_loaded & warmed)}"


def test_the_base_worker_warms_nothing_and_a_custom_worker_inherits_its_parents_warm() -> None:
    from workers import Worker
    assert Worker.warm(None) is None  # type: ignore[arg-type]  # the base needs no config
    warmed = _warmed("tests.apps.custom_worker:HeaderWorker", "httptools")
    assert {"uvloop", "workers.http.server", "workers.http.parser_httptools"} <= warmed
    assert "basic" not in warmed


def test_a_warm_that_raises_is_logged_and_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    from arbiter import workerclass
    from arbiter.config import resolve

    class Broken:
        @classmethod
        def warm(cls, config: object) -> None:
            raise ImportError("No module named 'missing_dependency'")

    class NoHook:  # a worker class without warm(): nothing to call
        pass

    config = resolve({}, {}, {}, overrides={"app": "basic:app"})
    with caplog.at_level("WARNING", logger="arbiter.error"):
        workerclass.warm(Broken, config)
        workerclass.warm(NoHook, config)
    assert [r.getMessage() for r in caplog.records] == [
        f"{__name__}:{Broken.__qualname__}.warm() failed, each worker will import for itself: "
        "ImportError: No module named 'missing_dependency'"]
