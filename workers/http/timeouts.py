"""What a connection does when its one deadline passes (pure, no I/O).

A connection keeps a single deadline, owned in turn by --timeout-header,
--keep-alive and --timeout-body; what expiry means depends on where the
connection stands, and is decided here so the rule can be table-tested.
"""

from __future__ import annotations

import enum


class Expiry(enum.Enum):
    CLOSE = "close"  # close, saying nothing: there is no request to answer
    ANSWER_408 = "408"  # answer 408 Request Timeout, then close
    KEEP = "keep"  # not the client's stall: leave the connection alone


def on_deadline(between_requests: bool, head_started: bool, app_awaits_body: bool,
                response_started: bool) -> Expiry:
    """The verdict for a connection whose deadline passed.

    ``between_requests``: no request is in flight (waiting for a head, idle in
    keep-alive, or draining at shutdown). ``head_started``: part of the next
    head has arrived. ``app_awaits_body``: the app is blocked in receive() on
    a body that is not complete. ``response_started``: the app has begun its
    response (a 408 can no longer be sent).
    """
    if between_requests:
        # RFC 9110 15.5.9: 408 says the server gave up on a request it was
        # waiting for; a connection that sent no byte of one gets no answer
        return Expiry.ANSWER_408 if head_started else Expiry.CLOSE
    if not app_awaits_body:
        return Expiry.KEEP  # the app is busy; its slowness is not the client's stall
    # never pass off a response as complete: once one started, only close
    return Expiry.CLOSE if response_started else Expiry.ANSWER_408
