"""The one registry of settings.

Every setting is declared here exactly once: its name, type (a converter that
validates), default, CLI flag, environment variable (ARBITER_<NAME>) and help.
The CLI parser, the env and config-file readers and ``--print-config`` are all
derived from this table; nothing else declares a setting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Sequence
from typing import Any

from arbiter import accounts
from arbiter.addresses import parse_address

Converter = Callable[[Any], Any]


class InvalidValue(ValueError):
    """Raised by a converter; its message says what is allowed."""


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    convert: Converter
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    kind: str = "value"  # "value" | "bool" | "list" | "positional"
    metavar: str | None = None
    section: str = "server"
    default_env: str | None = None  # e.g. WEB_CONCURRENCY, read when nothing else sets it

    @property
    def env_var(self) -> str:
        return "ARBITER_" + self.name.upper()

    @property
    def flag(self) -> str:
        long_flags = [f for f in self.flags if f.startswith("--")]
        return long_flags[0] if long_flags else self.name


# ---------------------------------------------------------------- converters


def _int(minimum: int | None = None, maximum: int | None = None) -> Converter:
    def convert(raw: Any) -> int:
        if isinstance(raw, bool):
            raise InvalidValue("must be an integer")
        try:
            value = int(raw) if not isinstance(raw, str) else int(raw.strip(), 10)
        except (TypeError, ValueError):
            raise InvalidValue(_range_text("an integer", minimum, maximum)) from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise InvalidValue(_range_text("an integer", minimum, maximum))
        return value

    return convert


def _float(minimum: float | None = None) -> Converter:
    def convert(raw: Any) -> float:
        if isinstance(raw, bool):
            raise InvalidValue("must be a number of seconds")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InvalidValue(_range_text("a number", minimum, None)) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidValue("must be a finite number")
        if minimum is not None and value < minimum:
            raise InvalidValue(_range_text("a number", minimum, None))
        return value

    return convert


def _range_text(what: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"must be {what} from {minimum} to {maximum}"
    if minimum is not None:
        return f"must be {what} >= {minimum}"
    return f"must be {what}"


def _choice(*choices: str, or_import_string: bool = False) -> Converter:
    def convert(raw: Any) -> str:
        value = str(raw).strip()
        if value in choices:
            return value
        if or_import_string and ":" in value and all(value.split(":", 1)):
            return value
        allowed = ", ".join(choices)
        if or_import_string:
            allowed += " or an import string package.module:Class"
        raise InvalidValue(f"allowed: {allowed}")

    return convert


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidValue("must be true or false (1/0, yes/no, on/off)")


def _str(raw: Any) -> str:
    if not isinstance(raw, (str, os.PathLike)):
        raise InvalidValue("must be a string")
    return os.fspath(raw)


def _optional_str(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    return _str(raw)


def _list_of(item: Converter) -> Converter:
    def convert(raw: Any) -> tuple[Any, ...]:
        if raw is None:
            return ()
        if isinstance(raw, str):
            parts = [p.strip() for p in raw.split(",") if p.strip()]
        elif isinstance(raw, Sequence):
            parts = list(raw)
        else:
            raise InvalidValue("must be a list")
        return tuple(item(p) for p in parts)

    return convert


def _import_string(raw: Any) -> str:
    value = _str(raw).strip()
    module, sep, attr = value.partition(":")
    if not sep or not module or not attr:
        raise InvalidValue('must be an import string "module:attribute", e.g. main:app')
    return value


def _optional_import_string(raw: Any) -> str | None:
    return None if raw in (None, "") else _import_string(raw)


def _header(raw: Any) -> tuple[str, str]:
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        name, value = str(raw[0]), str(raw[1])
    else:
        name, sep, value = _str(raw).partition(":")
        if not sep:
            raise InvalidValue("must be NAME:VALUE")
    name, value = name.strip(), value.strip()
    token_chars = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if not name or set(name) - token_chars:
        raise InvalidValue("header name must be a non-empty HTTP token")
    if any(c in value for c in "\r\n\x00"):
        raise InvalidValue("header value must not contain CR, LF or NUL")
    return name, value


def _trusted_peer(raw: Any) -> str:
    value = _str(raw).strip()
    if value in ("*", "unix"):
        return value
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidValue("must be IP addresses or CIDR networks, or *") from None
    return value


def _optional_listen_address(raw: Any) -> str | None:
    """HOST:PORT, [IPV6]:PORT or unix:PATH for a listener the master serves itself."""
    if raw in (None, ""):
        return None
    text = _str(raw).strip()
    try:
        address = parse_address(text)
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None
    if address.kind == "fd":
        raise InvalidValue("must be HOST:PORT, [IPV6]:PORT or unix:PATH (fd://N is for --bind)")
    return text


def _octal(example: str) -> Converter:
    """An octal number up to 0o777: 660, 0660 and 0o660 are the same (a config
    file's int is taken as it is, so write it as 0o660 there)."""

    def convert(raw: Any) -> int | None:
        if raw in (None, ""):
            return None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        else:
            try:
                value = int(str(raw).strip(), 8)
            except ValueError:
                raise InvalidValue(f"must be an octal number such as {example}") from None
        if not 0 <= value <= 0o777:
            raise InvalidValue(f"must be an octal number from 0 to 777, such as {example}")
        return value

    return convert


def _user(raw: Any) -> accounts.User | None:
    if raw in (None, ""):
        return None
    if isinstance(raw, accounts.User):
        return raw
    text = str(raw).strip()
    try:
        return accounts.lookup_user(text)
    except LookupError:
        raise InvalidValue("no such user") from None
    except ValueError:
        raise InvalidValue(f"must be a user name or a uid from 0 to {accounts.MAX_ID}") from None


def _group(raw: Any) -> int | None:
    if raw in (None, ""):
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= accounts.MAX_ID:
        return raw
    text = str(raw).strip()
    try:
        return accounts.lookup_group(text)
    except LookupError:
        raise InvalidValue("no such group") from None
    except ValueError:
        raise InvalidValue(f"must be a group name or a gid from 0 to {accounts.MAX_ID}") from None


def _health_path(raw: Any) -> str | None:
    if raw in (None, ""):
        return None
    value = _str(raw).strip()
    if not value.startswith("/") or not value.isascii() or "?" in value or "#" in value \
            or any(c <= " " or c == "\x7f" for c in value):
        raise InvalidValue("must be an ASCII path starting with /, without a query, e.g. /healthz")
    return value


# ------------------------------------------------------------------ registry

S = Setting

SETTINGS: tuple[Setting, ...] = (
    # -- app
    S("app", _optional_import_string, None, "The ASGI app as an import string, module:attribute.",
      kind="positional", metavar="APP", section="app"),
    S("config", _optional_str, None, "A Python config file; its module-level names set settings.",
      ("-c", "--config"), metavar="FILE", section="app"),
    S("app_dir", _str, ".", "Directory put first on sys.path before importing the app.",
      ("--app-dir",), metavar="DIR", section="app"),
    S("factory", _bool, False, "APP names a factory called with no arguments to make the app.",
      ("--factory",), kind="bool", section="app"),
    S("lifespan", _choice("auto", "on", "off"), "auto", "ASGI lifespan protocol: auto, on or off.",
      ("--lifespan",), section="app"),
    S("root_path", _str, "", "ASGI root_path: the prefix the app is mounted under.",
      ("--root-path",), metavar="PATH", section="app"),
    # -- sockets
    S("bind", _list_of(_str), (), "Address to listen on: HOST:PORT, [IPV6]:PORT, unix:PATH or "
      "fd://N. Repeatable.", ("-b", "--bind"), kind="list", metavar="ADDRESS", section="sockets"),
    S("host", _str, "127.0.0.1", "Host to bind when no --bind is given.", ("--host",),
      section="sockets"),
    S("port", _int(0, 65535), 8000, "Port to bind when no --bind is given (0 picks a free one).",
      ("--port",), section="sockets", default_env="PORT"),
    S("uds", _optional_str, None, "Unix domain socket path to bind.", ("--uds",), metavar="PATH",
      section="sockets"),
    S("fd", _int(0), None, "Inherited file descriptor of a listening socket to serve.",
      ("--fd",), section="sockets"),
    S("backlog", _int(1, 65535), 2048, "Listen backlog.", ("--backlog",), section="sockets"),
    S("uds_mode", _octal("660"), None, "File mode (octal) for unix sockets arbiter creates.",
      ("--uds-mode",), metavar="MODE", section="sockets"),
    S("control_socket", _optional_str, None, "Unix socket (created mode 0600) on which the "
      "master takes commands: arbiter status, reload, scale, reopen-logs, stop. Off by default.",
      ("--control-socket",), metavar="PATH", section="sockets"),
    S("metrics_bind", _optional_listen_address, None, "Serve Prometheus metrics from the "
      "master (GET /metrics) on HOST:PORT, [IPV6]:PORT or unix:PATH; off by default.",
      ("--metrics-bind",), metavar="ADDRESS", section="sockets"),
    # -- workers
    S("workers", _int(1, 512), 1, "Number of worker processes.", ("-w", "--workers"),
      section="workers", default_env="WEB_CONCURRENCY"),
    S("worker_class", _choice("auto", "uvloop", "asyncio", or_import_string=True), "auto",
      "Worker class: uvloop, asyncio, or package.module:Class (auto = uvloop when installed).",
      ("-k", "--worker-class"), metavar="CLASS", section="workers"),
    S("http", _choice("auto", "h11", "httptools"), "auto",
      "HTTP/1.1 parser: auto (httptools when installed), h11 or httptools.", ("--http",),
      section="workers"),
    S("ws", _choice("auto", "websockets", "wsproto"), "auto",
      "WebSocket protocol backend: auto (websockets when installed, else wsproto), "
      "websockets or wsproto.", ("--ws",), section="workers"),
    S("timeout", _float(0), 30.0, "Seconds a ready worker's event loop may stay silent before it "
      "is aborted (traceback) and killed; 0 disables.", ("-t", "--timeout"), section="workers"),
    S("warn_blocking", _float(0), 0.5, "Log a warning with the Python stack of the code that "
      "holds a worker's event loop for longer than this many seconds (a synchronous call in "
      "async code); 0 disables.", ("--warn-blocking",), metavar="SECONDS", section="workers"),
    S("boot_timeout", _float(0), 60.0, "Seconds a worker may take to import the app and finish "
      "lifespan startup; 0 disables.", ("--boot-timeout",), section="workers"),
    S("graceful_timeout", _float(0), 30.0, "Seconds in-flight requests get to finish on stop or "
      "reload before the worker is killed.", ("--graceful-timeout", "--timeout-graceful-shutdown"), section="workers"),
    S("shutdown_delay", _float(0), 0.0, "On SIGTERM, keep accepting and serving for this many "
      "seconds (the --health-path answers 503 meanwhile, so a load balancer or Kubernetes "
      "takes the server out of rotation) before the graceful stop begins; 0 disables.",
      ("--shutdown-delay",), metavar="SECONDS", section="workers"),
    S("timeout_lifespan", _float(0), None, "Seconds lifespan startup and lifespan shutdown may "
      "each take (a startup past it fails the boot: exit 3). Default: startup until just "
      "before --boot-timeout, shutdown a third of --graceful-timeout; either way never past "
      "those. 0: no bound of its own.", ("--timeout-lifespan",), metavar="SECONDS",
      section="workers"),
    S("max_requests", _int(0), 0, "Recycle a worker after this many requests; 0 disables.",
      ("--max-requests", "--limit-max-requests"), section="workers"),
    S("max_requests_jitter", _int(0), 0, "Add a random 0..N to each worker's --max-requests.",
      ("--max-requests-jitter",), section="workers"),
    S("max_rss", _int(0), 0, "Recycle a worker whose RSS stays above this many MiB; 0 disables.",
      ("--max-rss",), metavar="MIB", section="workers"),
    S("max_lifetime", _float(0), 0.0, "Recycle a worker after this many seconds; 0 disables.",
      ("--max-lifetime",), section="workers"),
    S("max_recycling", _int(1), 1, "At most this many workers are being recycled at once.",
      ("--max-recycling",), section="workers"),
    S("preload", _bool, False, "Import the app in the master before forking workers.",
      ("--preload",), kind="bool", section="workers"),
    S("reload", _bool, False, "Development: reload workers when source files change.",
      ("--reload",), kind="bool", section="workers"),
    S("reload_dirs", _list_of(_str), (), "Directories to watch with --reload (repeatable).",
      ("--reload-dir",), kind="list", metavar="DIR", section="workers"),
    S("reload_include", _list_of(_str), ("*.py",), "Glob of files to watch with --reload.",
      ("--reload-include",), kind="list", metavar="GLOB", section="workers"),
    S("reload_exclude", _list_of(_str), (".*", "*.py[cod]", "*~"), "Glob of files to ignore "
      "with --reload.", ("--reload-exclude",), kind="list", metavar="GLOB", section="workers"),
    S("pid", _optional_str, None, "Write the master's pid to this file.", ("--pid",),
      metavar="FILE", section="workers"),
    S("proc_name", _optional_str, None, "Name used in process titles (default: the app).",
      ("--proc-name", "-n", "--name"), section="workers"),
    # -- privileges
    S("user", _user, None, "Run the workers as this user (a name or a uid); the master binds "
      "first and stays root. Unix sockets and log files arbiter creates are chowned to it.",
      ("-u", "--user"), metavar="USER", section="privileges"),
    S("group", _group, None, "Run the workers with this group (a name or a gid); default: the "
      "login group of --user.", ("-g", "--group"), metavar="GROUP", section="privileges"),
    S("umask", _octal("022"), None, "umask (octal) of the master, set before it binds and opens "
      "log files, and of the workers (default: inherited).", ("-m", "--umask"), metavar="MASK",
      section="privileges"),
    S("initgroups", _bool, False, "Give the workers the supplementary groups of --user (its "
      "login group and every group /etc/group lists it in); default: none.", ("--initgroups",), kind="bool", section="privileges"),
    # -- http
    S("keep_alive", _float(0), 5.0, "Seconds an idle keep-alive connection is kept open.",
      ("--keep-alive", "--timeout-keep-alive"), section="http"),
    S("timeout_header", _float(0), 10.0, "Seconds a client may take to send a complete request "
      "head, from its first byte (408 if part of a head came, a silent close if nothing did); "
      "0 disables.", ("--timeout-header",), section="http"),
    S("timeout_body", _float(0), 30.0, "Seconds a request body may make no progress while the "
      "app waits for it (408 if no response has started, then close; the app gets "
      "http.disconnect); 0 disables.", ("--timeout-body",), section="http"),
    S("timeout_write", _float(0), 30.0, "Seconds a response write may make no progress before the "
      "client is dropped; 0 disables.", ("--timeout-write",), section="http"),
    S("limit_request_line", _int(0, 65536), 8190, "Maximum bytes in the request line (414).",
      ("--limit-request-line",), section="http"),
    S("limit_request_fields", _int(0, 32768), 100, "Maximum number of request headers (431).",
      ("--limit-request-fields",), section="http"),
    S("limit_request_field_size", _int(0, 1048576), 8190, "Maximum bytes in one request header "
      "(431).", ("--limit-request-field-size",), section="http"),
    S("limit_request_body", _int(0), 0, "Maximum request body bytes (413); 0 means unlimited.",
      ("--limit-request-body",), section="http"),
    S("limit_concurrency", _int(0), 0, "Maximum in-flight requests per worker; past it the worker "
      "stops accepting (the kernel hands new connections to other workers) and answers "
      "503 with Retry-After to requests on open connections; 0 means unlimited.",
      ("--limit-concurrency",), section="http"),
    S("ws_max_size", _int(1), 16 * 1024 * 1024, "Largest WebSocket message in bytes; a "
      "bigger one closes the connection with 1009.", ("--ws-max-size",), section="http"),
    S("ws_ping_interval", _float(0), 20.0, "Seconds between WebSocket pings the server sends "
      "to keep connections alive and find dead peers; 0 disables.", ("--ws-ping-interval",),
      section="http"),
    S("ws_ping_timeout", _float(0), 20.0, "Seconds to wait for the pong before closing the "
      "WebSocket with 1011.", ("--ws-ping-timeout",), section="http"),
    S("ws_close_timeout", _float(0), 5.0, "Seconds to wait for the client's close frame after "
      "the server closes a WebSocket (a stop, a reload, the app's close) before closing TCP; "
      "0 closes at once.", ("--ws-close-timeout",), metavar="SECONDS", section="http"),
    S("ws_max_queue", _int(1), 32, "Incoming WebSocket messages buffered for an app that is "
      "not receiving; past it the server stops reading from that client.", ("--ws-max-queue",),
      section="http"),
    S("ws_per_message_deflate", _bool, True, "Accept the permessage-deflate WebSocket "
      "extension when a client offers it.", ("--ws-per-message-deflate",), kind="bool",
      section="http"),
    S("health_path", _health_path, None, "A path the worker answers itself, without calling "
      "the app (GET or HEAD): 200 while serving, 503 during --shutdown-delay and the drain.",
      ("--health-path",), metavar="PATH", section="http"),
    S("server_header", _bool, True, "Send a Server header.", ("--server-header",), kind="bool",
      section="http"),
    S("date_header", _bool, True, "Send a Date header.", ("--date-header",), kind="bool",
      section="http"),
    S("headers", _list_of(_header), (), "Extra default response header NAME:VALUE (repeatable).",
      ("--header",), kind="list", metavar="NAME:VALUE", section="http"),
    S("proxy_headers", _bool, False, "Trust X-Forwarded-* and Forwarded from --forwarded-allow-ips.",
      ("--proxy-headers",), kind="bool", section="http"),
    S("forwarded_allow_ips", _list_of(_trusted_peer), ("127.0.0.1", "::1", "unix"),
      "Peers trusted for proxy headers and PROXY protocol: IPs, CIDRs, unix, or *.",
      ("--forwarded-allow-ips",), section="http", default_env="FORWARDED_ALLOW_IPS"),
    S("proxy_protocol", _bool, False, "Expect a PROXY protocol v1/v2 header from trusted peers.",
      ("--proxy-protocol",), kind="bool", section="http"),
    S("ssl_keyfile", _optional_str, None, "TLS private key file.", ("--ssl-keyfile", "--keyfile"),
      section="tls"),
    S("ssl_certfile", _optional_str, None, "TLS certificate chain file.", ("--ssl-certfile", "--certfile"),
      section="tls"),
    S("ssl_keyfile_password", _optional_str, None, "Password of the TLS key file.",
      ("--ssl-keyfile-password",), section="tls"),
    S("ssl_ca_certs", _optional_str, None, "CA certificates to verify client certificates.",
      ("--ssl-ca-certs", "--ca-certs"), section="tls"),
    S("ssl_cert_reqs", _choice("none", "optional", "required"), "none",
      "Client certificate requirement: none, optional or required.", ("--ssl-cert-reqs",),
      section="tls"),
    S("ssl_ciphers", _optional_str, None, "OpenSSL cipher string (default: OpenSSL's).",
      ("--ssl-ciphers",), section="tls"),
    # -- logging
    S("log_level", _choice("critical", "error", "warning", "info", "debug"), "info",
      "Error log level.", ("--log-level",), section="logging"),
    S("log_format", _choice("text", "json"), "text",
      "Error log format: text lines, or JSON lines (time, level, pid, message, and for "
      "lifecycle events event, worker, generation and their facts).", ("--log-format",),
      section="logging"),
    S("error_log", _optional_str, None, "Error log file (default: stderr).", ("--error-log", "--error-logfile", "--log-file"),
      metavar="FILE", section="logging"),
    S("access_log", _bool, True, "Log one line per request.", ("--access-log",), kind="bool",
      section="logging"),
    S("access_log_file", _optional_str, None, "Access log file (default: stdout); "
      "--access-log FILE and gunicorn's --access-logfile FILE also set it.",
      ("--access-log-file",), metavar="FILE", section="logging"),
    S("access_log_format", _optional_str, None, "Access log format in gunicorn's atoms, e.g. "
      "'%(h)s \"%(r)s\" %(s)s %(b)s %(D)s'.", ("--access-log-format", "--access-logformat"), section="logging"),
    S("access_log_health", _bool, False, "Write access log lines for --health-path requests "
      "too (off: probes do not flood the log).", ("--access-log-health",), kind="bool",
      section="logging"),
    S("access_log_json", _bool, False, "Write the access log as JSON lines.",
      ("--access-log-json",), kind="bool", section="logging"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def default_of(setting: Setting, environ: dict[str, str]) -> Any:
    """The default, honouring a conventional env var such as WEB_CONCURRENCY or PORT."""
    if setting.default_env and environ.get(setting.default_env, "").strip():
        return environ[setting.default_env]
    return setting.default
