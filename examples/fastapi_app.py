"""A FastAPI app: `pip install -e '.[examples]' && arbiter examples.fastapi_app:app`."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    return {"message": "Hello from FastAPI on arbiter"}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}
