"""FastAPI: read the whole request body, answer its length in bytes (post.py, as
an endpoint: the app's own cost is most of a request here)."""
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.post("/")
async def upload(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))
