"""The cycle's ASGI response extensions without sockets: pathsend, zerocopysend,
trailers and early hints, bytes out for messages in."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from workers.http.cycle import (EXTENSIONS_HTTP10, EXTENSIONS_HTTP11, SPEC_VERSION, HttpCycle,
                                accepts_trailers, scope_extensions)

HEAD_START = b"HTTP/1.1 200 OK\r\nserver: arbiter\r\n"


class IO:
    """The connection side, in memory; send_file copies the file's bytes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.done = False
        self.files: list[tuple[int, int]] = []

    def write(self, data: bytes) -> None:
        self.out += data

    queue = write  # (the connection batches these; in memory, order is all that counts)

    def drain(self) -> None:
        return None

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        self.files.append((offset, count))
        self.out += os.pread(fd, count, offset)

    def wait_body(self) -> Any:
        raise AssertionError("no request body in these tests")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def cycle_done(self, cycle: HttpCycle) -> None:
        self.done = True


def make_cycle(method: str = "GET", version: str = "1.1",
               headers: list[tuple[bytes, bytes]] | None = None) -> tuple[HttpCycle, IO]:
    io = IO()
    scope = {"method": method, "http_version": version, "headers": headers or []}
    return HttpCycle(scope, io, keep_alive=True, expect_continue=False,
                     default_headers=lambda: b"server: arbiter\r\n"), io


def play(cycle: HttpCycle, *messages: dict[str, Any]) -> None:
    async def go() -> None:
        for message in messages:
            await cycle.send(message)
    asyncio.run(go())


def start(*headers: tuple[bytes, bytes], **extra: Any) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": list(headers), **extra}


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    return path


# ---------------------------------------------------------------- advertising


def test_extensions_by_http_version_and_the_spec_version() -> None:
    http11, http10 = scope_extensions(None)
    assert set(http11) == set(EXTENSIONS_HTTP11) == {
        "http.response.pathsend", "http.response.zerocopysend", "http.response.trailers",
        "http.response.early_hint"}
    assert set(http10) == set(EXTENSIONS_HTTP10) == {"http.response.pathsend",
                                                      "http.response.zerocopysend"}
    tls = {"tls_version": 0x0304}
    with_tls = scope_extensions(tls)
    assert with_tls[0]["tls"] is tls and with_tls[1]["tls"] is tls
    assert SPEC_VERSION == "2.5"


@pytest.mark.parametrize("version, te, accepted", [
    ("1.1", b"trailers", True), ("1.1", b"gzip, Trailers", True),
    ("1.1", b"trailers;q=1", True), ("1.1", b"gzip", False), ("1.1", None, False),
    ("1.1", b"notrailers", False), ("1.0", b"trailers", False)])
def test_te_trailers_is_read_from_the_request(version: str, te: bytes | None,
                                               accepted: bool) -> None:
    headers = [(b"host", b"h")] + ([(b"te", te)] if te is not None else [])
    assert accepts_trailers({"http_version": version, "headers": headers}) is accepted


# ---------------------------------------------------------------- pathsend


def test_pathsend_takes_content_length_from_the_file(data_file: Path) -> None:
    cycle, io = make_cycle()
    play(cycle, start((b"content-type", b"application/octet-stream")),
         {"type": "http.response.pathsend", "path": str(data_file)})
    head, _, body = bytes(io.out).partition(b"\r\n\r\n")
    assert head == HEAD_START + b"content-type: application/octet-stream\r\n" \
                                b"content-length: 10240"
    assert body == data_file.read_bytes()
    assert io.files == [(0, 10240)] and io.done and cycle.keep_alive
    assert cycle.sent_length == 10240


def test_pathsend_keeps_the_apps_matching_content_length(data_file: Path) -> None:
    cycle, io = make_cycle()
    play(cycle, start((b"content-length", b"10240")),
         {"type": "http.response.pathsend", "path": str(data_file)})
    assert bytes(io.out).count(b"content-length") == 1 and io.done and cycle.keep_alive


def test_pathsend_on_head_sends_the_headers_only(data_file: Path) -> None:
    cycle, io = make_cycle("HEAD")
    play(cycle, start(), {"type": "http.response.pathsend", "path": str(data_file)})
    assert bytes(io.out) == HEAD_START + b"content-length: 10240\r\n\r\n"
    assert io.files == [] and io.done and cycle.keep_alive


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_a_file_that_cannot_be_sent_leaves_the_response_unstarted(tmp_path: Path,
                                                                   where: str) -> None:
    """Nothing went out, so the connection can still answer 500."""
    cycle, io = make_cycle()
    path = tmp_path / "nope" if where == "missing" else tmp_path
    with pytest.raises((FileNotFoundError, ValueError)):
        play(cycle, start(), {"type": "http.response.pathsend", "path": str(path)})
    assert not cycle.response_started and io.out == b"" and not io.done


def test_pathsend_with_a_wrong_content_length_is_refused_before_a_byte(
        data_file: Path) -> None:
    cycle, io = make_cycle()
    with pytest.raises(RuntimeError, match="10240 bytes"):
        play(cycle, start((b"content-length", b"99")),
             {"type": "http.response.pathsend", "path": str(data_file)})
    assert not cycle.response_started and io.out == b""


def test_pathsend_is_not_mixed_with_a_body(data_file: Path) -> None:
    cycle, io = make_cycle()
    with pytest.raises(RuntimeError):
        play(cycle, start(), {"type": "http.response.body", "body": b"x", "more_body": True},
             {"type": "http.response.pathsend", "path": str(data_file)})
    with pytest.raises(RuntimeError):
        play(make_cycle()[0], {"type": "http.response.pathsend", "path": str(data_file)})


def test_pathsend_to_http_1_0(data_file: Path) -> None:
    cycle, io = make_cycle(version="1.0")
    play(cycle, start(), {"type": "http.response.pathsend", "path": str(data_file)})
    head = bytes(io.out).partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"content-length: 10240" in head and b"connection: close" in head
    assert b"transfer-encoding: chunked" not in head and io.done


# ---------------------------------------------------------------- zerocopysend


def test_zerocopysend_with_offset_and_count(data_file: Path) -> None:
    cycle, io = make_cycle()
    with open(data_file, "rb") as f:
        play(cycle, start(), {"type": "http.response.zerocopysend", "file": f,
                              "offset": 300, "count": 1000})
    head, _, body = bytes(io.out).partition(b"\r\n\r\n")
    assert head.endswith(b"content-length: 1000") and b"chunked" not in head
    assert body == data_file.read_bytes()[300:1300] and io.done


def test_zerocopysend_mixed_with_body_messages_is_chunked(data_file: Path) -> None:
    cycle, io = make_cycle()
    with open(data_file, "rb") as f:
        play(cycle, start(),
             {"type": "http.response.zerocopysend", "file": f.fileno(), "offset": 0,
              "count": 10, "more_body": True},
             {"type": "http.response.body", "body": b"<mid>", "more_body": True},
             {"type": "http.response.zerocopysend", "file": f, "offset": 10240 - 4,
              "more_body": False})
    data = bytes(range(256)) * 40
    assert bytes(io.out).partition(b"\r\n\r\n")[2] == (
        b"a\r\n" + data[:10] + b"\r\n5\r\n<mid>\r\n4\r\n" + data[-4:] + b"\r\n0\r\n\r\n")


def test_zerocopysend_from_the_files_position_moves_it(data_file: Path) -> None:
    cycle, io = make_cycle()
    with open(data_file, "rb", buffering=0) as f:
        f.seek(100)
        play(cycle, start((b"content-length", b"8")),
             {"type": "http.response.zerocopysend", "file": f, "count": 5, "more_body": True},
             {"type": "http.response.zerocopysend", "file": f, "count": 3})
        assert f.tell() == 108
    assert io.files == [(100, 5), (105, 3)]
    assert bytes(io.out).endswith(b"\r\n\r\n" + data_file.read_bytes()[100:108])


@pytest.mark.parametrize("offset, count", [(-1, 5), (0, 10241), (10000, 300), (0, -2)])
def test_zerocopysend_outside_the_file_is_refused(data_file: Path, offset: int,
                                                  count: int) -> None:
    cycle, io = make_cycle()
    with open(data_file, "rb") as f, pytest.raises(ValueError):
        play(cycle, start(), {"type": "http.response.zerocopysend", "file": f,
                              "offset": offset, "count": count})
    assert not cycle.response_started and io.out == b""


def test_zerocopysend_past_the_content_length_is_refused(data_file: Path) -> None:
    cycle, io = make_cycle()
    with open(data_file, "rb") as f, pytest.raises(RuntimeError, match="Content-Length"):
        play(cycle, start((b"content-length", b"4")),
             {"type": "http.response.zerocopysend", "file": f, "offset": 0, "count": 5})


def test_zerocopysend_on_head_sends_nothing_of_the_file(data_file: Path) -> None:
    cycle, io = make_cycle("HEAD")
    with open(data_file, "rb") as f:
        play(cycle, start(), {"type": "http.response.zerocopysend", "file": f,
                              "offset": 0, "count": 50})
    assert bytes(io.out) == HEAD_START + b"content-length: 50\r\n\r\n" and io.files == []


# ---------------------------------------------------------------- trailers


def trailer_messages() -> list[dict[str, Any]]:
    return [{"type": "http.response.body", "body": b"abc", "more_body": True},
            {"type": "http.response.body", "body": b"de"},
            {"type": "http.response.trailers", "headers": [(b"x-sum", b"1")],
             "more_trailers": True},
            {"type": "http.response.trailers", "headers": [(b"x-more", b"2")]}]


TE = [(b"host", b"h"), (b"te", b"trailers")]


def test_trailers_follow_the_last_chunk_when_the_client_asked() -> None:
    cycle, io = make_cycle(headers=TE)
    play(cycle, start((b"trailer", b"x-sum, x-more"), trailers=True), *trailer_messages())
    head, _, body = bytes(io.out).partition(b"\r\n\r\n")
    assert head.endswith(b"trailer: x-sum, x-more\r\ntransfer-encoding: chunked")
    assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n"
    assert io.done and cycle.keep_alive


def test_the_response_ends_only_with_the_last_trailers_message() -> None:
    cycle, io = make_cycle(headers=TE)
    play(cycle, start(trailers=True), *trailer_messages()[:3])
    assert not io.done and not cycle.response_complete
    assert not bytes(io.out).endswith(b"\r\n0\r\n\r\n")
    with pytest.raises(RuntimeError):  # a body after the last one
        play(cycle, {"type": "http.response.body", "body": b"late"})


def test_trailers_are_dropped_without_te_trailers() -> None:
    cycle, io = make_cycle(headers=[(b"host", b"h")])
    play(cycle, start(trailers=True), *trailer_messages())
    assert bytes(io.out).endswith(b"\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert b"x-sum" not in io.out and io.done and cycle.keep_alive


def test_trailers_replace_a_content_length_by_chunks() -> None:
    cycle, io = make_cycle(headers=TE)
    play(cycle, start((b"x-a", b"content-length: 5"), (b"content-length", b"5"),
                      trailers=True), *trailer_messages())
    head = bytes(io.out).partition(b"\r\n\r\n")[0]
    assert head == HEAD_START + b"x-a: content-length: 5\r\ntransfer-encoding: chunked"
    assert bytes(io.out).endswith(b"0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n")


def test_without_te_a_content_length_response_keeps_it() -> None:
    cycle, io = make_cycle()
    play(cycle, start((b"content-length", b"5"), trailers=True), *trailer_messages())
    assert bytes(io.out).endswith(b"content-length: 5\r\n\r\nabcde") and cycle.keep_alive


@pytest.mark.parametrize("name, value", [
    (b"x-sum", b"1\r\nx-injected: yes"), (b"x-sum", b"1\nx"), (b"x-s\r\num", b"1"),
    (b"x-sum", b"\x00"), (b"", b"1"), (b"content-length", b"0"),
    (b"transfer-encoding", b"chunked"), (b"Connection", b"close")])
def test_a_bad_trailer_is_refused_and_never_written(name: bytes, value: bytes) -> None:
    for headers in (TE, []):
        cycle, io = make_cycle(headers=headers)
        with pytest.raises(ValueError):
            play(cycle, start(trailers=True), {"type": "http.response.body", "body": b"x"},
                 {"type": "http.response.trailers", "headers": [(name, value)]})
        body = bytes(io.out).partition(b"\r\n\r\n")[2]
        assert not cycle.response_complete and name + b": " + value not in body
        assert not body.endswith(b"0\r\n\r\n")


def test_trailers_need_the_announcement_and_the_last_body() -> None:
    cycle, _ = make_cycle(headers=TE)
    with pytest.raises(RuntimeError):
        play(cycle, start(), {"type": "http.response.body", "body": b"x"},
             {"type": "http.response.trailers", "headers": []})
    cycle, _ = make_cycle(headers=TE)
    with pytest.raises(RuntimeError):
        play(cycle, start(trailers=True),
             {"type": "http.response.body", "body": b"x", "more_body": True},
             {"type": "http.response.trailers", "headers": []})


def test_trailers_after_a_file_body(data_file: Path) -> None:
    cycle, io = make_cycle(headers=TE)
    play(cycle, start(trailers=True), {"type": "http.response.pathsend", "path": str(data_file)},
         {"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})
    body = bytes(io.out).partition(b"\r\n\r\n")[2]
    assert body == b"2800\r\n" + data_file.read_bytes() + b"\r\n0\r\nx-sum: 1\r\n\r\n"


def test_no_trailers_and_no_chunks_for_http_1_0() -> None:
    cycle, io = make_cycle(version="1.0", headers=[(b"te", b"trailers")])
    play(cycle, start(trailers=True), *trailer_messages())
    head, _, body = bytes(io.out).partition(b"\r\n\r\n")
    assert body == b"abcde" and b"chunked" not in head and head.endswith(b"connection: close")
    assert not cycle.keep_alive  # the close delimits the body


def test_http_1_0_streaming_is_delimited_by_the_close() -> None:
    cycle, io = make_cycle(version="1.0")
    play(cycle, start(), {"type": "http.response.body", "body": b"ab", "more_body": True},
         {"type": "http.response.body", "body": b"c"})
    assert bytes(io.out) == HEAD_START + b"connection: close\r\n\r\nabc"
    assert not cycle.keep_alive and io.done


# ---------------------------------------------------------------- early hints


LINKS = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]
HINTS = (b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n"
         b"link: </app.js>; rel=preload; as=script\r\n\r\n")


@pytest.mark.parametrize("before_start", [True, False])
def test_early_hints_go_before_the_final_head(before_start: bool) -> None:
    cycle, io = make_cycle()
    hint = {"type": "http.response.early_hint", "links": LINKS}
    messages = [hint, start((b"content-length", b"2"))] if before_start \
        else [start((b"content-length", b"2")), hint]
    play(cycle, *messages, {"type": "http.response.body", "body": b"ok"})
    assert bytes(io.out) == HINTS + HEAD_START + b"content-length: 2\r\n\r\nok"


def test_early_hints_are_dropped_for_http_1_0_and_after_the_head() -> None:
    cycle, io = make_cycle(version="1.0")
    play(cycle, {"type": "http.response.early_hint", "links": LINKS},
         start((b"content-length", b"2")), {"type": "http.response.body", "body": b"ok"})
    assert b"103" not in io.out
    cycle, io = make_cycle()
    play(cycle, start(), {"type": "http.response.body", "body": b"a", "more_body": True},
         {"type": "http.response.early_hint", "links": LINKS},
         {"type": "http.response.body", "body": b""})
    assert b"103" not in io.out and io.done


def test_an_early_hint_with_cr_lf_is_refused_and_never_written() -> None:
    cycle, io = make_cycle()
    with pytest.raises(ValueError):
        play(cycle, start(), {"type": "http.response.early_hint",
                              "links": [LINKS[0], b"</x>\r\nset-cookie: evil=1"]})
    assert io.out == b"" and not cycle.response_started  # so the connection can answer 500
