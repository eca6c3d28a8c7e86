"""FastAPI FileResponse of a 50 KiB file: Starlette sends it through
``http.response.pathsend`` where the server offers that extension, else reads
it in chunks and sends body messages."""
import os
import tempfile
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

DATA = bytes(range(256)) * 200  # 51,200 bytes with a checkable pattern
PATH = Path(tempfile.gettempdir()) / "arbiter-bench-file-50k.bin"


def _write_once() -> None:
    """Every worker of every server imports this: write it atomically, same bytes."""
    if PATH.exists() and PATH.read_bytes() == DATA:
        return
    fd, tmp = tempfile.mkstemp(dir=PATH.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(DATA)
    os.replace(tmp, PATH)


_write_once()
app = FastAPI()


@app.get("/file")
async def file_endpoint():
    return FileResponse(PATH, media_type="application/octet-stream",
                        headers={"x-pid": str(os.getpid())})
