"""A PROXY protocol header in front of TLS, as an NLB with TLS passthrough or
HAProxy ``send-proxy-v2`` sends it: the header on the raw TCP connection, then
the handshake (the ssl module's client wraps the socket after the header)."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time

import pytest

from tests.integration import test_tls
from tests.integration.test_http_limits import wait_closed
from tests.integration.test_tls import client_context, start_tls

pytestmark = pytest.mark.slow

LOOPS = ["uvloop", "asyncio"]
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
certs = test_tls.certs  # the same fixture: certificates made at test time


def v2_tcp4(client: tuple[str, int], server: tuple[str, int], tlvs: bytes = b"") -> bytes:
    addresses = (socket.inet_aton(client[0]) + socket.inet_aton(server[0])
                 + struct.pack("!HH", client[1], server[1]))
    return (V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses) + len(tlvs))
            + addresses + tlvs)


def v2_local() -> bytes:
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


def start(arbiter_process, certs, *extra: str, loop: str = "uvloop", http: str = "httptools",
          trust: str = "127.0.0.1"):
    return start_tls(arbiter_process, certs, "--proxy-protocol", "--forwarded-allow-ips", trust,
                     "--workers", "1", *extra, loop=loop, http=http).wait_ready()


def read_one_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the body"
        body += chunk
    return int(head.split()[1]), body


def get_over_tls(server, header: bytes, path: str, context: ssl.SSLContext):
    """Send ``header`` in the clear, then TLS, then ``GET path``: (status, body, TLS socket
    facts as the client saw them)."""
    raw = socket.create_connection(server.address, timeout=10)
    raw.sendall(header)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    % path.encode())
        status, body = read_one_response(tls)
        facts = {"version": tls.version(), "cipher": tls.cipher()[0]}
    return status, body, facts


def scope_over_tls(server, header: bytes, context: ssl.SSLContext) -> tuple[dict, dict]:
    status, body, facts = get_over_tls(server, header, "/scope", context)
    assert status == 200, body
    return json.loads(body), facts


def pid_over_tls(server, context: ssl.SSLContext, header: bytes = b"") -> int:
    status, body, _ = get_over_tls(server, header, "/pid", context)
    assert status == 200, body
    return int(body)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_proxy_v2_then_tls_names_the_real_client(arbiter_process, certs, loop, http) -> None:
    server = start(arbiter_process, certs, "--ssl-cert-reqs", "optional",
                   "--ssl-ca-certs", str(certs / "ca.pem"), loop=loop, http=http)
    context = client_context(certs, with_cert=True)
    # an NLB adds TLVs (its VPC endpoint id): they must not be taken for TLS bytes
    tlv = bytes([0xEA]) + struct.pack("!H", 9) + b"\x01vpce-123"
    scope, facts = scope_over_tls(server, v2_tcp4(("192.0.2.44", 5555), ("10.0.0.5", 8443),
                                                  tlv), context)
    assert scope["client"] == ["192.0.2.44", 5555]
    assert scope["server"] == ["10.0.0.5", 8443]
    assert scope["scheme"] == "https"
    tls = scope["tls"]
    assert tls["server_cert"] == (certs / "server.pem").read_text()
    assert tls["client_cert_chain"] == [(certs / "client.pem").read_text()]
    assert tls["client_cert_name"] == "CN=client one,O=arbiter tests"
    assert tls["tls_version"] == {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}[facts["version"]]
    iana = {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}
    assert tls["cipher_suite"] == iana[facts["cipher"]]
    pid = pid_over_tls(server, context, v2_tcp4(("192.0.2.45", 1), ("10.0.0.5", 8443)))
    assert pid_over_tls(server, context, v2_tcp4(("192.0.2.46", 2), ("10.0.0.5", 8443))) == pid
    assert "Traceback" not in server.stderr and "ERROR" not in server.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_proxy_v1_then_tls_and_a_trusted_peer_without_a_header(arbiter_process, certs,
                                                              loop) -> None:
    server = start(arbiter_process, certs, loop=loop)
    context = client_context(certs)
    scope, _ = scope_over_tls(server, b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n",
                              context)
    assert scope["client"] == ["2001:db8::7", 40000]
    assert scope["server"] == ["2001:db8::1", 443]
    assert scope["scheme"] == "https" and scope["tls"]["tls_version"] is not None
    # a health check from the balancer itself: plain TLS, no header, the socket's peer
    scope, _ = scope_over_tls(server, b"", context)
    assert scope["client"][0] == "127.0.0.1" and scope["scheme"] == "https"
    # v2 LOCAL (the balancer's own connection) keeps the socket's addresses too
    scope, _ = scope_over_tls(server, v2_local(), context)
    assert scope["client"][0] == "127.0.0.1"


@pytest.mark.parametrize("loop", LOOPS)
def test_half_a_proxy_header_is_closed_by_the_header_timeout(arbiter_process, certs,
                                                             loop) -> None:
    server = start(arbiter_process, certs, "--timeout-header", "1", loop=loop)
    context = client_context(certs)
    pid = pid_over_tls(server, context)
    header = v2_tcp4(("192.0.2.44", 5555), ("10.0.0.5", 8443))
    for stalled in (header[:10], b"PROXY TCP4 192.0.2.44 10.0.", header):  # the last: no TLS
        with socket.create_connection(server.address, timeout=10) as sock:
            sent = time.monotonic()
            sock.sendall(stalled)
            closed_at, data = wait_closed(sock, timeout=15)
        assert 0.7 <= closed_at - sent < 10, (stalled, closed_at - sent)
        assert data == b""  # nothing in the clear to a peer that may be speaking TLS
    assert pid_over_tls(server, context, header) == pid
    assert "Traceback" not in server.stderr and "ERROR" not in server.stderr


def test_one_deadline_bounds_the_header_and_the_handshake(arbiter_process, certs) -> None:
    server = start(arbiter_process, certs, "--timeout-header", "2")
    header = v2_tcp4(("192.0.2.44", 5555), ("10.0.0.5", 8443))
    with socket.create_connection(server.address, timeout=10) as sock:
        accepted = time.monotonic()
        sock.sendall(header[:8])
        time.sleep(1.5)  # deliberate (noqa: sleep) (a slow balancer: most of the budget goes on the header)
        sock.sendall(header[8:])  # then no ClientHello
        closed_at, _ = wait_closed(sock, timeout=15)
    # one deadline from the accept: ~2 s; a fresh one for the handshake would give >= 3.5 s
    assert 1.5 <= closed_at - accepted < 3.0, closed_at - accepted


@pytest.mark.parametrize("loop", LOOPS)
def test_garbage_instead_of_a_proxy_header_is_refused(arbiter_process, certs, loop) -> None:
    server = start(arbiter_process, certs, loop=loop)
    context = client_context(certs)
    pid = pid_over_tls(server, context)
    for garbage in (b"PROXY TCP4 999.1.1.1 10.0.0.5 1 2\r\n", b"PROXY GARBAGE\r\n",
                    V2_SIGNATURE + b"\x99\x11\x00\x0c"):
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(garbage)
            _, data = wait_closed(sock, timeout=10)
        assert data.startswith(b"HTTP/1.1 400 "), (garbage, data)  # as without TLS
        assert b"Invalid PROXY protocol header" in data
    # plain HTTP where a header or TLS must come: not served as a request
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: a\r\n\r\n")
        _, data = wait_closed(sock, timeout=10)
    assert b"200" not in data.split(b"\r\n", 1)[0]
    # neither garbage took the worker down
    assert pid_over_tls(server, context, v2_tcp4(("192.0.2.44", 5555), ("10.0.0.5", 443))) == pid
    assert "Traceback" not in server.stderr and "ERROR" not in server.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_a_proxy_header_from_an_untrusted_peer_is_not_believed(arbiter_process, certs,
                                                               loop) -> None:
    server = start(arbiter_process, certs, loop=loop, trust="10.0.0.1")
    context = client_context(certs)
    pid = pid_over_tls(server, context)  # plain TLS works, as from anyone
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get_over_tls(server, v2_tcp4(("192.0.2.44", 5555), ("10.0.0.5", 443)), "/scope",
                     context)
    scope, _ = scope_over_tls(server, b"", context)
    assert scope["client"][0] == "127.0.0.1"
    assert pid_over_tls(server, context) == pid
    assert "Traceback" not in server.stderr and "ERROR" not in server.stderr
