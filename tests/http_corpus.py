"""A table of request-smuggling and malformed-request cases, shared by the
sans-IO parser tests, the backend differential tests and the live socket test.

Every case is raw bytes plus what the server must make of them: either the
status it answers with (and then closes), or ``OK`` with the requests it must
see. The limits below are the ones the tests configure (sans-IO and live).

References in comments name the public advisory or issue a case was inspired
by; the bytes themselves are written for this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The limits every corpus run uses (HttpConfig field names -> values).
LIMITS = {
    "limit_request_line": 200,
    "limit_request_fields": 20,
    "limit_request_field_size": 300,
    "limit_request_body": 1000,
}
# The same limits as `arbiter` command-line flags.
SERVER_ARGS = [arg for name, value in LIMITS.items()
               for arg in ("--" + name.replace("_", "-"), str(value))]

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Req:
    """One request as the application must see it."""

    method: str
    target: bytes
    headers: Headers
    body: bytes = b""
    version: str = "1.1"


@dataclass(frozen=True)
class Case:
    id: str
    raw: bytes
    status: int | None = None  # None: accepted, see `requests`
    requests: tuple[Req, ...] = field(default=())
    ref: str = ""

    @property
    def ok(self) -> bool:
        return self.status is None


HOST = b"Host: x\r\n"
H: Headers = ((b"host", b"x"),)
CASES: list[Case] = []


def bad(case_id: str, raw: bytes, status: int = 400, ref: str = "") -> None:
    CASES.append(Case(case_id, raw, status, (), ref))


def ok(case_id: str, raw: bytes, *requests: Req, ref: str = "") -> None:
    CASES.append(Case(case_id, raw, None, requests, ref))


def post(headers: bytes, body: bytes = b"", target: bytes = b"/echo") -> bytes:
    return b"POST " + target + b" HTTP/1.1\r\n" + HOST + headers + b"\r\n" + body


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


TE = ((b"host", b"x"), (b"transfer-encoding", b"chunked"))

# ------------------------------------------------------------------ Content-Length

# The classic CL.TE / TE.CL desync: RFC 9112 6.1 says "ought to be handled as
# an error"; we do. (hypercorn #279, gunicorn 19.9 advisory, Starlet PR #34)
bad("cl-and-te", post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                      b"0\r\n\r\nX"), ref="pgjones/hypercorn#279")
bad("te-and-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"0\r\n\r\n"))
bad("cl-and-te-gzip", post(b"Content-Length: 3\r\nTransfer-Encoding: gzip\r\n", b"abc"))
# Duplicate Content-Length: rejected even when the values agree (meinheld #111,
# cherrypy/cheroot #275, waitress CVE-2019-16792).
bad("cl-dup-same", post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
    ref="CVE-2019-16792")
bad("cl-dup-different", post(b"Content-Length: 3\r\nContent-Length: 0\r\n", b"abc"),
    ref="mopemope/meinheld#111")
bad("cl-dup-zero-first", post(b"Content-Length: 0\r\nContent-Length: 3\r\n", b"abc"),
    ref="cherrypy/cheroot#275")
# A list value is how a proxy folds duplicates; atoi() would read the first (uwsgi #2775).
bad("cl-comma-list", post(b"Content-Length: 3, 3\r\n", b"abc"), ref="unbit/uwsgi#2775")
bad("cl-comma-list-different", post(b"Content-Length: 3,0\r\n", b"abc"))
# int() accepts signs, underscores and whitespace; CL is 1*DIGIT only
# (Twisted CVE-2022-24801, waitress CVE-2022-24761).
bad("cl-plus", post(b"Content-Length: +3\r\n", b"abc"), ref="CVE-2022-24801")
bad("cl-minus", post(b"Content-Length: -3\r\n", b"abc"), ref="CVE-2022-24761")
bad("cl-hex", post(b"Content-Length: 0x3\r\n", b"abc"))
bad("cl-underscore", post(b"Content-Length: 1_0\r\n", b"0123456789"))
bad("cl-inner-space", post(b"Content-Length: 1 0\r\n", b"0123456789"))
bad("cl-non-numeric", post(b"Content-Length: abc\r\n", b"abc"))
bad("cl-empty", post(b"Content-Length: \r\n", b"abc"))
bad("cl-decimal", post(b"Content-Length: 3.0\r\n", b"abc"))
bad("cl-unicode-digit", post(b"Content-Length: \xd9\xa3\r\n", b"abc"))
# Python's bytes.strip() also eats VT and FF; those are not OWS (gunicorn #3364).
bad("cl-vertical-tab", post(b"Content-Length: \x0b3\r\n", b"abc"), ref="benoitc/gunicorn#3364")
bad("cl-form-feed", post(b"Content-Length: 3\x0c\r\n", b"abc"), ref="benoitc/gunicorn#3364")
# Past 64 bits: a parser that wraps around reads a tiny length (uwsgi #2775).
bad("cl-overflow", post(b"Content-Length: 18446744073709551619\r\n", b"abc"),
    ref="unbit/uwsgi#2775")
bad("cl-space-before-colon", post(b"Content-Length : 3\r\n", b"abc"), ref="CVE-2021-22959")
bad("cl-over-limit", post(b"Content-Length: 5000\r\n", b"x" * 10), 413)
bad("cl-huge-over-limit", post(b"Content-Length: 9999999999\r\n", b"x" * 10), 413)
ok("cl-leading-zeros", post(b"Content-Length: 0003\r\n", b"abc"),
   Req("POST", b"/echo", H + ((b"content-length", b"0003"),), b"abc"))
ok("cl-ows", post(b"Content-Length: \t3 \r\n", b"abc"),
   Req("POST", b"/echo", H + ((b"content-length", b"3"),), b"abc"))
ok("cl-zero", post(b"Content-Length: 0\r\n"),
   Req("POST", b"/echo", H + ((b"content-length", b"0"),)))
ok("cl-exactly-limit", post(b"Content-Length: 1000\r\n", b"y" * 1000),
   Req("POST", b"/echo", H + ((b"content-length", b"1000"),), b"y" * 1000))
# A request hidden in a body stays body: the body is exactly CL bytes.
SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
ok("smuggled-in-cl-body", post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED),
   Req("POST", b"/echo", H + ((b"content-length", b"%d" % len(SMUGGLED)),), SMUGGLED))
ok("smuggled-in-chunked-body",
   chunked(b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"),
   Req("POST", b"/echo", TE, SMUGGLED))

# ------------------------------------------------------------------ Transfer-Encoding

# chunked must be the final coding, applied once (gunicorn CVE-2024-1135, CVE-2024-6827).
bad("te-chunked-then-gzip", post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
    ref="CVE-2024-6827")
bad("te-chunked-twice", post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
    ref="CVE-2024-1135")
bad("te-two-fields-chunked-first",
    post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", b"0\r\n\r\n"),
    ref="CVE-2024-1135")
bad("te-two-fields-chunked-twice",
    post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    ref="CVE-2024-1135")
# Codings we do not implement: 501 (RFC 9112 6.1).
bad("te-gzip", post(b"Transfer-Encoding: gzip\r\n", b"abc"), 501)
bad("te-gzip-then-chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501)
bad("te-two-fields-chunked-last",
    post(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 501)
bad("te-identity", post(b"Transfer-Encoding: identity\r\n", b"abc"), 501)  # gone since RFC 7230
bad("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 501)
bad("te-chunked-suffix", post(b"Transfer-Encoding: chunkedx\r\n", b"0\r\n\r\n"), 501)
bad("te-quoted", post(b"Transfer-Encoding: \"chunked\"\r\n", b"0\r\n\r\n"))  # not a token
bad("te-empty", post(b"Transfer-Encoding: \r\n", b"0\r\n\r\n"))
# Folded or disguised TE values (llhttp CVE-2022-32215, gunicorn #3364).
bad("te-obs-fold", post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    ref="CVE-2022-32215")
bad("te-obs-fold-tab", post(b"Transfer-Encoding: gzip\r\n\tchunked\r\n", b"0\r\n\r\n"),
    ref="CVE-2022-32215")
bad("te-vertical-tab", post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"),
    ref="benoitc/gunicorn#3364")
bad("te-form-feed", post(b"Transfer-Encoding: chunked\x0c\r\n", b"0\r\n\r\n"),
    ref="benoitc/gunicorn#3364")
bad("te-nul", post(b"Transfer-Encoding: chunked\x00\r\n", b"0\r\n\r\n"))
bad("te-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    ref="CVE-2021-22959")
bad("te-name-leading-space", b"POST /echo HTTP/1.1\r\n Transfer-Encoding: chunked\r\n"
    + HOST + b"\r\n0\r\n\r\n")
# Case and optional whitespace do not matter (RFC 9110 5.5, 7.8).
ok("te-upper-value", post(b"Transfer-Encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
   Req("POST", b"/echo", H + ((b"transfer-encoding", b"CHUNKED"),), b"abc"))
ok("te-upper-name", post(b"TRANSFER-ENCODING: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
   Req("POST", b"/echo", TE, b"abc"))
ok("te-ows", post(b"Transfer-Encoding: \t chunked\t \r\n", b"3\r\nabc\r\n0\r\n\r\n"),
   Req("POST", b"/echo", TE, b"abc"))

# ------------------------------------------------------------------ chunk sizes

bad("chunk-negative", chunked(b"-3\r\nabc\r\n0\r\n\r\n"))
bad("chunk-plus", chunked(b"+3\r\nabc\r\n0\r\n\r\n"))
bad("chunk-0x-prefix", chunked(b"0x3\r\nabc\r\n0\r\n\r\n"), ref="CVE-2022-24761")
bad("chunk-hex-overflow", chunked(b"1" + b"0" * 16 + b"3\r\nabc\r\n0\r\n\r\n"),
    ref="CVE-2022-24761")
bad("chunk-very-long-size", chunked(b"0" * 40 + b"3\r\nabc\r\n0\r\n\r\n"))
bad("chunk-empty-size", chunked(b"\r\nabc\r\n0\r\n\r\n"))
bad("chunk-non-hex", chunked(b"g\r\nabc\r\n0\r\n\r\n"))
bad("chunk-space-before-size", chunked(b" 3\r\nabc\r\n0\r\n\r\n"))
bad("chunk-space-after-size", chunked(b"3 \r\nabc\r\n0\r\n\r\n"))
bad("chunk-underscore", chunked(b"0_3\r\nabc\r\n0\r\n\r\n"))
bad("chunk-huge-over-limit", chunked(b"fffffff\r\n" + b"z" * 1500), 413)
bad("chunked-stream-over-limit", chunked(b"258\r\n" + b"a" * 600 + b"\r\n258\r\n"
                                         + b"b" * 600 + b"\r\n0\r\n\r\n"), 413)
# Line endings inside the chunked coding (h11 CVE-2025-43859, Go CVE-2025-22871).
bad("chunk-data-missing-crlf", chunked(b"3\r\nabcXX0\r\n\r\n"), ref="CVE-2025-43859")
bad("chunk-data-too-long", chunked(b"3\r\nabcdef\r\n0\r\n\r\n"), ref="CVE-2025-43859")
bad("chunk-data-lf-only", chunked(b"3\r\nabc\n0\r\n\r\n"), ref="CVE-2025-43859")
bad("chunk-data-cr-only", chunked(b"3\r\nabc\r0\r\n\r\n"))
bad("chunk-size-lf-only", chunked(b"3\nabc\r\n0\r\n\r\n"), ref="CVE-2025-22871")
bad("chunk-last-lf-only", chunked(b"3\r\nabc\r\n0\n\r\n"), ref="CVE-2025-22871")
# Extensions: bounded, and no bare CR/LF inside (Node CVE-2024-22019; Kestrel
# CVE-2025-55315; fasthttp PR #1899).
bad("chunk-ext-very-long", chunked(b"3;" + b"e" * 20000 + b"\r\nabc\r\n0\r\n\r\n"),
    ref="CVE-2024-22019")
# A chunk line is bounded at 1024 bytes: up to it accepted, past it refused, however split.
ok("chunk-line-at-limit", chunked(b"3;" + b"e" * 1022 + b"\r\nabc\r\n0\r\n\r\n"),
   Req("POST", b"/echo", TE, b"abc"))
bad("chunk-line-past-limit", chunked(b"3;" + b"e" * 1023 + b"\r\nabc\r\n0\r\n\r\n"))
bad("chunk-ext-bare-cr", chunked(b"3;a\rb\r\nabc\r\n0\r\n\r\n"))
bad("chunk-ext-bare-lf", chunked(b"3;a\nb\r\nabc\r\n0\r\n\r\n"), ref="CVE-2025-55315")
bad("chunk-ext-nul", chunked(b"3;a=\x00\r\nabc\r\n0\r\n\r\n"))
bad("chunk-ext-no-name", chunked(b"3;\r\nabc\r\n0\r\n\r\n"))
ok("chunk-ext-token", chunked(b"3;name=value\r\nabc\r\n0;last\r\n\r\n"),
   Req("POST", b"/echo", TE, b"abc"))
ok("chunk-ext-quoted", chunked(b"3;n=\"a b;c\"\r\nabc\r\n0\r\n\r\n"),
   Req("POST", b"/echo", TE, b"abc"))
# Trailers: accepted, validated like headers, never merged into the head; framing
# fields there are refused (RFC 9110 6.5.1; aiohttp CVE-2025-53643 is about trailers).
ok("chunk-trailers", chunked(b"3\r\nabc\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n"),
   Req("POST", b"/echo", TE, b"abc"))
bad("chunk-trailer-content-length", chunked(b"3\r\nabc\r\n0\r\nContent-Length: 99\r\n\r\n"),
    ref="CVE-2025-53643")
bad("chunk-trailer-transfer-encoding",
    chunked(b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"))
bad("chunk-trailer-obs-fold", chunked(b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n"))
bad("chunk-trailer-bad-name", chunked(b"3\r\nabc\r\n0\r\nX T: a\r\n\r\n"))
bad("chunk-trailer-nul", chunked(b"3\r\nabc\r\n0\r\nX-T: a\x00b\r\n\r\n"))
bad("chunk-trailer-lf-only", chunked(b"3\r\nabc\r\n0\r\nX-T: a\n\r\n"))
# A next request where the blank line ending the trailer section should be.
bad("chunk-missing-final-crlf", chunked(b"3\r\nabc\r\n0\r\n") + b"GET /x HTTP/1.1\r\n"
    + HOST + b"\r\n")
ok("chunked-many-small", chunked(b"".join(b"1\r\n%c\r\n" % c for c in b"hello") + b"0\r\n\r\n"),
   Req("POST", b"/echo", TE, b"hello"))
ok("chunked-upper-hex", chunked(b"A\r\n0123456789\r\n0\r\n\r\n"),
   Req("POST", b"/echo", TE, b"0123456789"))
ok("chunked-leading-zero-size", chunked(b"003\r\nabc\r\n000\r\n\r\n"),
   Req("POST", b"/echo", TE, b"abc"))

# ------------------------------------------------------------------ the head: line endings, fields

GET = b"GET / HTTP/1.1\r\n"
bad("bare-lf-head", b"GET / HTTP/1.1\nHost: x\n\n", ref="CVE-2022-32214, CVE-2019-16785")
bad("bare-lf-one-field", GET + b"Host: x\nX-A: 1\r\n\r\n", ref="CVE-2022-32214")
bad("bare-lf-end-of-head", GET + HOST + b"\n", ref="CVE-2022-35256")
bad("bare-lf-request-line", b"GET / HTTP/1.1\n" + HOST + b"\r\n")
bad("bare-cr-request-line", b"GET / HTTP/1.1\r" + HOST + b"\r\n", ref="CVE-2023-30589")
bad("bare-cr-in-value", GET + HOST + b"X-A: a\rb\r\n\r\n", ref="CVE-2023-30589")
bad("bare-cr-end-of-head", GET + HOST + b"\rX\r\n\r\n", ref="CVE-2025-23167")
bad("nul-in-name", GET + HOST + b"X-\x00A: 1\r\n\r\n")
bad("nul-in-value", GET + HOST + b"X-A: a\x00b\r\n\r\n")
bad("ctl-in-value", GET + HOST + b"X-A: a\x01b\r\n\r\n")
bad("del-in-value", GET + HOST + b"X-A: a\x7fb\r\n\r\n")
bad("obs-fold-space", GET + HOST + b"X-A: a\r\n b\r\n\r\n", ref="CVE-2019-16789")
bad("obs-fold-tab", GET + HOST + b"X-A: a\r\n\tb\r\n\r\n", ref="CVE-2019-16789")
bad("space-before-colon", GET + b"Host : x\r\n\r\n", ref="CVE-2021-22959")
bad("tab-before-colon", GET + b"Host\t: x\r\n\r\n", ref="CVE-2021-22959")
bad("name-with-space", GET + HOST + b"X A: 1\r\n\r\n")
bad("name-with-paren", GET + HOST + b"X(A): 1\r\n\r\n")
bad("name-with-at", GET + HOST + b"X@A: 1\r\n\r\n")
bad("name-with-quote", GET + HOST + b"X\"A: 1\r\n\r\n")
bad("name-non-ascii", GET + HOST + b"X-\xe9: 1\r\n\r\n")
bad("empty-name", GET + HOST + b": 1\r\n\r\n")
bad("no-colon", GET + HOST + b"X-A 1\r\n\r\n")
bad("first-field-leading-space", GET + b" Host: x\r\n\r\n")
# RFC 9112 3.2: a 1.1 request without exactly one Host is a 400.
bad("host-missing-1.1", b"GET / HTTP/1.1\r\n\r\n")
bad("host-twice", GET + HOST + b"Host: y\r\n\r\n")
ok("value-obs-text", GET + HOST + b"X-A: caf\xe9\r\n\r\n",
   Req("GET", b"/", H + ((b"x-a", b"caf\xe9"),)))
ok("value-empty", GET + HOST + b"X-A:\r\nX-B: \r\n\r\n",
   Req("GET", b"/", H + ((b"x-a", b""), (b"x-b", b""))))
ok("value-inner-whitespace", GET + HOST + b"X-A:  a \t b  \r\n\r\n",
   Req("GET", b"/", H + ((b"x-a", b"a \t b"),)))
ok("name-tchar-symbols", GET + HOST + b"X!#$%&'*+-.^_`|~A: 1\r\n\r\n",
   Req("GET", b"/", H + ((b"x!#$%&'*+-.^_`|~a", b"1"),)))
ok("dup-ordinary-field", GET + HOST + b"X-A: 1\r\nx-a: 2\r\n\r\n",
   Req("GET", b"/", H + ((b"x-a", b"1"), (b"x-a", b"2"))))

# ------------------------------------------------------------------ request line

bad("request-line-double-space", b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n")
bad("request-line-space-before-version", b"GET /  HTTP/1.1\r\n" + HOST + b"\r\n")
bad("request-line-trailing-space", b"GET / HTTP/1.1 \r\n" + HOST + b"\r\n")
bad("request-line-tab", b"GET\t/ HTTP/1.1\r\n" + HOST + b"\r\n")
bad("request-line-leading-space", b" GET / HTTP/1.1\r\n" + HOST + b"\r\n")
bad("request-line-no-version", b"GET /\r\n" + HOST + b"\r\n")  # HTTP/0.9 simple request
bad("version-2.0", b"GET / HTTP/2.0\r\n" + HOST + b"\r\n")
bad("version-1.2", b"GET / HTTP/1.2\r\n" + HOST + b"\r\n")
bad("version-0.9", b"GET / HTTP/0.9\r\n" + HOST + b"\r\n")
bad("version-lowercase", b"GET / http/1.1\r\n" + HOST + b"\r\n")
bad("version-two-digits", b"GET / HTTP/1.10\r\n" + HOST + b"\r\n")
bad("version-garbage", b"GET / HTTP/x.y\r\n" + HOST + b"\r\n")
bad("method-bad-char", b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n")
bad("method-lowercase", b"get / HTTP/1.1\r\n" + HOST + b"\r\n")
bad("method-unknown", b"FOO / HTTP/1.1\r\n" + HOST + b"\r\n")
bad("method-ctl", b"GE\x01T / HTTP/1.1\r\n" + HOST + b"\r\n")
bad("target-ctl", b"GET /a\x01b HTTP/1.1\r\n" + HOST + b"\r\n")
bad("target-nul", b"GET /a\x00b HTTP/1.1\r\n" + HOST + b"\r\n")
bad("target-del", b"GET /a\x7fb HTTP/1.1\r\n" + HOST + b"\r\n")
bad("target-space", b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n")
bad("target-tab", b"GET /a\tb HTTP/1.1\r\n" + HOST + b"\r\n")
bad("not-http", b"NOT HTTP AT ALL\r\n\r\n")
bad("tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n")
ok("absolute-form", b"GET http://x/p?q=1 HTTP/1.1\r\n" + HOST + b"\r\n",
   Req("GET", b"http://x/p?q=1", H))
ok("asterisk-form", b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n", Req("OPTIONS", b"*", H))
ok("target-query-and-fragment-chars", b"GET /a/b;c?d=e&f=%20#g HTTP/1.1\r\n" + HOST + b"\r\n",
   Req("GET", b"/a/b;c?d=e&f=%20#g", H))
ok("leading-empty-line", b"\r\n" + GET + HOST + b"\r\n", Req("GET", b"/", H))

# ------------------------------------------------------------------ limits

bad("request-line-414", b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414)
bad("request-line-414-query", b"GET /?" + b"q" * 250 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414)
bad("too-many-fields-431", GET + HOST + b"".join(b"X-%d: 1\r\n" % i for i in range(25))
    + b"\r\n", 431)
bad("field-value-too-large-431", GET + HOST + b"X-Big: " + b"b" * 400 + b"\r\n\r\n", 431)
bad("field-name-too-large-431", GET + HOST + b"X-" + b"n" * 400 + b": 1\r\n\r\n", 431)
ok("fields-at-limit", GET + HOST + b"".join(b"X-%d: 1\r\n" % i for i in range(19)) + b"\r\n",
   Req("GET", b"/", H + tuple((b"x-%d" % i, b"1") for i in range(19))))

# ------------------------------------------------------------------ valid requests

ok("get-simple", GET + HOST + b"\r\n", Req("GET", b"/", H))
ok("http10-no-host", b"GET / HTTP/1.0\r\n\r\n", Req("GET", b"/", (), version="1.0"))
ok("http10-keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
   Req("GET", b"/", ((b"connection", b"keep-alive"),), version="1.0"))
ok("post-content-length", post(b"Content-Length: 5\r\n", b"hello"),
   Req("POST", b"/echo", H + ((b"content-length", b"5"),), b"hello"))
ok("post-no-body", post(b""), Req("POST", b"/echo", H))
ok("expect-continue", post(b"Content-Length: 2\r\nExpect: 100-continue\r\n", b"ok"),
   Req("POST", b"/echo", H + ((b"content-length", b"2"), (b"expect", b"100-continue")), b"ok"))
ok("pipelined-three", GET + HOST + b"\r\n" + post(b"Content-Length: 2\r\n", b"hi")
   + chunked(b"2\r\nyo\r\n0\r\n\r\n"),
   Req("GET", b"/", H), Req("POST", b"/echo", H + ((b"content-length", b"2"),), b"hi"),
   Req("POST", b"/echo", TE, b"yo"))
ok("pipelined-after-close-delimited", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
   b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
   Req("GET", b"/a", H), Req("GET", b"/b", H + ((b"connection", b"close"),)))

# ------------------------------------------------------------------ upgrades
#
# RFC 9110 7.8: an upgrade the server does not take is ignored and the request
# served as HTTP/1.1; the offer (Upgrade, Connection's upgrade option) is not
# passed on. Taking one by mistake hands the following bytes to no parser at
# all, which is what h2c smuggling through a proxy relies on (Bishop Fox, 2020).

H2C_OFFER = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
ok("upgrade-h2c-ignored-then-pipelined", GET + HOST + H2C_OFFER + b"\r\n" + GET + HOST + b"\r\n",
   Req("GET", b"/", H + ((b"connection", b"HTTP2-Settings"), (b"http2-settings", b"AAMAAABk"))),
   Req("GET", b"/", H))
ok("upgrade-unknown-with-length-body",
   post(b"Connection: upgrade\r\nUpgrade: foo\r\nContent-Length: 5\r\n", b"hello") + GET + HOST
   + b"\r\n", Req("POST", b"/echo", H + ((b"content-length", b"5"),), b"hello"),
   Req("GET", b"/", H))
ok("upgrade-unknown-with-chunked-body",
   post(b"Upgrade: foo\r\nConnection: keep-alive, Upgrade\r\nTransfer-Encoding: chunked\r\n",
        b"2\r\nyo\r\n0\r\n\r\n") + GET + HOST + b"\r\n",
   Req("POST", b"/echo", H + ((b"connection", b"keep-alive"), (b"transfer-encoding", b"chunked")),
       b"yo"), Req("GET", b"/", H))
ok("upgrade-websocket-on-http10-ignored",
   b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", Req("GET", b"/", (), version="1.0"))
WS_OFFER = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" \
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
bad("upgrade-websocket-by-post", post(WS_OFFER))
bad("upgrade-websocket-with-a-body", post(WS_OFFER + b"Content-Length: 2\r\n", b"hi"
                                           ).replace(b"POST /echo", b"GET /"))

CASE_IDS = [case.id for case in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "duplicate case id"
BY_ID = {case.id: case for case in CASES}


# ------------------------------------------------------------------ sans-IO runner

class RecordingSink:
    """Stands in for the connection: applies the shared framing rules in
    on_head and the body limit in on_body, and records every call."""

    def __init__(self, limit_body: int = LIMITS["limit_request_body"]) -> None:
        from workers.http.framing import request_framing
        self.request_framing = request_framing
        self.limit_body = limit_body
        self.events: list[list] = []
        self.received = 0

    def on_head(self, head) -> None:
        method, target, version, headers, keep_alive = (
            head.method, head.target, head.version, head.headers, head.keep_alive)
        self.request_framing(headers, self.limit_body)
        # keep the list itself: a parser that appends to it later (trailers) is caught
        self.events.append(["head", method, target, version, headers, keep_alive])
        self.received = 0

    def on_body(self, data: bytes) -> None:
        self.received += len(data)
        if self.limit_body and self.received > self.limit_body:
            from workers.http.errors import RemoteProtocolError
            raise RemoteProtocolError(413, "Request body too large")
        if self.events and self.events[-1][0] == "body":
            self.events[-1][1] += data
        else:
            self.events.append(["body", bytes(data)])

    def on_end(self) -> None:
        self.events.append(["end"])

    def on_upgrade(self, leftover: bytes) -> None:
        self.events.append(["upgrade", leftover])

    def frozen(self) -> list[tuple]:
        return [tuple(tuple(e[4]) if i == 4 and e[0] == "head" else x
                      for i, x in enumerate(e)) for e in self.events]


def limits():
    from arbiter.config import resolve
    return resolve({k: str(v) for k, v in LIMITS.items()}, {}).http()


def run(parser_class: type, raw: bytes, split: str = "whole") -> tuple[int | None, list[tuple]]:
    """Feed ``raw`` (whole, byte by byte, or in halves); return (status or None, events)."""
    from workers.http.errors import RemoteProtocolError
    sink = RecordingSink()
    parser = parser_class(sink, limits())
    if split == "bytes":
        pieces = [raw[i:i + 1] for i in range(len(raw))]
    elif split == "halves":
        pieces = [raw[:len(raw) // 2], raw[len(raw) // 2:]]
    else:
        pieces = [raw]
    try:
        for piece in pieces:
            parser.feed(piece)
    except RemoteProtocolError as exc:
        return exc.status, sink.frozen()
    return None, sink.frozen()


def expected_events(case: Case) -> list[tuple]:
    events: list[tuple] = []
    for req in case.requests:
        keep_alive = req.version == "1.1"
        for name, value in req.headers:
            if name == b"connection":
                keep_alive = value.lower() != b"close"
        events.append(("head", req.method, req.target, req.version, req.headers, keep_alive))
        if req.body:
            events.append(("body", req.body))
        events.append(("end",))
    return events
