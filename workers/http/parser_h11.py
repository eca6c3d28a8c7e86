"""h11 backend: a second opinion on the odd heads the strict gate accepted.

Every byte passes the shared strict gate (``framing.RequestGate``), which frames
every request and delivers heads and bodies itself (``framing.GatedParser``).
An odd head (accepted, yet not in canonical form; see ``GatedParser``) is also
parsed by h11, as a bodiless request in canonical form, with a fresh state
machine: what h11 refuses is refused. h11 is never used to write responses.
"""

from __future__ import annotations

from typing import Any

import h11

from workers.http.errors import backend_refused
from workers.http.framing import GatedParser, Head, bodiless_head_bytes


class H11Parser(GatedParser):
    def __init__(self, sink: Any, limits: Any) -> None:
        super().__init__(sink, limits)
        self.max_head = self.gate.max_head + 1024

    def _check(self, head: Head) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        conn.receive_data(bodiless_head_bytes(head))
        try:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise backend_refused(exc.error_status_hint) from None
        if not isinstance(event, h11.EndOfMessage):
            raise backend_refused()
