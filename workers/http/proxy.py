"""Client addresses behind proxies: trusted peers and forwarding headers.

Sans-IO and pure: nothing here touches a socket, a loop or a clock, so the
connection code decides *when* to call it and this module only decides *what*
the answer is.

Two pieces (the PROXY protocol parser is ``workers.http.proxy_protocol``):

``TrustedPeers``
    Which direct peers may speak for someone else.  Built from a spec of IP
    addresses, CIDR networks, ``"unix"`` (peers on a unix socket) and ``"*"``
    (everybody).  ``contains(client)`` takes the ASGI ``client`` value.

``apply_proxy_headers(scope, trusted)``
    Rewrites ``client``, ``scheme`` and ``server`` of an ASGI http/websocket
    scope from ``Forwarded`` (RFC 7239) or, when that header is absent, from
    ``X-Forwarded-For/-Proto/-Host/-Port`` -- but only when the direct peer is
    trusted.  Malformed values are ignored; the function never raises on
    header content.

Operational note: a proxy that emits only one family of headers must strip
(or overwrite) the other one coming from clients; ``Forwarded`` takes
precedence whenever it is present, so a client-supplied ``Forwarded`` passed
through an ``X-Forwarded-For``-only proxy would be believed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, MutableMapping
from typing import Any, Union

__all__ = [
    "TrustedPeers",
    "apply_proxy_headers",
    "parse_ip",
]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


# --------------------------------------------------------------------------- trust


def asgi_address(value: Any) -> Any:
    """A transport's peername/sockname as an ASGI ``client``/``server`` value:
    (host, port) for IP, (path, None) for a unix socket, None when unknown."""
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    if isinstance(value, str) and value:
        return (value, None)
    return None


def parse_ip(text: str) -> IPAddress | None:
    """An IP address from ``text`` or None; scope ids (``%eth0``) are refused."""
    if not text or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class TrustedPeers:
    """A set of peers allowed to forward client information.

    Immutable once built; build it with :meth:`parse`.
    """

    __slots__ = ("_everything", "_unix", "_addresses", "_networks", "spec")

    def __init__(self, *, everything: bool = False, unix: bool = False,
                 networks: Iterable[IPNetwork] = (), spec: tuple[str, ...] = ()) -> None:
        self._everything = everything
        self._unix = unix
        addresses: set[IPAddress] = set()
        others: list[IPNetwork] = []
        for net in networks:
            if net.num_addresses == 1:
                addresses.add(net.network_address)
            else:
                others.append(net)
        self._addresses = frozenset(addresses)
        self._networks = tuple(others)
        self.spec = spec

    @classmethod
    def parse(cls, spec: Iterable[str]) -> TrustedPeers:
        """Build from entries such as ``"10.0.0.0/8"``, ``"::1"``, ``"unix"``, ``"*"``.

        A single string is split on commas (the FORWARDED_ALLOW_IPS form), and
        so is every entry of an iterable.  Blank pieces are skipped.  Anything
        else that is not an IP address or network raises ``ValueError`` naming
        the entry.  Host bits in a CIDR are allowed (``10.1.2.3/8`` is
        ``10.0.0.0/8``).
        """
        if isinstance(spec, (str, bytes)):
            spec = [spec]  # type: ignore[list-item]
        everything = False
        unix = False
        networks: list[IPNetwork] = []
        kept: list[str] = []
        for entry in spec:
            if not isinstance(entry, str):
                raise ValueError(
                    f"invalid trusted peer {entry!r}: expected a string "
                    "(an IP address, a CIDR network, 'unix' or '*')")
            for piece in entry.split(","):
                piece = piece.strip()
                if not piece:
                    continue
                kept.append(piece)
                if piece == "*":
                    everything = True
                elif piece.lower() == "unix":
                    unix = True
                else:
                    try:
                        if "%" in piece:
                            raise ValueError(piece)
                        networks.append(ipaddress.ip_network(piece, strict=False))
                    except ValueError:
                        raise ValueError(
                            f"invalid trusted peer {piece!r}: expected an IP address, "
                            "a CIDR network, 'unix' or '*'") from None
        return cls(everything=everything, unix=unix, networks=networks, spec=tuple(kept))

    @property
    def everything(self) -> bool:
        return self._everything

    @property
    def unix(self) -> bool:
        return self._unix or self._everything

    def contains_ip(self, address: IPAddress) -> bool:
        """Whether an IP address is trusted (IPv4-mapped IPv6 also matches IPv4 rules)."""
        if self._everything:
            return True
        if address in self._addresses:
            return True
        for net in self._networks:
            if address.version == net.version and address in net:
                return True
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            return self.contains_ip(mapped)
        return False

    def contains_host(self, host: str) -> bool:
        """Whether a textual IP address is trusted; non-IP text is trusted only by ``*``."""
        if self._everything:
            return True
        address = parse_ip(host)
        return address is not None and self.contains_ip(address)

    def contains(self, client: Any) -> bool:
        """Whether the ASGI ``client`` value (direct peer) is trusted.

        ``None`` and ``(host, port)`` whose host is not an IP address (a unix
        socket path, ``""``) are unix-socket peers, trusted by ``"unix"`` or
        ``"*"``.  Anything that is neither is not trusted (except by ``"*"``).
        """
        if self._everything:
            return True
        if client is None:
            return self._unix
        if not isinstance(client, (tuple, list)) or not client:
            return False
        host = client[0]
        if not isinstance(host, str):
            return False
        text = host
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        text = text.split("%", 1)[0]  # a link-local peer may carry its zone
        address = parse_ip(text)
        if address is None:
            return self._unix
        return self.contains_ip(address)

    __contains__ = contains

    def __repr__(self) -> str:
        return f"TrustedPeers.parse({list(self.spec)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustedPeers):
            return NotImplemented
        return (self._everything, self._unix, self._addresses, set(self._networks)) == (
            other._everything, other._unix, other._addresses, set(other._networks))

    def __hash__(self) -> int:
        return hash((self._everything, self._unix, self._addresses, frozenset(self._networks)))


# ------------------------------------------------------------------- proxy headers

_PROTOS = frozenset({"http", "https", "ws", "wss"})
_SECURE = frozenset({"https", "wss"})
_WANTED = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-proto",
                     b"x-forwarded-host", b"x-forwarded-port"})

# RFC 7230 token characters.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")
# RFC 7239 obfuscated identifiers (node and port).
_OBF_RE = re.compile(r"_[A-Za-z0-9._\-]+")
# Host names we accept in X-Forwarded-Host / Forwarded host= (letters, digits, . - _).
_REGNAME_RE = re.compile(r"[A-Za-z0-9._\-]+")
_OWS = " \t"


def _port(text: str) -> int | None:
    if _PORT_RE.fullmatch(text):
        value = int(text)
        if value <= 65535:
            return value
    return None


def _parse_node(text: str | None) -> tuple[str, int] | None:
    """``(ip, port)`` from an RFC 7239 node or an X-Forwarded-For entry.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``[v6]``, ``[v6]:80`` and a bare
    ``v6``.  An obfuscated port gives 0; ``unknown``, obfuscated nodes and
    anything malformed give None.
    """
    if text is None:
        return None
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        host, rest = text[1:close], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        address = parse_ip(host)
        if address is None or address.version != 6:
            return None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        address = parse_ip(host)
        if address is None or address.version != 4:
            return None
    else:
        address = parse_ip(text)
        if address is None:
            return None
    port = 0
    if port_text is not None:
        if _OBF_RE.fullmatch(port_text):
            port = 0
        else:
            parsed = _port(port_text)
            if parsed is None:
                return None
            port = parsed
    return (str(address), port)


def _parse_host(text: str | None) -> tuple[str, int | None] | None:
    """``(host, port-or-None)`` from a Host-like value, or None if malformed."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    port: int | None = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        host, rest = text[1:close], text[close + 1:]
        address = parse_ip(host)
        if address is None or address.version != 6:
            return None
        host = str(address)
    else:
        host, sep, rest = text.partition(":")
        rest = sep + rest
        if not _REGNAME_RE.fullmatch(host):
            return None
    if rest:
        if not rest.startswith(":"):
            return None
        port = _port(rest[1:])
        if port is None:
            return None
    return (host, port)


def _skip_element(text: str, i: int) -> int:
    """Index of the next ``,`` outside a quoted string (or len(text))."""
    n = len(text)
    quoted = False
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ",":
            return i
        i += 1
    return n


def _parse_forwarded(text: str) -> list[dict[str, str] | None]:
    """Elements of a ``Forwarded`` value, left to right; None marks a malformed one.

    Empty list members (``a, , b``) are dropped.  Parameter names are
    lower-cased; a parameter repeated inside an element makes it malformed.
    """
    elements: list[dict[str, str] | None] = []
    n = len(text)
    i = 0
    current: dict[str, str] = {}
    bad = False
    while True:
        while i < n and text[i] in _OWS:
            i += 1
        if i >= n or text[i] == ",":
            if bad:
                elements.append(None)
            elif current:
                elements.append(current)
            current, bad = {}, False
            if i >= n:
                return elements
            i += 1
            continue
        if text[i] == ";":
            i += 1
            continue
        match = _TOKEN_RE.match(text, i)
        if match is None or match.end() >= n or text[match.end()] != "=":
            bad = True
            i = _skip_element(text, i)
            continue
        name = match.group().lower()
        i = match.end() + 1
        if i < n and text[i] == '"':
            chars: list[str] = []
            i += 1
            closed = False
            while i < n:
                c = text[i]
                if c == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                    continue
                if c == '"':
                    closed = True
                    i += 1
                    break
                chars.append(c)
                i += 1
            if not closed:
                bad = True
                i = n
                continue
            value = "".join(chars)
        else:
            match = _TOKEN_RE.match(text, i)
            if match is None:
                bad = True
                i = _skip_element(text, i)
                continue
            value = match.group()
            i = match.end()
        if name in current:
            bad = True
        current[name] = value
        while i < n and text[i] in _OWS:
            i += 1
        if i < n and text[i] not in ",;":
            bad = True
            i = _skip_element(text, i)


def _split_list(text: str | None) -> list[str]:
    if text is None:
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


def _pick(values: list[str], index: int | None, count: int) -> str | None:
    """The value for the chosen hop: aligned with X-Forwarded-For when the lists
    have the same length, otherwise the right-most (set by the nearest proxy)."""
    if not values:
        return None
    if index is not None and len(values) == count:
        return values[index]
    return values[-1]


def _scheme_for(proto: str, scope_type: str) -> str | None:
    proto = proto.strip().lower()
    if proto not in _PROTOS:
        return None
    secure = proto in _SECURE
    if scope_type == "websocket":
        return "wss" if secure else "ws"
    return "https" if secure else "http"


def _default_port(scheme: str) -> int:
    return 443 if scheme in _SECURE else 80


def apply_proxy_headers(scope: MutableMapping[str, Any], trusted: TrustedPeers) -> None:
    """Rewrite ``client``/``scheme``/``server`` of ``scope`` from forwarding headers.

    Only for ``http`` and ``websocket`` scopes whose direct peer
    (``scope["client"]``) is in ``trusted``; otherwise the scope is left
    untouched.  Headers of the same name are joined with commas.

    * ``Forwarded`` (RFC 7239), if present with at least one element, is used
      alone.  Elements are walked from the right, skipping those whose
      ``for=`` is a trusted IP; the first other element is chosen (the
      left-most if all are trusted).  A malformed element stops the walk and
      nothing is applied.  From the chosen element: ``for=`` (an IP, with
      optional port) sets the client -- ``unknown`` or obfuscated identifiers
      leave it alone; ``proto=`` sets the scheme; ``host=`` sets the server.
    * Otherwise ``X-Forwarded-For`` is walked the same way; the chosen entry
      sets the client if it is an IP address.  ``X-Forwarded-Proto``,
      ``-Host`` and ``-Port`` take the value at the chosen hop when their list
      has as many members as ``X-Forwarded-For``, else their right-most one.
    * Proto is one of http/https/ws/wss and is mapped to the scope type
      (``https`` on a websocket scope gives ``wss``, ``wss`` on http gives
      ``https``).  The server port comes from X-Forwarded-Port, else from the
      host value, else the scheme's default (80/443).  X-Forwarded-Port alone
      changes only the port of an existing ``server``.
    * An unknown client port is 0.
    """
    scope_type = scope.get("type")
    if scope_type not in ("http", "websocket"):
        return
    if not trusted.contains(scope.get("client")):
        return
    collected: dict[bytes, list[str]] = {}
    for item in scope.get("headers") or ():
        try:
            name, value = item
            name = bytes(name).lower()
            if name not in _WANTED:
                continue
            text = bytes(value).decode("latin-1")
        except (TypeError, ValueError):
            continue
        collected.setdefault(name, []).append(text)
    if not collected:
        return
    joined = {name: ",".join(values) for name, values in collected.items()}

    client: tuple[str, int] | None = None
    proto: str | None = None
    host: tuple[str, int | None] | None = None
    port: int | None = None

    forwarded = _parse_forwarded(joined[b"forwarded"]) if b"forwarded" in joined else []
    if forwarded:
        chosen: dict[str, str] | None = forwarded[0]
        for element in reversed(forwarded):
            if element is None:
                chosen = None
                break
            node = _parse_node(element.get("for"))
            if node is None or not trusted.contains_host(node[0]):
                chosen = element
                break
        if chosen is None:
            return
        client = _parse_node(chosen.get("for"))
        proto = chosen.get("proto")
        host = _parse_host(chosen.get("host"))
    else:
        hops = _split_list(joined.get(b"x-forwarded-for"))
        index: int | None = None
        if hops:
            index = 0
            for i in range(len(hops) - 1, -1, -1):
                node = _parse_node(hops[i])
                if node is None or not trusted.contains_host(node[0]):
                    index = i
                    break
            client = _parse_node(hops[index])
        proto = _pick(_split_list(joined.get(b"x-forwarded-proto")), index, len(hops))
        host = _parse_host(_pick(_split_list(joined.get(b"x-forwarded-host")), index, len(hops)))
        port_text = _pick(_split_list(joined.get(b"x-forwarded-port")), index, len(hops))
        port = _port(port_text) if port_text is not None else None

    if client is not None:
        scope["client"] = client
    if proto is not None:
        scheme = _scheme_for(proto, scope_type)
        if scheme is not None:
            scope["scheme"] = scheme
    if host is not None:
        scheme = scope.get("scheme") or "http"
        final_port = port if port is not None else host[1]
        if final_port is None:
            final_port = _default_port(scheme)
        scope["server"] = (host[0], final_port)
    elif port is not None:
        server = scope.get("server")
        if isinstance(server, (tuple, list)) and len(server) >= 1 and server[0] is not None:
            scope["server"] = (server[0], port)
