"""The haproxy PROXY protocol header (v1 text, v2 binary), sans-IO.

``ProxyProtocolParser`` is fed bytes until it returns a ``ProxyResult``;
whatever came after the header is handed back in ``ProxyResult.leftover``.
Whether a peer may send one at all is ``workers.http.proxy.TrustedPeers``'
call, made by the connection.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Union

from workers.http.proxy import parse_ip

__all__ = ["ProxyProtocolError", "ProxyProtocolParser", "ProxyResult", "V1_MAX_LENGTH",
           "V2_SIGNATURE", "could_start_header"]

# ----------------------------------------------------------------- PROXY protocol

#: The 12 bytes every PROXY protocol v2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: Longest v1 line, CRLF included ("PROXY UNKNOWN <v6> <v6> 65535 65535\r\n").
V1_MAX_LENGTH = 107
_V2_HEADER = 16
#: Shortest v1 line: "PROXY UNKNOWN\r\n".
_V1_MIN_LENGTH = 15

_V2_LOCAL = 0x0
_V2_PROXY = 0x1
# family/transport byte -> (address block size, kind); DGRAM falls back to UNSPEC.
_V2_FAMILIES: dict[int, tuple[int, str]] = {
    0x00: (0, "unspec"),
    0x11: (12, "inet"), 0x12: (0, "unspec"),
    0x21: (36, "inet6"), 0x22: (0, "unspec"),
    0x31: (216, "unix"), 0x32: (0, "unspec"),
}
_V2_NAMES = {0x11: "TCP over IPv4", 0x21: "TCP over IPv6", 0x31: "UNIX stream"}
_V1_PORT_RE = re.compile(rb"0|[1-9][0-9]{0,4}")

Address = tuple[str, Union[int, None]]


def could_start_header(data: bytes) -> bool:
    """Whether the first bytes of a connection can begin a PROXY header: they
    are a prefix of, or start with, ``"PROXY "`` or the v2 signature.  A
    trusted peer that sends anything else sends no header (a health check),
    which is allowed."""
    return (V1_PREFIX.startswith(data[:len(V1_PREFIX)])
            or V2_SIGNATURE.startswith(data[:len(V2_SIGNATURE)]))


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header; drop the connection."""


@dataclass(frozen=True)
class ProxyResult:
    """A complete PROXY header.

    ``client``/``server`` are ``(ip, port)``; for a UNIX-family v2 header
    they are ``(path, None)`` (path possibly ``""``).  ``None`` means "keep
    the real peer/socket address" (v1 UNKNOWN, v2 LOCAL, UNSPEC or datagram
    families).  ``leftover`` is what followed the header: the start of the
    HTTP request.  ``tlvs`` are the v2 type-length-value records, in order.
    """

    client: Address | None
    server: Address | None
    leftover: bytes
    version: int = 1
    tlvs: tuple[tuple[int, bytes], ...] = ()


class ProxyProtocolParser:
    """Incremental PROXY protocol v1/v2 header parser.

    ``feed(data)`` returns None while more bytes are needed, then a
    :class:`ProxyResult` exactly once.  Feeding again after that raises
    ``RuntimeError``.  Errors raise :class:`ProxyProtocolError` and are
    sticky: later feeds raise the same message.

    Early exit: each feed checks everything that can already be checked.
    Bytes that cannot start ``"PROXY "`` or the v2 signature are rejected as
    soon as they arrive (a plain ``GET`` fails on its first byte); a v1 line
    is rejected on its first byte outside printable ASCII, and when 107 bytes
    hold no CRLF; a v2 version, command or family byte is checked as soon as
    it arrives, and an address length too short for the family as soon as
    the 16-byte fixed header is complete.  Only a header that is valid so far
    waits for more bytes.

    Strictness follows the haproxy specification: v1 fields are separated by
    exactly one space, ports have no leading zeros and addresses must match
    the announced family; v2 requires version 2, command LOCAL or PROXY and a
    listed family byte (LOCAL ignores the family altogether); TLVs must tile
    the rest of the block exactly.
    """

    __slots__ = ("_buffer", "_done", "_error")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._done = False
        self._error: str | None = None

    @property
    def done(self) -> bool:
        return self._done

    def needed(self) -> int:
        """The fewest more bytes that can complete the header (0 once it is
        parsed or refused).  A reader that asks the socket for no more than
        this never reads past the end of a valid header, so what follows it
        (a TLS ClientHello) stays in the socket for whoever comes next."""
        if self._done or self._error is not None:
            return 0
        buf = self._buffer
        if not buf:
            return min(_V1_MIN_LENGTH, _V2_HEADER)
        if buf[0] == V2_SIGNATURE[0]:
            if len(buf) < _V2_HEADER:
                return _V2_HEADER - len(buf)
            return _V2_HEADER + int.from_bytes(buf[14:16], "big") - len(buf)
        if len(buf) < _V1_MIN_LENGTH:
            return _V1_MIN_LENGTH - len(buf)
        return 1 if buf[-1:] == b"\r" else 2  # the line is still missing its CRLF

    def feed(self, data: bytes) -> ProxyResult | None:
        if self._done:
            raise RuntimeError("the PROXY header was already parsed")
        if self._error is not None:
            raise ProxyProtocolError(self._error)
        self._buffer += data
        try:
            result = self._parse()
        except ProxyProtocolError as exc:
            self._error = str(exc)
            self._buffer.clear()
            raise
        if result is not None:
            self._done = True
            self._buffer.clear()
        return result

    # ------------------------------------------------------------ internals

    def _parse(self) -> ProxyResult | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] == V1_PREFIX[0]:
            seen = min(len(buf), len(V1_PREFIX))
            if buf[:seen] != V1_PREFIX[:seen]:
                raise ProxyProtocolError(
                    "not a PROXY protocol header: v1 must start with 'PROXY ' "
                    f"(got {bytes(buf[:seen])!r})")
            return self._parse_v1()
        if buf[0] == V2_SIGNATURE[0]:
            seen = min(len(buf), len(V2_SIGNATURE))
            if buf[:seen] != V2_SIGNATURE[:seen]:
                raise ProxyProtocolError("not a PROXY protocol header: bad v2 signature")
            return self._parse_v2()
        raise ProxyProtocolError(
            f"not a PROXY protocol header: unexpected first byte {bytes(buf[:1])!r}")

    def _parse_v1(self) -> ProxyResult | None:
        buf = self._buffer
        limit = min(len(buf), V1_MAX_LENGTH)
        end = buf.find(b"\r\n", 0, limit)
        checked = end if end >= 0 else (limit - 1 if buf[limit - 1:limit] == b"\r" else limit)
        for offset in range(len(V1_PREFIX), checked):
            byte = buf[offset]
            if not 0x20 <= byte <= 0x7E:
                raise ProxyProtocolError(
                    f"PROXY v1 line has invalid byte 0x{byte:02x} at offset {offset} "
                    "(expected printable ASCII ended by CRLF)")
        if end < 0:
            if len(buf) >= V1_MAX_LENGTH:
                raise ProxyProtocolError(
                    f"PROXY v1 line too long: no CRLF within {V1_MAX_LENGTH} bytes")
            return None
        line = bytes(buf[:end])
        leftover = bytes(buf[end + 2:])
        fields = line.split(b" ")
        proto = fields[1]
        if proto == b"UNKNOWN":
            return ProxyResult(None, None, leftover, version=1)
        if proto not in (b"TCP4", b"TCP6"):
            raise ProxyProtocolError(f"PROXY v1 protocol {proto.decode('ascii')!r} is not "
                                     "TCP4, TCP6 or UNKNOWN")
        if len(fields) != 6:
            raise ProxyProtocolError(
                f"PROXY v1 {proto.decode('ascii')} line needs 4 fields separated by single "
                f"spaces, got {len(fields) - 2}")
        version = 4 if proto == b"TCP4" else 6
        src = self._v1_address(fields[2], version, "source")
        dst = self._v1_address(fields[3], version, "destination")
        sport = self._v1_port(fields[4], "source")
        dport = self._v1_port(fields[5], "destination")
        return ProxyResult((src, sport), (dst, dport), leftover, version=1)

    @staticmethod
    def _v1_address(raw: bytes, version: int, which: str) -> str:
        text = raw.decode("ascii")
        address = parse_ip(text)
        if address is None or address.version != version:
            raise ProxyProtocolError(
                f"PROXY v1 {which} address {text!r} is not a valid IPv{version} address")
        return str(address)

    @staticmethod
    def _v1_port(raw: bytes, which: str) -> int:
        if _V1_PORT_RE.fullmatch(raw) and int(raw) <= 65535:
            return int(raw)
        raise ProxyProtocolError(
            f"PROXY v1 {which} port {raw.decode('ascii')!r} is not a decimal in 0..65535 "
            "without leading zeros")

    def _parse_v2(self) -> ProxyResult | None:
        buf = self._buffer
        if len(buf) > 12:
            version, command = buf[12] >> 4, buf[12] & 0x0F
            if version != 2:
                raise ProxyProtocolError(f"PROXY v2 header has unsupported version {version}")
            if command not in (_V2_LOCAL, _V2_PROXY):
                raise ProxyProtocolError(f"PROXY v2 header has unknown command 0x{command:x}")
        else:
            return None
        if len(buf) > 13 and command == _V2_PROXY and buf[13] not in _V2_FAMILIES:
            raise ProxyProtocolError(
                f"PROXY v2 header has invalid family/protocol byte 0x{buf[13]:02x}")
        if len(buf) < _V2_HEADER:
            return None
        family = buf[13]
        length = int.from_bytes(buf[14:16], "big")
        need, kind = 0, "unspec"
        if command == _V2_PROXY:
            need, kind = _V2_FAMILIES[family]
            if length < need:
                raise ProxyProtocolError(
                    f"PROXY v2 address block of {length} bytes is too short for "
                    f"{_V2_NAMES[family]} (needs {need})")
        total = _V2_HEADER + length
        if len(buf) < total:
            return None
        block = bytes(buf[_V2_HEADER:total])
        leftover = bytes(buf[total:])
        if command == _V2_LOCAL or kind == "unspec":
            return ProxyResult(None, None, leftover, version=2)
        client: Address
        server: Address
        if kind == "inet" or kind == "inet6":
            size = 4 if kind == "inet" else 16
            src = ipaddress.ip_address(block[:size])
            dst = ipaddress.ip_address(block[size:2 * size])
            sport = int.from_bytes(block[2 * size:2 * size + 2], "big")
            dport = int.from_bytes(block[2 * size + 2:2 * size + 4], "big")
            client, server = (str(src), sport), (str(dst), dport)
        else:
            client = (_unix_path(block[:108]), None)
            server = (_unix_path(block[108:216]), None)
        return ProxyResult(client, server, leftover, version=2, tlvs=_parse_tlvs(block[need:]))


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "backslashreplace")


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    records: list[tuple[int, bytes]] = []
    i = 0
    n = len(data)
    while i < n:
        if n - i < 3:
            raise ProxyProtocolError(
                f"PROXY v2 TLV truncated: {n - i} trailing byte(s), a TLV needs at least 3")
        kind = data[i]
        size = int.from_bytes(data[i + 1:i + 3], "big")
        if i + 3 + size > n:
            raise ProxyProtocolError(
                f"PROXY v2 TLV type 0x{kind:02x} declares {size} bytes but only "
                f"{n - i - 3} remain in the header")
        records.append((kind, data[i + 3:i + 3 + size]))
        i += 3 + size
    return tuple(records)
