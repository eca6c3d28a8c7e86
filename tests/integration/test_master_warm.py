"""The master warms the worker class before forking (Worker.warm), and never the app.

A worker then finds its HTTP stack already imported when it imports the app,
while a SIGHUP or --reload still serves the app's edited code.
"""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.slow

APP = '''
import sys

VERSION = "version one"
# What the worker had imported when it came to import the app (after the fork).
WARM = " ".join(m for m in ("workers.http.server", "workers.http.parser_httptools",
                            "workers.http.parser_h11") if m in sys.modules)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = f"{VERSION}|{WARM}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


@pytest.mark.parametrize("backend", ["httptools", "h11"])
def test_workers_boot_with_the_http_stack_warmed_and_a_sighup_serves_edited_app_code(
        arbiter_process, tmp_path, backend: str) -> None:
    app = tmp_path / "warmapp.py"
    app.write_text(APP)
    server = arbiter_process(["warmapp:app", "--workers", "2", "--http", backend,
                              "--app-dir", str(tmp_path)], cwd=tmp_path).wait_ready()
    version, warm = httpx.get(server.url, timeout=5).text.split("|")
    assert version == "version one"
    assert warm.split() == ["workers.http.server", f"workers.http.parser_{backend}"]
    app.write_text(APP.replace("version one", "version two"))
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload: generation 2 is serving", timeout=30)

    def served() -> set[str]:
        return {httpx.get(server.url, headers={"connection": "close"}, timeout=5).text
                for _ in range(6)}

    assert wait_until(lambda: served() == {
        f"version two|workers.http.server workers.http.parser_{backend}"}, 10,
        message="only the edited app to answer")
