"""Test app for the ASGI response extensions: pathsend, zerocopysend, trailers,
early hints. Raw ASGI; what to send comes from the query string."""

import hashlib
import json
import os
from urllib.parse import parse_qs

from app_lifespan import serve_lifespan


def _query(scope) -> dict:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(
            {"extensions": sorted(scope["extensions"]), "asgi": scope["asgi"]})})
        await send({"type": "websocket.close"})
        return
    q = _query(scope)
    path = scope["path"]
    headers = [(b"content-type", b"application/octet-stream")]
    if "length" in q:
        headers.append((b"content-length", q["length"].encode()))
    if path == "/scope":
        body = json.dumps({"extensions": sorted(scope["extensions"]),
                           "asgi": scope["asgi"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/pathsend":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": q["path"]})
    elif path == "/zerocopy":
        # offset/count as given; "split": the file in two zerocopysends with a
        # body message between them, to check the framing of a mixed body
        with open(q["path"], "rb") as f:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if "split" in q:
                half = os.fstat(f.fileno()).st_size // 2
                await send({"type": "http.response.zerocopysend", "file": f, "offset": 0,
                            "count": half, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": True})
                await send({"type": "http.response.zerocopysend", "file": f.fileno(),
                            "offset": half, "more_body": False})
            elif "position" in q:  # no offset: from the file's position, which moves
                f.seek(int(q["position"]))
                await send({"type": "http.response.zerocopysend", "file": f,
                            "count": int(q["count"]), "more_body": True})
                after = f.tell()
                await send({"type": "http.response.body", "body": b"|%d" % after})
            else:
                message = {"type": "http.response.zerocopysend", "file": f}
                for key in ("offset", "count"):
                    if key in q:
                        message[key] = int(q[key])
                await send(message)
    elif path == "/trailers":
        parts = [b"alpha-", b"beta-", b"gamma"]
        digest = hashlib.sha256(b"".join(parts)).hexdigest().encode()
        if "bad" in q:
            digest += b"\r\nx-injected: yes"
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [*headers, (b"trailer", b"x-checksum")]})
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part,
                        "more_body": i < len(parts) - 1})
        await send({"type": "http.response.trailers", "more_trailers": True,
                    "headers": [(b"x-checksum", digest)]})
        await send({"type": "http.response.trailers", "headers": [(b"x-count", b"3")]})
    elif path == "/early-hints":
        links = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]
        if "bad" in q:
            links.append(b"</x>\r\nset-cookie: evil=1")
        await send({"type": "http.response.early_hint", "links": links})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5"), (b"link", links[0])]})
        await send({"type": "http.response.body", "body": b"final"})
    else:
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
