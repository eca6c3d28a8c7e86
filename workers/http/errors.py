"""HTTP errors typed by whose fault they are: the client's (4xx) or ours (500)."""

from __future__ import annotations


class RemoteProtocolError(Exception):
    """The client broke HTTP/1.1; carries the status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientDisconnected(OSError):
    """send() after the client went away (ASGI spec: an OSError subclass)."""
