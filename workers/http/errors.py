"""HTTP errors typed by whose fault they are: the client's (4xx) or ours (500)."""

from __future__ import annotations


class RemoteProtocolError(Exception):
    """The client broke HTTP/1.1; carries the status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientDisconnected(OSError):
    """send() after the client went away, on an http or a websocket
    connection (ASGI spec: an OSError subclass)."""


# What a parser backend's own complaint is answered with. The gate is stricter
# than h11 and llhttp everywhere it knows of, so this is a backstop; written
# once so that both backends answer alike even here. h11 hints 431 (its buffer
# limit) and 501 (a transfer coding it does not know); llhttp says 501 for a
# Transfer-Encoding it refuses; anything else is a plain 400.
_BACKEND_ANSWERS = {400: "Invalid HTTP request", 431: "Request head too large",
                    501: "Unsupported Transfer-Encoding"}


def backend_refused(status_hint: int = 400) -> RemoteProtocolError:
    """The error to answer a parser backend's refusal with, from its status hint."""
    status = status_hint if status_hint in _BACKEND_ANSWERS else 400
    return RemoteProtocolError(status, _BACKEND_ANSWERS[status])
