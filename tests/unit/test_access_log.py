"""The access log formatter, as a pure function: atoms, JSON lines, escaping."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from workers.http.server import (DEFAULT_ACCESS_FORMAT, check_access_format,
                                 format_access)

WHEN = 1_700_000_000.0  # a fixed request time


def scope_for(path: str = "/items/7", raw_path: bytes | None = None, query: bytes = b"q=x",
              method: str = "GET", version: str = "1.1",
              headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http", "method": method, "path": path, "http_version": version,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": query,
        "headers": headers if headers is not None else [
            (b"host", b"example.com"), (b"user-agent", b"curl/8.5"),
            (b"referer", b"https://example.com/from"), (b"x-request-id", b"abc-123")],
    }


def line(scope: dict | None = None, fmt: str | None = None, **kwargs) -> str:
    values = dict(status=201, sent=512, duration=0.0123456, client=("10.0.0.9", 52110),
                  pid=4242, when=WHEN)
    values.update(kwargs)
    return format_access(scope or scope_for(), fmt=fmt, **values)


def test_default_format() -> None:
    assert line() == '10.0.0.9 - "GET /items/7?q=x HTTP/1.1" 201 512 0.012346s'
    assert DEFAULT_ACCESS_FORMAT == '%(h)s - "%(r)s" %(s)s %(b)s %(L)ss'


@pytest.mark.parametrize("atom, expected", [
    ("h", "10.0.0.9"), ("l", "-"), ("u", "-"),
    ("t", time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(WHEN))),
    ("r", "GET /items/7?q=x HTTP/1.1"), ("m", "GET"), ("U", "/items/7"), ("q", "q=x"),
    ("H", "HTTP/1.1"), ("s", "201"), ("B", "512"), ("b", "512"),
    ("f", "https://example.com/from"), ("a", "curl/8.5"),
    ("T", "0"), ("M", "12"), ("D", "12345"), ("L", "0.012346"), ("p", "<4242>"),
    ("{X-Request-Id}i", "abc-123"), ("{x-request-id}i", "abc-123"), ("{missing}i", "-"),
    ("{content-type}o", "-"), ("{PATH}e", "-"), ("nonsense", "-"),
])
def test_each_gunicorn_atom(atom: str, expected: str) -> None:
    assert line(fmt=f"%({atom})s") == expected


def test_durations_in_each_unit() -> None:
    fmt = "%(T)s %(M)s %(D)s %(L)s"
    assert line(fmt=fmt, duration=2.5) == "2 2500 2500000 2.500000"
    assert line(fmt=fmt, duration=0.0) == "0 0 0 0.000000"


def test_numeric_atoms_take_numeric_conversions() -> None:
    assert line(fmt="%(s)03d %(B)08d %(D)d") == "201 00000512 12345"


def test_request_line_keeps_the_raw_target_and_omits_an_empty_query() -> None:
    scope = scope_for(path="/a b", raw_path=b"/a%20b", query=b"")
    assert line(scope, fmt="%(r)s|%(U)s|%(q)s") == "GET /a%20b HTTP/1.1|/a b|"
    head = scope_for(method="HEAD", version="1.0", query=b"")
    assert line(head, fmt="%(r)s") == "HEAD /items/7 HTTP/1.0"


def test_missing_headers_and_client_are_dashes() -> None:
    scope = scope_for(headers=[])
    assert line(scope, fmt="%(h)s %(a)s %(f)s %(u)s", client=None) == "- - - -"


def test_unix_socket_client() -> None:
    assert line(fmt="%(h)s", client=("/run/arbiter.sock", None)) == "/run/arbiter.sock"


@pytest.mark.parametrize("authorization, user", [
    (b"Basic " + base64.b64encode(b"alice:secret"), "alice"),
    (b"basic " + base64.b64encode(b"bob:"), "bob"),
    (b"Basic " + base64.b64encode(b"nocolon"), "-"),
    (b"Basic not*base64", "-"),
    (b"Bearer abc.def", "-"),
])
def test_user_atom_from_basic_auth(authorization: bytes, user: str) -> None:
    scope = scope_for(headers=[(b"authorization", authorization)])
    assert line(scope, fmt="%(u)s") == user


def test_json_lines() -> None:
    record = json.loads(line(as_json=True))
    assert record == {
        "h": "10.0.0.9", "l": "-", "u": "-",
        "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(WHEN)),
        "r": "GET /items/7?q=x HTTP/1.1", "m": "GET", "U": "/items/7", "q": "q=x",
        "H": "HTTP/1.1", "s": 201, "B": 512, "b": "512", "f": "https://example.com/from",
        "a": "curl/8.5", "T": 0, "M": 12, "D": 12345, "L": "0.012346", "p": "<4242>",
    }


HOSTILE_AGENT = b'x"\r\n10.6.6.6 - "GET /admin HTTP/1.1" 200 0 0.1s\x1b[2J\x85'


def hostile_scope() -> dict:
    return scope_for(path="/p\n10.6.6.6 - \"GET /forged HTTP/1.1\" 200\u2028\x00",
                     raw_path=b"/p%0A10.6.6.6", query=b"a=\x7f\xff",
                     headers=[(b"user-agent", HOSTILE_AGENT),
                              (b"referer", b"back\\slash\t")])


def test_control_characters_cannot_inject_a_log_line() -> None:
    fmt = '%(h)s "%(r)s" %(U)s %(q)s "%(a)s" "%(f)s" %({user-agent}i)s'
    text = line(hostile_scope(), fmt=fmt)
    assert text.isprintable(), text
    assert "\n" not in text and "\r" not in text and "\u2028" not in text
    assert '\\"\\r\\n10.6.6.6 - \\"GET /admin' in text
    assert "\\x1b[2J\\x85" in text
    assert "/p\\n10.6.6.6 - \\\"GET /forged HTTP/1.1\\\" 200\\u2028\\x00" in text
    assert "a=\\x7f\xff" in text  # printable latin-1 stays as it is
    assert '"back\\\\slash\\t"' in text
    # every quote the request brought is escaped: the quoted fields still parse
    assert text.count('"') - text.count('\\"') == 6


def test_json_lines_escape_too() -> None:
    text = line(hostile_scope(), as_json=True)
    assert "\n" not in text and "\r" not in text and text.isascii()
    record = json.loads(text)
    assert record["a"] == HOSTILE_AGENT.decode("latin-1")  # lossless once decoded
    assert record["U"].startswith("/p\n10.6.6.6")


def test_a_broken_format_still_logs_the_request(caplog) -> None:
    assert line(fmt="%(h)s %(s)d %(a)d") == line()  # %d on text: fall back to default
    with caplog.at_level(logging.ERROR, logger="arbiter.error"):
        assert check_access_format("%(h)s %(r") is None
    assert "--access-log-format" in caplog.text
    assert check_access_format('%(h)s "%(r)s"') == '%(h)s "%(r)s"'
    assert check_access_format(None) is None
