"""A FastAPI app using what real apps use: FileResponse, StreamingResponse, SSE,
background tasks and a WebSocket. ``app`` records the ASGI message types each
request sends (by its ``x-record`` header), so a test can see that
FileResponse went through ``http.response.pathsend``. Sleeps are app pacing."""

from __future__ import annotations

import asyncio
import os

from fastapi import BackgroundTasks, FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse

api = FastAPI()
RECORDS: dict[str, list[str]] = {}


@api.get("/pid")
async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


@api.get("/sync")
def sync_endpoint() -> dict[str, str]:
    """A plain def endpoint: FastAPI runs it in a thread through anyio."""
    import threading
    return {"thread": threading.current_thread().name}


@api.get("/task")
async def task_identity() -> dict[str, bool]:
    """The request's task from the first line on, the same after a suspension;
    asyncio.timeout needs it."""
    first = asyncio.current_task()
    async with asyncio.timeout(5):
        await asyncio.sleep(0)
    return {"has_task": first is not None, "same": asyncio.current_task() is first}


@api.get("/file")
async def file(path: str) -> FileResponse:
    return FileResponse(path, media_type="application/octet-stream")


async def _chunks(n: int, delay: float, sse: bool):
    for i in range(n):
        if i:
            await asyncio.sleep(delay)  # deliberate (noqa: sleep): app pacing, a slow producer
        yield f"data: event {i} from {os.getpid()}\n\n" if sse else f"chunk {i};"


@api.get("/stream")
async def stream(n: int = 5, delay: float = 0.0) -> StreamingResponse:
    return StreamingResponse(_chunks(n, delay, sse=False), media_type="text/plain")


@api.get("/sse")
async def sse(n: int = 5, delay: float = 0.0) -> StreamingResponse:
    return StreamingResponse(_chunks(n, delay, sse=True), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})


async def _after_response(record: str) -> None:
    await asyncio.sleep(0.05)  # deliberate (noqa: sleep): app work that takes a moment
    RECORDS.setdefault(record, []).append("background task ran")


@api.post("/background")
async def background(record: str, tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(_after_response, record)
    return {"queued": record}


@api.get("/records/{record}")
async def records(record: str) -> list[str]:
    return RECORDS.get(record, [])


@api.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"pid": os.getpid()})
    try:
        while True:
            await websocket.send_text("echo: " + await websocket.receive_text())
    except WebSocketDisconnect:
        pass


async def app(scope, receive, send):
    """The FastAPI app, with every ``send`` of a request that carries an
    ``x-record`` header noted by message type."""
    record = None
    if scope["type"] == "http":
        record = dict(scope["headers"]).get(b"x-record")
    if record is None:
        return await api(scope, receive, send)
    types = RECORDS.setdefault(record.decode(), [])

    async def recording_send(message):
        types.append(message["type"])
        await send(message)

    await api(scope, receive, recording_send)
