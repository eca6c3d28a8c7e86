"""Worker processes: the Worker base class (the plug-in contract) and the ASGI workers."""

from workers.base import Worker

__all__ = ["Worker", "AsgiWorker", "AsyncioWorker", "UvloopWorker"]


def __getattr__(name: str) -> object:
    if name in ("AsgiWorker", "AsyncioWorker", "UvloopWorker"):
        from workers import asgi
        return getattr(asgi, name)
    raise AttributeError(name)
