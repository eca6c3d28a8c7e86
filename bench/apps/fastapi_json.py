"""FastAPI GET returning a small JSON document (x-pid header as in hello)."""
import os

from fastapi import FastAPI, Response

app = FastAPI()

PAYLOAD = {"message": "Hello, world!", "items": [1, 2, 3], "ok": True}


@app.get("/json")
async def json_endpoint(response: Response):
    response.headers["x-pid"] = str(os.getpid())
    return PAYLOAD
