"""Proxy headers and the PROXY protocol against a real server, over raw sockets."""

from __future__ import annotations

import json
import socket
import struct

import pytest

pytestmark = pytest.mark.slow


def request(server, raw: bytes) -> tuple[int, bytes]:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return int(head.split()[1]), body


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            return out
        out, data = out + data[:size], data[size + 2:]


def scope_of(server, extra: bytes = b"", prefix: bytes = b"") -> dict:
    status, body = request(server, prefix + b"GET /scope HTTP/1.1\r\nHost: app.test\r\n" + extra
                           + b"Connection: close\r\n\r\n")
    assert status == 200, body
    return json.loads(body)


@pytest.fixture(params=["h11", "httptools"])
def proxied(request, arbiter_process):
    return arbiter_process(["basic:app", "--http", request.param, "--proxy-headers",
                            "--proxy-protocol", "--forwarded-allow-ips", "127.0.0.1"]).wait_ready()


def test_forwarded_headers_from_a_trusted_peer_set_client_and_scheme(proxied) -> None:
    scope = scope_of(proxied, b"X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n"
                              b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: example.com\r\n")
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"
    assert scope["server"] == ["example.com", 443]
    scope = scope_of(proxied, b'Forwarded: for="[2001:db8::1]:4711";proto=https\r\n')
    assert scope["client"] == ["2001:db8::1", 4711]
    assert scope["scheme"] == "https"


def test_untrusted_peer_cannot_spoof(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--proxy-headers",
                              "--forwarded-allow-ips", "10.0.0.1"]).wait_ready()
    scope = scope_of(server, b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_proxy_protocol_v1_and_v2_name_the_real_client(proxied) -> None:
    scope = scope_of(proxied, prefix=b"PROXY TCP4 198.51.100.9 10.0.0.5 40000 443\r\n")
    assert scope["client"] == ["198.51.100.9", 40000]
    assert scope["server"] == ["10.0.0.5", 443]
    v2 = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", 12)
          + socket.inet_aton("192.0.2.44") + socket.inet_aton("10.0.0.5")
          + struct.pack("!HH", 5555, 8443))
    scope = scope_of(proxied, prefix=v2)
    assert scope["client"] == ["192.0.2.44", 5555]
    # a trusted peer may also speak plain HTTP (health checks)
    assert scope_of(proxied)["client"][0] == "127.0.0.1"


def test_malformed_proxy_header_is_refused_and_the_worker_survives(proxied) -> None:
    status, _ = request(proxied, b"PROXY TCP4 999.1.1.1 10.0.0.5 1 2\r\nGET / HTTP/1.1\r\n\r\n")
    assert status == 400
    assert scope_of(proxied)["client"][0] == "127.0.0.1"


def test_proxy_protocol_from_an_untrusted_peer_is_not_believed(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--proxy-protocol",
                              "--forwarded-allow-ips", "10.0.0.1"]).wait_ready()
    status, _ = request(server, b"PROXY TCP4 198.51.100.9 10.0.0.5 40000 443\r\n"
                                b"GET /scope HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == 400
