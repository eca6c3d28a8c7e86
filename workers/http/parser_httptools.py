"""httptools backend: a second opinion on the odd heads the strict gate accepted.

Every byte passes the shared strict gate (``framing.RequestGate``), which frames
every request and delivers heads and bodies itself (``framing.GatedParser``).
An odd head (accepted, yet not in canonical form; see ``GatedParser``) is also
parsed by llhttp, as a bodiless request in canonical form, with a fresh
parser: what llhttp refuses is refused.
"""

from __future__ import annotations

import httptools

from workers.http.errors import backend_refused
from workers.http.framing import GatedParser, Head, bodiless_head_bytes


class HttptoolsParser(GatedParser):
    def _check(self, head: Head) -> None:
        done = _Complete()
        try:
            httptools.HttpRequestParser(done).feed_data(bodiless_head_bytes(head))
        except httptools.HttpParserUpgrade:
            # the gate takes the WebSocket upgrade itself and drops any other
            # from the head: llhttp is never meant to see one
            raise backend_refused() from None
        except httptools.HttpParserError:
            raise backend_refused() from None
        if not done.complete:
            raise backend_refused()


class _Complete:
    """llhttp's callbacks: only whether it saw the whole message matters."""

    complete = False

    def on_message_complete(self) -> None:
        self.complete = True
