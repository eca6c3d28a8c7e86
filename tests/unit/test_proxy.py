"""workers.http.proxy: trusted peers, forwarding headers and the PROXY protocol (pure)."""

from __future__ import annotations

import copy
import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.config import resolve
from workers.http.proxy import TrustedPeers, apply_proxy_headers
from workers.http.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyProtocolError,
    ProxyProtocolParser,
    ProxyResult,
    could_start_header,
)

# =============================================================== TrustedPeers


@pytest.mark.parametrize("spec, client, expected", [
    # exact IPv4
    (["127.0.0.1"], ("127.0.0.1", 5000), True),
    (["127.0.0.1"], ("127.0.0.2", 5000), False),
    (["127.0.0.1"], ("::1", 5000), False),
    # IPv4 CIDR, host bits allowed in the spec
    (["10.0.0.0/8"], ("10.255.1.2", 1), True),
    (["10.1.2.3/8"], ("10.9.9.9", 1), True),
    (["10.0.0.0/8"], ("11.0.0.1", 1), False),
    (["192.168.1.0/24"], ("192.168.1.254", 1), True),
    (["192.168.1.0/24"], ("192.168.2.1", 1), False),
    # IPv6, exact and CIDR, with brackets or zone on the peer
    (["::1"], ("::1", 1), True),
    (["::1"], ("0:0:0:0:0:0:0:1", 1), True),
    (["::1"], ("[::1]", 1), True),
    (["2001:db8::/32"], ("2001:db8:1::5", 1), True),
    (["2001:db8::/32"], ("2001:db9::5", 1), False),
    (["fe80::/10"], ("fe80::1%eth0", 1), True),
    # IPv4-mapped IPv6 peers match IPv4 rules
    (["127.0.0.1"], ("::ffff:127.0.0.1", 1), True),
    (["10.0.0.0/8"], ("::ffff:10.1.1.1", 1), True),
    (["10.0.0.0/8"], ("::ffff:11.1.1.1", 1), False),
    # unix peers: None, (path, None), ("", None)
    (["unix"], None, True),
    (["unix"], ("/run/app.sock", None), True),
    (["unix"], ("", None), True),
    (["UNIX"], None, True),
    (["127.0.0.1"], None, False),
    (["127.0.0.1"], ("/run/app.sock", None), False),
    (["unix"], ("127.0.0.1", 80), False),
    # everything
    (["*"], ("203.0.113.9", 1), True),
    (["*"], ("2001:db8::1", 1), True),
    (["*"], None, True),
    (["*"], ("/run/app.sock", None), True),
    # empty spec trusts nothing
    ([], ("127.0.0.1", 1), False),
    ([], None, False),
    # comma-separated strings, blanks skipped
    ("127.0.0.1, 10.0.0.0/8", ("10.3.3.3", 1), True),
    (["127.0.0.1,unix", " "], None, True),
])
def test_trusted_contains(spec: Any, client: Any, expected: bool) -> None:
    trusted = TrustedPeers.parse(spec)
    assert trusted.contains(client) is expected
    assert (client in trusted) is expected


@pytest.mark.parametrize("client, expected", [
    (("127.0.0.1", 1), True),
    (("::1", 1), True),
    (("::ffff:127.0.0.1", 1), True),
    (None, True),
    (("/tmp/s", None), True),
    (("127.0.0.2", 1), False),
    (("192.0.2.1", 1), False),
    (("2001:db8::1", 1), False),
])
def test_default_trusted_peers_are_loopback_and_unix(client: Any, expected: bool) -> None:
    # The default a worker really gets: resolved from settings, parsed as server.py does.
    trusted = TrustedPeers.parse(resolve({}, {}).worker().http.forwarded_allow_ips)
    assert trusted.contains(client) is expected


@pytest.mark.parametrize("client", [42, "127.0.0.1", (), (None, 1), [b"127.0.0.1", 1]])
def test_trusted_contains_rejects_odd_values(client: Any) -> None:
    assert TrustedPeers.parse(["127.0.0.1", "unix"]).contains(client) is False
    assert TrustedPeers.parse(["*"]).contains(client) is True


@pytest.mark.parametrize("entry", [
    "localhost", "10.0.0.0/33", "1.2.3", "300.1.1.1", "::1::2", "unixx", "**",
    "fe80::1%eth0", "10.0.0.0/8/8", "01.2.3.4",
])
def test_trusted_invalid_entry_is_named(entry: str) -> None:
    with pytest.raises(ValueError) as info:
        TrustedPeers.parse(["127.0.0.1", entry])
    assert repr(entry) in str(info.value)


def test_trusted_invalid_entry_in_comma_string_is_named() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        TrustedPeers.parse("127.0.0.1, nope")


def test_trusted_non_string_entry() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        TrustedPeers.parse([1234])  # type: ignore[list-item]


@pytest.mark.parametrize("host, expected", [
    ("10.1.1.1", True), ("11.1.1.1", False), ("unknown", False), ("_hidden", False), ("", False),
])
def test_trusted_contains_host(host: str, expected: bool) -> None:
    assert TrustedPeers.parse(["10.0.0.0/8", "unix"]).contains_host(host) is expected


def test_trusted_equality_and_repr() -> None:
    a = TrustedPeers.parse(["127.0.0.1", "10.0.0.0/8"])
    b = TrustedPeers.parse("10.0.0.0/8,127.0.0.1")
    assert a == b and hash(a) == hash(b)
    assert a != TrustedPeers.parse(["127.0.0.1"])
    assert "10.0.0.0/8" in repr(a)


# ============================================================ proxy headers

PROXY = ("127.0.0.1", 40000)
LOCAL_SERVER = ("127.0.0.1", 8000)
TRUST = TrustedPeers.parse(["127.0.0.1", "10.0.0.0/8", "unix"])


def make_scope(headers: list[tuple[bytes, bytes]], *, type: str = "http",
               client: Any = PROXY, scheme: str | None = None,
               server: Any = LOCAL_SERVER) -> dict[str, Any]:
    if scheme is None:
        scheme = "ws" if type == "websocket" else "http"
    return {"type": type, "client": client, "scheme": scheme, "server": server,
            "headers": list(headers), "path": "/"}


def h(name: str, value: str) -> tuple[bytes, bytes]:
    return (name.encode("latin-1"), value.encode("latin-1"))


def applied(headers: list[tuple[bytes, bytes]], **kwargs: Any) -> dict[str, Any]:
    scope = make_scope(headers, **kwargs)
    apply_proxy_headers(scope, TRUST)
    return scope


def outcome(scope: dict[str, Any]) -> tuple[Any, str, Any]:
    return scope["client"], scope["scheme"], scope["server"]


UNCHANGED = (PROXY, "http", LOCAL_SERVER)


@pytest.mark.parametrize("headers, expected", [
    # ---- X-Forwarded-For
    ([h("x-forwarded-for", "203.0.113.7")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    ([h("x-forwarded-for", " 203.0.113.7 ")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    ([h("x-forwarded-for", "2001:db8::7")], (("2001:db8::7", 0), "http", LOCAL_SERVER)),
    ([h("x-forwarded-for", "2001:DB8:0::7")], (("2001:db8::7", 0), "http", LOCAL_SERVER)),
    ([h("x-forwarded-for", "203.0.113.7:5555")], (("203.0.113.7", 5555), "http", LOCAL_SERVER)),
    ([h("x-forwarded-for", "[2001:db8::7]:443")], (("2001:db8::7", 443), "http", LOCAL_SERVER)),
    ([h("x-forwarded-for", "[2001:db8::7]")], (("2001:db8::7", 0), "http", LOCAL_SERVER)),
    # chain: right-most untrusted wins, trusted proxies on the right are skipped
    ([h("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.2, 10.0.0.1")],
     (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    # all trusted -> left-most
    ([h("x-forwarded-for", "10.0.0.3, 10.0.0.2, 127.0.0.1")],
     (("10.0.0.3", 0), "http", LOCAL_SERVER)),
    # several headers are joined with commas, in order
    ([h("x-forwarded-for", "198.51.100.1"), h("x-forwarded-for", "203.0.113.7, 10.0.0.1")],
     (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    # empty members are ignored
    ([h("x-forwarded-for", "203.0.113.7,, ,10.0.0.1,")],
     (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    # names are matched case-insensitively even if an app hands uppercase
    ([(b"X-Forwarded-For", b"203.0.113.7")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    # ---- X-Forwarded-Proto
    ([h("x-forwarded-proto", "https")], (PROXY, "https", LOCAL_SERVER)),
    ([h("x-forwarded-proto", "HTTPS")], (PROXY, "https", LOCAL_SERVER)),
    ([h("x-forwarded-proto", "wss")], (PROXY, "https", LOCAL_SERVER)),
    ([h("x-forwarded-proto", "ws")], (PROXY, "http", LOCAL_SERVER)),
    ([h("x-forwarded-proto", "http")], (PROXY, "http", LOCAL_SERVER)),
    # one value per hop, aligned with X-Forwarded-For
    ([h("x-forwarded-for", "203.0.113.7, 10.0.0.1"), h("x-forwarded-proto", "https, http")],
     (("203.0.113.7", 0), "https", LOCAL_SERVER)),
    ([h("x-forwarded-for", "203.0.113.7, 198.51.100.9"), h("x-forwarded-proto", "https, http")],
     (("198.51.100.9", 0), "http", LOCAL_SERVER)),
    # lengths differ -> right-most (the nearest proxy's value)
    ([h("x-forwarded-for", "203.0.113.7"), h("x-forwarded-proto", "http, https")],
     (("203.0.113.7", 0), "https", LOCAL_SERVER)),
    # ---- X-Forwarded-Host / -Port
    ([h("x-forwarded-host", "example.com")], (PROXY, "http", ("example.com", 80))),
    ([h("x-forwarded-host", "example.com"), h("x-forwarded-proto", "https")],
     (PROXY, "https", ("example.com", 443))),
    ([h("x-forwarded-host", "example.com:8443"), h("x-forwarded-proto", "https")],
     (PROXY, "https", ("example.com", 8443))),
    ([h("x-forwarded-host", "example.com:8443"), h("x-forwarded-port", "9443")],
     (PROXY, "http", ("example.com", 9443))),
    ([h("x-forwarded-host", "[2001:db8::1]:8080")], (PROXY, "http", ("2001:db8::1", 8080))),
    ([h("x-forwarded-host", "[2001:db8::1]")], (PROXY, "http", ("2001:db8::1", 80))),
    ([h("x-forwarded-host", "a.example, b.example")], (PROXY, "http", ("b.example", 80))),
    ([h("x-forwarded-port", "8080")], (PROXY, "http", ("127.0.0.1", 8080))),
    ([h("x-forwarded-proto", "https"), h("x-forwarded-port", "443")],
     (PROXY, "https", ("127.0.0.1", 443))),
    # everything at once
    ([h("x-forwarded-for", "203.0.113.7"), h("x-forwarded-proto", "https"),
      h("x-forwarded-host", "shop.example"), h("x-forwarded-port", "8443")],
     (("203.0.113.7", 0), "https", ("shop.example", 8443))),
    # unrelated headers only
    ([h("host", "example.com"), h("x-real-ip", "203.0.113.7")], UNCHANGED),
    ([], UNCHANGED),
])
def test_x_forwarded(headers: list[tuple[bytes, bytes]], expected: tuple[Any, str, Any]) -> None:
    assert outcome(applied(headers)) == expected


@pytest.mark.parametrize("headers, expected", [
    ([h("forwarded", "for=203.0.113.7")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    ([h("forwarded", "For=203.0.113.7")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    ([h("forwarded", 'for="203.0.113.7:4711"')], (("203.0.113.7", 4711), "http", LOCAL_SERVER)),
    ([h("forwarded", 'for="[2001:db8:cafe::17]:4711"')],
     (("2001:db8:cafe::17", 4711), "http", LOCAL_SERVER)),
    ([h("forwarded", 'for="[2001:db8:cafe::17]"')],
     (("2001:db8:cafe::17", 0), "http", LOCAL_SERVER)),
    ([h("forwarded", 'for="203.0.113.7:_abc"')], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    ([h("forwarded", 'for="\\2\\03.0.113.7"')], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    ([h("forwarded", "for=203.0.113.7;proto=https;host=example.com")],
     (("203.0.113.7", 0), "https", ("example.com", 443))),
    ([h("forwarded", 'for=203.0.113.7; proto=https; host="example.com:8443"')],
     (("203.0.113.7", 0), "https", ("example.com", 8443))),
    ([h("forwarded", "proto=https;;by=10.0.0.1;")], (PROXY, "https", LOCAL_SERVER)),
    ([h("forwarded", 'host="[2001:db8::1]:81"')], (PROXY, "http", ("2001:db8::1", 81))),
    # unknown / obfuscated for=: client kept, the rest of the element applies
    ([h("forwarded", "for=unknown;proto=https")], (PROXY, "https", LOCAL_SERVER)),
    ([h("forwarded", "for=_hidden;proto=https;host=a.example")],
     (PROXY, "https", ("a.example", 443))),
    # chain: walk from the right over trusted proxies
    ([h("forwarded", "for=198.51.100.1;proto=http, for=203.0.113.7;proto=https, "
                     "for=10.0.0.2;proto=http, for=127.0.0.1;proto=http")],
     (("203.0.113.7", 0), "https", LOCAL_SERVER)),
    # all trusted -> left-most element
    ([h("forwarded", "for=10.0.0.9;proto=https, for=10.0.0.2")],
     (("10.0.0.9", 0), "https", LOCAL_SERVER)),
    # element without for= stops the walk (client unknown) but still gives proto
    ([h("forwarded", "for=203.0.113.7, proto=https")], (PROXY, "https", LOCAL_SERVER)),
    # quoted commas and semicolons do not split
    ([h("forwarded", 'for=203.0.113.7;host="a.example";ext="x,y;z"')],
     (("203.0.113.7", 0), "http", ("a.example", 80))),
    # several headers joined
    ([h("forwarded", "for=203.0.113.7"), h("forwarded", "for=10.0.0.1")],
     (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    # empty list members ignored
    ([h("forwarded", " , for=203.0.113.7 , ")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    # Forwarded takes precedence over X-Forwarded-*
    ([h("x-forwarded-for", "198.51.100.1"), h("x-forwarded-proto", "https"),
      h("forwarded", "for=203.0.113.7")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    # a blank Forwarded is absent: X-Forwarded-* apply
    ([h("forwarded", " , "), h("x-forwarded-for", "198.51.100.1")],
     (("198.51.100.1", 0), "http", LOCAL_SERVER)),
])
def test_forwarded(headers: list[tuple[bytes, bytes]], expected: tuple[Any, str, Any]) -> None:
    assert outcome(applied(headers)) == expected


@pytest.mark.parametrize("headers, expected", [
    # ---- malformed X-Forwarded-For entries: chosen entry not an IP -> client kept
    ([h("x-forwarded-for", "unknown")], UNCHANGED),
    ([h("x-forwarded-for", "not-an-ip")], UNCHANGED),
    ([h("x-forwarded-for", "300.1.1.1")], UNCHANGED),
    ([h("x-forwarded-for", "1.2.3.4:99999")], UNCHANGED),
    ([h("x-forwarded-for", "1.2.3.4:")], UNCHANGED),
    ([h("x-forwarded-for", "[1.2.3.4]:80")], UNCHANGED),
    ([h("x-forwarded-for", "[2001:db8::1")], UNCHANGED),
    ([h("x-forwarded-for", "[2001:db8::1]x")], UNCHANGED),
    ([h("x-forwarded-for", "fe80::1%eth0")], UNCHANGED),
    ([h("x-forwarded-for", "")], UNCHANGED),
    # garbage on the right blocks the walk: the left part is not believed
    ([h("x-forwarded-for", "203.0.113.7, garbage, 10.0.0.1")], UNCHANGED),
    ([h("x-forwarded-for", "203.0.113.7\u00e9")], UNCHANGED),
    # ---- malformed proto/host/port
    ([h("x-forwarded-proto", "ftp")], UNCHANGED),
    ([h("x-forwarded-proto", "https;")], UNCHANGED),
    ([h("x-forwarded-proto", "")], UNCHANGED),
    ([h("x-forwarded-host", "exa mple.com")], UNCHANGED),
    ([h("x-forwarded-host", "example.com:http")], UNCHANGED),
    ([h("x-forwarded-host", "example.com:70000")], UNCHANGED),
    ([h("x-forwarded-host", "a/b")], UNCHANGED),
    ([h("x-forwarded-host", "[nothex]")], UNCHANGED),
    ([h("x-forwarded-port", "http")], UNCHANGED),
    ([h("x-forwarded-port", "-1")], UNCHANGED),
    ([h("x-forwarded-port", "65536")], UNCHANGED),
    # bad port beside a good host: host kept, port from the host/default
    ([h("x-forwarded-host", "example.com:81"), h("x-forwarded-port", "x")],
     (PROXY, "http", ("example.com", 81))),
    # ---- malformed Forwarded
    ([h("forwarded", "for")], UNCHANGED),
    ([h("forwarded", "for=")], UNCHANGED),
    ([h("forwarded", 'for="203.0.113.7')], UNCHANGED),
    ([h("forwarded", "for=203.0.113.7 junk")], UNCHANGED),
    ([h("forwarded", "for=203.0.113.7;for=198.51.100.1")], UNCHANGED),
    ([h("forwarded", "for = 203.0.113.7")], UNCHANGED),
    ([h("forwarded", "for=[2001:db8::1]")], UNCHANGED),  # brackets need quoting
    ([h("forwarded", "for=203.0.113.7;proto=gopher")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    ([h("forwarded", "for=203.0.113.7;host=\"a b\"")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
    # malformed element on the right stops the walk: nothing applied
    ([h("forwarded", "for=203.0.113.7;proto=https, for")], UNCHANGED),
    # a malformed element on the left (client-controlled) doesn't hide the right
    ([h("forwarded", 'for="oops, for=203.0.113.7')], UNCHANGED),
    ([h("forwarded", "for=!!!;x, for=203.0.113.7")], (("203.0.113.7", 0), "http", LOCAL_SERVER)),
])
def test_malformed_values_are_ignored(headers: list[tuple[bytes, bytes]],
                                      expected: tuple[Any, str, Any]) -> None:
    assert outcome(applied(headers)) == expected


@pytest.mark.parametrize("headers, expected", [
    # the attacker prepends a fake address; the trusted proxy appends the real one
    ([h("x-forwarded-for", "1.1.1.1, 203.0.113.7")], ("203.0.113.7", 0)),
    # the attacker claims to be a trusted proxy on the left: still the real client
    ([h("x-forwarded-for", "10.0.0.5, 203.0.113.7")], ("203.0.113.7", 0)),
    # a second attacker header is joined before the proxy's one
    ([h("x-forwarded-for", "127.0.0.1"), h("x-forwarded-for", "203.0.113.7")],
     ("203.0.113.7", 0)),
    ([h("forwarded", "for=1.1.1.1, for=203.0.113.7")], ("203.0.113.7", 0)),
    ([h("forwarded", "for=127.0.0.1, for=203.0.113.7")], ("203.0.113.7", 0)),
    ([h("forwarded", 'for="[::1]", for=203.0.113.7;proto=http')], ("203.0.113.7", 0)),
])
def test_spoofed_chains(headers: list[tuple[bytes, bytes]], expected: Any) -> None:
    assert applied(headers)["client"] == expected


@pytest.mark.parametrize("client", [
    ("203.0.113.50", 1234),
    ("::1", 1234),          # ::1 is not in TRUST
    ("11.0.0.1", 1234),
])
@pytest.mark.parametrize("headers", [
    [h("x-forwarded-for", "198.51.100.1")],
    [h("x-forwarded-proto", "https"), h("x-forwarded-host", "evil.example"),
     h("x-forwarded-port", "1")],
    [h("forwarded", "for=198.51.100.1;proto=https;host=evil.example")],
])
def test_untrusted_peer_leaves_scope_untouched(client: Any, headers: list[Any]) -> None:
    scope = make_scope(headers, client=client)
    before = copy.deepcopy(scope)
    apply_proxy_headers(scope, TRUST)
    assert scope == before


@pytest.mark.parametrize("client, spec, trusted", [
    (None, ["unix"], True),
    (("/run/app.sock", None), ["unix"], True),
    (None, ["127.0.0.1"], False),
    (None, ["*"], True),
    (("203.0.113.50", 1), ["*"], True),
])
def test_unix_and_star_peers(client: Any, spec: list[str], trusted: bool) -> None:
    scope = make_scope([h("x-forwarded-for", "198.51.100.1")], client=client, server=None)
    apply_proxy_headers(scope, TrustedPeers.parse(spec))
    assert scope["client"] == (("198.51.100.1", 0) if trusted else client)


def test_star_takes_left_most() -> None:
    scope = make_scope([h("x-forwarded-for", "198.51.100.1, 203.0.113.7")])
    apply_proxy_headers(scope, TrustedPeers.parse(["*"]))
    assert scope["client"] == ("198.51.100.1", 0)


def test_port_alone_without_server_is_ignored() -> None:
    scope = make_scope([h("x-forwarded-port", "8080")], client=None, server=None)
    apply_proxy_headers(scope, TRUST)
    assert scope["server"] is None


@pytest.mark.parametrize("proto, scope_type, expected", [
    ("https", "websocket", "wss"),
    ("wss", "websocket", "wss"),
    ("http", "websocket", "ws"),
    ("ws", "websocket", "ws"),
    ("HTTPS", "websocket", "wss"),
    ("https", "http", "https"),
    ("wss", "http", "https"),
    ("http", "http", "http"),
    ("ws", "http", "http"),
])
@pytest.mark.parametrize("form", ["x-forwarded-proto", "forwarded"])
def test_websocket_scheme_mapping(proto: str, scope_type: str, expected: str, form: str) -> None:
    header = h(form, proto if form == "x-forwarded-proto" else f"proto={proto}")
    scope = make_scope([header], type=scope_type)
    apply_proxy_headers(scope, TRUST)
    assert scope["scheme"] == expected


@pytest.mark.parametrize("scope_type, proto, port", [
    ("websocket", "https", 443), ("websocket", "http", 80),
])
def test_websocket_default_port(scope_type: str, proto: str, port: int) -> None:
    scope = make_scope([h("x-forwarded-proto", proto), h("x-forwarded-host", "ws.example")],
                       type=scope_type)
    apply_proxy_headers(scope, TRUST)
    assert scope["server"] == ("ws.example", port)


def test_default_port_follows_existing_scheme() -> None:
    scope = make_scope([h("x-forwarded-host", "example.com")], scheme="https")
    apply_proxy_headers(scope, TRUST)
    assert scope["server"] == ("example.com", 443)


@pytest.mark.parametrize("scope_type", ["lifespan", None])
def test_non_http_scopes_untouched(scope_type: Any) -> None:
    scope = make_scope([h("x-forwarded-for", "198.51.100.1")])
    scope["type"] = scope_type
    before = copy.deepcopy(scope)
    apply_proxy_headers(scope, TRUST)
    assert scope == before


def test_headers_other_than_proxy_ones_untouched() -> None:
    headers = [h("host", "a"), h("x-forwarded-for", "198.51.100.1")]
    scope = make_scope(headers)
    apply_proxy_headers(scope, TRUST)
    assert scope["headers"] == headers


@pytest.mark.parametrize("headers", [
    None,
    [(b"x-forwarded-for",)],
    [("x-forwarded-for", "1.2.3.4")],        # str instead of bytes
    [(b"x-forwarded-for", None)],
    [(b"x-forwarded-for", b"\xff\xfe\x00")],
])
def test_odd_header_shapes_do_not_raise(headers: Any) -> None:
    scope = make_scope([])
    scope["headers"] = headers
    apply_proxy_headers(scope, TRUST)
    assert scope["client"] == PROXY


_HEADER_NAMES = st.sampled_from([b"forwarded", b"x-forwarded-for", b"x-forwarded-proto",
                                 b"x-forwarded-host", b"x-forwarded-port"])
_ALPHABET = st.sampled_from(list('for=proto;host,"[]:\\ _unknown1.2::ffhttps\t\x00\xe9'))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_HEADER_NAMES, st.text(_ALPHABET, max_size=40)), max_size=4),
       st.sampled_from(["http", "websocket"]))
def test_fuzz_never_raises(headers: list[tuple[bytes, str]], scope_type: str) -> None:
    scope = make_scope([(n, v.encode("latin-1")) for n, v in headers], type=scope_type)
    apply_proxy_headers(scope, TRUST)
    client = scope["client"]
    assert isinstance(client, tuple) and isinstance(client[1], int)
    assert client == PROXY or ipaddress.ip_address(client[0])
    assert scope["scheme"] in (("http", "https") if scope_type == "http" else ("ws", "wss"))
    host, port = scope["server"]
    assert isinstance(host, str) and 0 <= port <= 65535


# ============================================================ PROXY protocol


def v2(command: int = 0x1, family: int = 0x11, block: bytes = b"", *, version: int = 2,
       length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([(version << 4) | command, family]) + struct.pack("!H", size) + block


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport))


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport))


def unix(src: bytes, dst: bytes) -> bytes:
    return src.ljust(108, b"\x00") + dst.ljust(108, b"\x00")


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
V6_MAX = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

GOOD = [
    # ---- v1
    ("v1-tcp4", b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
     ProxyResult(("192.168.0.1", 56324), ("192.168.0.11", 443), b"", 1)),
    ("v1-tcp4-max", b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
     ProxyResult(("255.255.255.255", 65535), ("255.255.255.255", 65535), b"", 1)),
    ("v1-tcp4-zero-ports", b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
     ProxyResult(("0.0.0.0", 0), ("0.0.0.0", 0), b"", 1)),
    ("v1-tcp6", b"PROXY TCP6 2001:db8::1 2001:DB8::2 1 2\r\n",
     ProxyResult(("2001:db8::1", 1), ("2001:db8::2", 2), b"", 1)),
    ("v1-tcp6-max", f"PROXY TCP6 {V6_MAX} {V6_MAX} 65535 65535\r\n".encode(),
     ProxyResult((V6_MAX, 65535), (V6_MAX, 65535), b"", 1)),
    ("v1-unknown-short", b"PROXY UNKNOWN\r\n", ProxyResult(None, None, b"", 1)),
    ("v1-unknown-long", f"PROXY UNKNOWN {V6_MAX} {V6_MAX} 65535 65535\r\n".encode(),
     ProxyResult(None, None, b"", 1)),
    ("v1-unknown-junk", b"PROXY UNKNOWN whatever ~!@\r\n", ProxyResult(None, None, b"", 1)),
    # ---- v2
    ("v2-tcp4", v2(0x1, 0x11, inet4("10.1.2.3", "10.9.9.9", 51000, 443)),
     ProxyResult(("10.1.2.3", 51000), ("10.9.9.9", 443), b"", 2)),
    ("v2-tcp6", v2(0x1, 0x21, inet6("2001:db8::5", "2001:db8::6", 7, 8)),
     ProxyResult(("2001:db8::5", 7), ("2001:db8::6", 8), b"", 2)),
    ("v2-unix", v2(0x1, 0x31, unix(b"/run/client.sock", b"/run/haproxy.sock")),
     ProxyResult(("/run/client.sock", None), ("/run/haproxy.sock", None), b"", 2)),
    ("v2-unix-unnamed", v2(0x1, 0x31, unix(b"", b"/run/s")),
     ProxyResult(("", None), ("/run/s", None), b"", 2)),
    ("v2-unix-unterminated", v2(0x1, 0x31, b"a" * 108 + b"b" * 108),
     ProxyResult(("a" * 108, None), ("b" * 108, None), b"", 2)),
    ("v2-local", v2(0x0, 0x00), ProxyResult(None, None, b"", 2)),
    # LOCAL ignores family and address block, even odd ones
    ("v2-local-with-addresses", v2(0x0, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2)),
     ProxyResult(None, None, b"", 2)),
    ("v2-local-bad-family", v2(0x0, 0x99, b"xyz"), ProxyResult(None, None, b"", 2)),
    ("v2-proxy-unspec", v2(0x1, 0x00, b"ignored"), ProxyResult(None, None, b"", 2)),
    ("v2-udp4-falls-back", v2(0x1, 0x12, inet4("1.2.3.4", "5.6.7.8", 1, 2)),
     ProxyResult(None, None, b"", 2)),
    ("v2-udp6-falls-back", v2(0x1, 0x22, b""), ProxyResult(None, None, b"", 2)),
    ("v2-unix-dgram-falls-back", v2(0x1, 0x32, b""), ProxyResult(None, None, b"", 2)),
    ("v2-tlvs", v2(0x1, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2)
                   + tlv(0x01, b"h2") + tlv(0x04, b"") + tlv(0xEA, b"\x01vpce-123")),
     ProxyResult(("1.2.3.4", 1), ("5.6.7.8", 2), b"", 2,
                 ((0x01, b"h2"), (0x04, b""), (0xEA, b"\x01vpce-123")))),
    ("v2-tlv-ssl", v2(0x1, 0x21, inet6("::1", "::2", 3, 4)
                      + tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3"))),
     ProxyResult(("::1", 3), ("::2", 4), b"", 2,
                 ((0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3")),))),
    ("v2-unix-tlv", v2(0x1, 0x31, unix(b"/a", b"/b") + tlv(0x05, b"id")),
     ProxyResult(("/a", None), ("/b", None), b"", 2, ((0x05, b"id"),))),
]


@pytest.mark.parametrize("name, header, expected", GOOD, ids=[g[0] for g in GOOD])
@pytest.mark.parametrize("mode", ["whole", "bytewise", "with-request"])
def test_proxy_protocol_valid(name: str, header: bytes, expected: ProxyResult, mode: str) -> None:
    parser = ProxyProtocolParser()
    if mode == "whole":
        result = parser.feed(header)
        trailing = b""
    elif mode == "with-request":
        result = parser.feed(header + REQUEST)
        trailing = REQUEST
    else:
        result = None
        for i in range(len(header)):
            assert result is None, f"result before byte {i}"
            result = parser.feed(header[i:i + 1])
        trailing = b""
    assert result is not None
    assert result.client == expected.client
    assert result.server == expected.server
    assert result.version == expected.version
    assert result.tlvs == expected.tlvs
    assert result.leftover == trailing
    assert parser.done


@pytest.mark.parametrize("header", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_leftover_preserved_across_split_feeds(header: bytes) -> None:
    """Header and request split at every point: the leftover is exactly the rest."""
    data = header + REQUEST
    for cut in range(len(header), len(data) + 1):
        parser = ProxyProtocolParser()
        first = parser.feed(data[:cut])
        assert first is not None
        assert first.leftover == data[len(header):cut]


CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32))


@pytest.mark.parametrize("header", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_reading_what_is_needed_never_reads_past_the_header(header: bytes) -> None:
    """A reader asking for needed() bytes at a time (what proxy_tls does on a
    socket) ends exactly at the header's end: the TLS bytes stay unread."""
    stream = header + CLIENT_HELLO
    parser = ProxyProtocolParser()
    taken = 0
    result = None
    while result is None:
        want = parser.needed()
        assert want > 0, f"needed() is 0 after {taken} bytes of an incomplete header"
        result = parser.feed(stream[taken:taken + want])
        taken += want
    assert taken == len(header)
    assert result.leftover == b""
    assert parser.needed() == 0


@pytest.mark.parametrize("buffered, needed", [
    (b"", 15),                                   # "PROXY UNKNOWN\r\n" is the shortest header
    (b"P", 14),
    (b"PROXY UNKNOW", 3),
    (b"PROXY UNKNOWN", 2),
    (b"PROXY UNKNOWN\r", 1),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1", 2),        # any byte may be the last before CRLF
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", 1),
    (V2_SIGNATURE[:1], 15),                       # the 16-byte fixed part first
    (V2_SIGNATURE + b"\x21\x11", 2),
    (V2_SIGNATURE + b"\x21\x11\x00\x0c", 12),   # then exactly the announced length
    (V2_SIGNATURE + b"\x21\x11\x00\x0c" + b"\x01" * 5, 7),
    (V2_SIGNATURE + b"\x20\x00\x01\x00", 256),
])
def test_needed_is_the_fewest_bytes_that_can_complete_the_header(buffered: bytes,
                                                                 needed: int) -> None:
    parser = ProxyProtocolParser()
    assert parser.feed(buffered) is None
    assert parser.needed() == needed


def test_needed_is_zero_after_an_error() -> None:
    parser = ProxyProtocolParser()
    with pytest.raises(ProxyProtocolError):
        parser.feed(b"PROXY GARBAGE\r\n")
    assert parser.needed() == 0


@pytest.mark.parametrize("data, expected", [
    (b"P", True), (b"PROXY", True), (b"PROXY TCP4 1.2.3.4", True), (b"\r", True),
    (b"\r\n\r\n\x00", True), (V2_SIGNATURE + b"\x21", True),
    (b"\x16", False),                 # a TLS handshake record
    (b"\x80", False),                 # an SSLv2-style hello
    (b"G", False), (b"GET / HTTP/1.1", False), (b"POST", False), (b"PROXY!", False),
    (b"\r\n\r\n\x01", False), (b"\r\n\r\n\x00\r\nQUIT\r", False),
])
def test_could_start_header(data: bytes, expected: bool) -> None:
    assert could_start_header(data) is expected


def test_leftover_is_bytes_and_binary_safe() -> None:
    data = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + b"\x16\x03\x01\x00\xff\r\n\r\n"
    result = ProxyProtocolParser().feed(data)
    assert result is not None and type(result.leftover) is bytes
    assert result.leftover == b"\x16\x03\x01\x00\xff\r\n\r\n"


def test_empty_feed_needs_more() -> None:
    parser = ProxyProtocolParser()
    assert parser.feed(b"") is None
    assert parser.feed(b"PROX") is None
    assert parser.feed(b"") is None
    assert not parser.done


def test_feed_after_result_is_an_error() -> None:
    parser = ProxyProtocolParser()
    assert parser.feed(b"PROXY UNKNOWN\r\n") is not None
    with pytest.raises(RuntimeError):
        parser.feed(b"GET")


def test_errors_are_sticky() -> None:
    parser = ProxyProtocolParser()
    with pytest.raises(ProxyProtocolError, match="not a PROXY protocol header"):
        parser.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProxyProtocolError, match="not a PROXY protocol header"):
        parser.feed(b"PROXY UNKNOWN\r\n")


def test_error_is_a_value_error() -> None:
    assert issubclass(ProxyProtocolError, ValueError)


V4_BLOCK = inet4("1.2.3.4", "5.6.7.8", 1, 2)

BAD = [
    # ---- signature
    ("http-request", b"GET / HTTP/1.1\r\n", "unexpected first byte"),
    ("tls-hello", b"\x16\x03\x01\x02\x00", "unexpected first byte"),
    ("lowercase", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "unexpected first byte"),
    ("v1-no-space", b"PROXY\r\n", "must start with 'PROXY '"),
    ("v1-typo", b"PROXZ TCP4", "must start with 'PROXY '"),
    ("v2-bad-signature", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00", "bad v2 signature"),
    ("v2-crlf-only", b"\r\n\r\nGET", "bad v2 signature"),
    # ---- v1 line structure
    ("v1-too-long", b"PROXY UNKNOWN " + b"x" * 200, "too long: no CRLF within 107 bytes"),
    ("v1-108-with-crlf", b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "too long"),
    ("v1-bare-lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "invalid byte 0x0a"),
    ("v1-bare-cr", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "invalid byte 0x0d"),
    ("v1-nul", b"PROXY TCP4 1.2.3.4\x00", "invalid byte 0x00"),
    ("v1-high-byte", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n", "invalid byte 0xff"),
    ("v1-tab", b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", "invalid byte 0x09"),
    ("v1-bad-protocol", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "'TCP5' is not TCP4, TCP6 or UNKNOWN"),
    ("v1-empty-protocol", b"PROXY \r\n", "'' is not TCP4"),
    ("v1-udp", b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "'UDP4' is not"),
    ("v1-unknownx", b"PROXY UNKNOWNX\r\n", "'UNKNOWNX' is not"),
    ("v1-missing-field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "needs 4 fields"),
    ("v1-extra-field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "needs 4 fields"),
    ("v1-double-space", b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "needs 4 fields"),
    ("v1-trailing-space", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "needs 4 fields"),
    # ---- v1 addresses and ports
    ("v1-bad-src", b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "source address '1.2.3'"),
    ("v1-bad-dst", b"PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n", "destination address '5.6.7.256'"),
    ("v1-leading-zero-ip", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "not a valid IPv4"),
    ("v1-v6-in-tcp4", b"PROXY TCP4 ::1 ::2 1 2\r\n", "not a valid IPv4"),
    ("v1-v4-in-tcp6", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "not a valid IPv6"),
    ("v1-zone", b"PROXY TCP6 fe80::1%eth0 ::2 1 2\r\n", "not a valid IPv6"),
    ("v1-hostname", b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n", "source address 'localhost'"),
    ("v1-port-range", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "source port '65536'"),
    ("v1-port-leading-zero", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "destination port '080'"),
    ("v1-port-sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "source port '+1'"),
    ("v1-port-text", b"PROXY TCP4 1.2.3.4 5.6.7.8 http 2\r\n", "source port 'http'"),
    ("v1-port-huge", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 999999\r\n", "destination port '999999'"),
    # ---- v2 fixed header
    ("v2-version-1", v2(version=1), "unsupported version 1"),
    ("v2-version-3", v2(version=3, block=V4_BLOCK), "unsupported version 3"),
    ("v2-command-2", v2(command=0x2, block=V4_BLOCK), "unknown command 0x2"),
    ("v2-command-f", v2(command=0xF), "unknown command 0xf"),
    ("v2-family-4", v2(family=0x41, block=V4_BLOCK), "invalid family/protocol byte 0x41"),
    ("v2-family-transport-3", v2(family=0x13, block=V4_BLOCK), "invalid family/protocol byte 0x13"),
    ("v2-family-inet-unspec", v2(family=0x10, block=V4_BLOCK), "invalid family/protocol byte 0x10"),
    # ---- v2 address block
    ("v2-short-inet", v2(family=0x11, block=b"\x01" * 8), "8 bytes is too short for TCP over IPv4"),
    ("v2-short-inet6", v2(family=0x21, block=V4_BLOCK), "12 bytes is too short for TCP over IPv6"),
    ("v2-short-unix", v2(family=0x31, block=b"/a\x00"), "3 bytes is too short for UNIX stream"),
    ("v2-zero-inet", v2(family=0x11), "0 bytes is too short"),
    # ---- TLVs
    ("v2-tlv-truncated-header", v2(block=V4_BLOCK + b"\x01\x00"), "TLV truncated: 2 trailing"),
    ("v2-tlv-overrun", v2(block=V4_BLOCK + b"\x01\x00\x05ab"),
     "TLV type 0x01 declares 5 bytes but only 2 remain"),
    ("v2-tlv-second-overrun", v2(block=V4_BLOCK + tlv(0x04, b"") + b"\x02\xff\xff"),
     "TLV type 0x02 declares 65535 bytes"),
]


@pytest.mark.parametrize("name, data, message", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_proxy_protocol_malformed(name: str, data: bytes, message: str, mode: str) -> None:
    parser = ProxyProtocolParser()
    with pytest.raises(ProxyProtocolError) as info:
        if mode == "whole":
            parser.feed(data)
        else:
            for i in range(len(data)):
                parser.feed(data[i:i + 1])
    assert message in str(info.value)


@pytest.mark.parametrize("data, fails_at", [
    # the very first byte decides when it can't start a header
    (b"GET / HTTP/1.1\r\n\r\n", 1),
    (b"\x00", 1),
    (b"PRO\x00", 4),
    (b"PROXY!", 6),
    (b"\r\n\r\n\x01", 5),
    # v2: version/command byte is the 13th, family the 14th
    (V2_SIGNATURE + b"\x31\x11\x00\x0c", 13),
    (V2_SIGNATURE + b"\x21\x55\x00\x0c", 14),
    # v2: too-short length as soon as the 16-byte fixed header is in
    (V2_SIGNATURE + b"\x21\x21\x00\x0c" + V4_BLOCK, 16),
    # v1: first bad byte
    (b"PROXY TCP4 1.2\n", 15),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", 32),
])
def test_early_exit(data: bytes, fails_at: int) -> None:
    """Bytes that cannot be a valid header are rejected as soon as they arrive."""
    parser = ProxyProtocolParser()
    for i in range(1, fails_at):
        assert parser.feed(data[i - 1:i]) is None, f"raised early at byte {i}"
    with pytest.raises(ProxyProtocolError):
        parser.feed(data[fails_at - 1:fails_at])


def test_v1_length_limit_boundary() -> None:
    # exactly 107 bytes including CRLF is accepted
    line = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(line) == V1_MAX_LENGTH
    assert ProxyProtocolParser().feed(line + b"rest") == ProxyResult(None, None, b"rest", 1)
    # 107 bytes without a CRLF fail at byte 107, not later
    parser = ProxyProtocolParser()
    long = b"PROXY UNKNOWN " + b"x" * 200
    for i in range(V1_MAX_LENGTH - 1):
        assert parser.feed(long[i:i + 1]) is None
    with pytest.raises(ProxyProtocolError, match="too long"):
        parser.feed(long[V1_MAX_LENGTH - 1:V1_MAX_LENGTH])


def test_v2_large_header_waits_for_all_bytes() -> None:
    block = V4_BLOCK + tlv(0xE0, b"z" * 1000)
    data = v2(block=block)
    parser = ProxyProtocolParser()
    assert parser.feed(data[:-1]) is None
    result = parser.feed(data[-1:] + b"GET")
    assert result is not None and result.leftover == b"GET"
    assert result.tlvs == ((0xE0, b"z" * 1000),)


def test_v2_signature_constant() -> None:
    assert V2_SIGNATURE == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parser_only_raises_protocol_error(data: bytes) -> None:
    parser = ProxyProtocolParser()
    try:
        result = parser.feed(data)
    except ProxyProtocolError:
        return
    if result is not None:
        assert data.endswith(result.leftover)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([g[1] for g in GOOD]), st.binary(max_size=50),
       st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_fuzz_chunking_does_not_matter(header: bytes, rest: bytes, sizes: list[int]) -> None:
    data = header + rest
    expected = ProxyProtocolParser().feed(data)
    parser = ProxyProtocolParser()
    result = None
    pos = 0
    for size in sizes + [len(data)]:
        if result is not None or pos >= len(data):
            break
        result = parser.feed(data[pos:pos + size])
        pos += size
    assert result is not None and expected is not None
    assert (result.client, result.server, result.tlvs) == (
        expected.client, expected.server, expected.tlvs)
    assert result.leftover == data[len(header):pos]
