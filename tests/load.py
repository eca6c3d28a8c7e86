"""Background load for end-to-end tests: a client in a thread that counts what fails.

One implementation for every test that checks "no request fails while the master
reloads, replaces or re-executes": keep-alive (one connection) or a new connection
per request, with what it saw recorded so a test can tell generations apart.
"""

from __future__ import annotations

import threading
import time

import httpx

from tests.conftest import wait_until


class Load:
    """GET ``url + path`` in a loop until ``finish()`` (or 120 s), in a daemon thread.

    ``fresh`` sends ``Connection: close`` so every request opens a new connection.
    Records each failure (an exception or a non-200 status), the count of successes,
    every ``x-config`` response header value and when each body was first served.
    """

    def __init__(self, url: str, path: str = "/pid", fresh: bool = False) -> None:
        self.url = url + path
        self.headers = {"connection": "close"} if fresh else {}
        self.ok = 0
        self.failed: list[str] = []
        self.configs: set[str] = set()
        self.first_seen: dict[bytes, float] = {}  # body -> monotonic time first served
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.get(self.url, headers=self.headers)
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failed.append(f"HTTP {response.status_code}")
                    continue
                self.ok += 1
                self.configs.add(response.headers.get("x-config", ""))
                self.first_seen.setdefault(response.content, time.monotonic())

    def wait_more(self, n: int, timeout: float = 20.0) -> None:
        """Wait until ``n`` more requests have succeeded."""
        target = self.ok + n
        wait_until(lambda: self.ok >= target, timeout, message=f"{n} more requests")

    def finish(self) -> None:
        """Stop the loop and wait for the request in flight to end."""
        self._stop.set()
        self._thread.join(15)
