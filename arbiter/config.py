"""Resolve settings into a frozen, validated Config, cut into narrow slices.

Precedence: CLI > environment (ARBITER_*) > config file > default (which may
come from WEB_CONCURRENCY / PORT / FORWARDED_ALLOW_IPS). No I/O happens here:
the caller hands in the parsed CLI values, the environment and the names the
config file defined. Each consumer receives only its slice (HttpConfig,
WorkerConfig, ArbiterConfig), never the whole Config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from arbiter.addresses import Address, parse_address
from arbiter.errors import ConfigError
from arbiter.settings import BY_NAME, SETTINGS, InvalidValue, Setting, default_of

# gunicorn's hook names, called by arbiter.master. post_worker_init stays listed so that
# a config defining it is refused with the reason, not as an unknown setting.
HOOK_NAMES = frozenset({
    "on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init", "worker_exit",
    "on_reload", "on_exit", "child_exit",
})


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    keyfile: str | None
    certfile: str
    password: str | None
    ca_certs: str | None
    cert_reqs: str
    ciphers: str | None


@dataclasses.dataclass(frozen=True)
class AccessLogConfig:
    enabled: bool
    path: str | None
    format: str | None
    json: bool
    health: bool = False  # also log --health-path requests


@dataclasses.dataclass(frozen=True)
class LogConfig:
    level: str
    error_log: str | None


@dataclasses.dataclass(frozen=True)
class PrivilegesConfig:
    """Who a worker becomes after the fork (None: stay as the master is), and the
    umask of both sides. Plain numbers: the names were looked up at config time."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...]  # the supplementary groups a worker gets when it switches
    umask: int | None
    user: str  # for messages: "nobody (uid 65534)"

    @property
    def switches(self) -> bool:
        return self.uid is not None or self.gid is not None

    @property
    def owner(self) -> tuple[int, int] | None:
        """(uid, gid) for chown(2) of the files the master creates; -1 keeps one."""
        if not self.switches:
            return None
        return (-1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)


@dataclasses.dataclass(frozen=True)
class HttpConfig:
    """What the HTTP stack of one worker needs; nothing about processes."""

    backend: str
    root_path: str
    keep_alive_s: float
    timeout_header_s: float
    timeout_body_s: float
    timeout_write_s: float
    graceful_timeout_s: float
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    limit_request_body: int
    limit_concurrency: int
    ws_backend: str  # auto | websockets | wsproto (--ws)
    ws_max_size: int
    ws_ping_interval_s: float
    ws_ping_timeout_s: float
    ws_close_timeout_s: float
    ws_max_queue: int
    ws_per_message_deflate: bool
    health_path: str | None
    server_header: bool
    date_header: bool
    default_headers: tuple[tuple[str, str], ...]
    proxy_headers: bool
    forwarded_allow_ips: tuple[str, ...]
    proxy_protocol: bool
    tls: TlsConfig | None
    access_log: AccessLogConfig
    backlog: int  # a worker's create_server() listens again, with this


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """What a worker process needs after the fork."""

    app: str
    factory: bool
    app_dir: str
    lifespan: str
    worker_class: str
    timeout_s: float
    warn_blocking_s: float
    graceful_timeout_s: float
    boot_timeout_s: float
    shutdown_delay_s: float
    timeout_lifespan_s: float | None  # None: derived from the boot and graceful timeouts
    proc_name: str
    log: LogConfig
    http: HttpConfig
    privileges: PrivilegesConfig


@dataclasses.dataclass(frozen=True)
class ArbiterConfig:
    """What the master needs to supervise workers."""

    workers: int
    timeout_s: float
    boot_timeout_s: float
    graceful_timeout_s: float
    shutdown_delay_s: float
    max_requests: int
    max_requests_jitter: int
    max_rss_mib: int
    max_lifetime_s: float
    max_recycling: int
    preload: bool
    reload: bool
    reload_dirs: tuple[str, ...]
    reload_include: tuple[str, ...]
    reload_exclude: tuple[str, ...]
    pid_file: str | None
    proc_name: str
    addresses: tuple[Address, ...]
    backlog: int
    uds_mode: int | None
    control_socket: str | None
    metrics_address: Address | None
    privileges: PrivilegesConfig


@dataclasses.dataclass(frozen=True)
class Config:
    """Every resolved setting, plus where each value came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    hooks: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def app(self) -> str | None:
        return self.values["app"]  # type: ignore[no-any-return]

    @property
    def addresses(self) -> tuple[Address, ...]:
        v = self.values
        if v["bind"]:
            return tuple(parse_address(b) for b in v["bind"])
        if v["fd"] is not None:
            return (parse_address(f"fd://{v['fd']}"),)
        if v["uds"]:
            return (parse_address(f"unix:{v['uds']}"),)
        host = v["host"]
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return (parse_address(f"{host}:{v['port']}"),)

    @property
    def proc_name(self) -> str:
        return self.values["proc_name"] or self.values["app"] or "arbiter"

    def privileges(self) -> PrivilegesConfig:
        v = self.values
        user = v["user"]
        gid = v["group"] if v["group"] is not None else (user.gid if user else None)
        groups: tuple[int, ...] = ()
        if v["initgroups"] and user is not None and gid is not None:
            groups = tuple(sorted(set(user.groups) | {gid}))
        return PrivilegesConfig(uid=user.uid if user else None, gid=gid, groups=groups,
                                umask=v["umask"], user=str(user) if user else "")

    def http(self) -> HttpConfig:
        v = self.values
        tls = None
        if v["ssl_certfile"]:
            tls = TlsConfig(v["ssl_keyfile"], v["ssl_certfile"], v["ssl_keyfile_password"],
                            v["ssl_ca_certs"], v["ssl_cert_reqs"], v["ssl_ciphers"])
        return HttpConfig(
            backend=v["http"], root_path=v["root_path"].rstrip("/"),
            keep_alive_s=v["keep_alive"], timeout_header_s=v["timeout_header"],
            timeout_body_s=v["timeout_body"], timeout_write_s=v["timeout_write"], graceful_timeout_s=v["graceful_timeout"],
            limit_request_line=v["limit_request_line"],
            limit_request_fields=v["limit_request_fields"],
            limit_request_field_size=v["limit_request_field_size"],
            limit_request_body=v["limit_request_body"], limit_concurrency=v["limit_concurrency"],
            ws_backend=v["ws"], ws_max_size=v["ws_max_size"],
            ws_ping_interval_s=v["ws_ping_interval"],
            ws_ping_timeout_s=v["ws_ping_timeout"], ws_close_timeout_s=v["ws_close_timeout"],
            ws_max_queue=v["ws_max_queue"], ws_per_message_deflate=v["ws_per_message_deflate"],
            health_path=v["health_path"],
            server_header=v["server_header"], date_header=v["date_header"],
            default_headers=v["headers"], proxy_headers=v["proxy_headers"],
            forwarded_allow_ips=v["forwarded_allow_ips"], proxy_protocol=v["proxy_protocol"],
            tls=tls,
            access_log=AccessLogConfig(v["access_log"], v["access_log_file"],
                                       v["access_log_format"], v["access_log_json"],
                                       v["access_log_health"]),
            backlog=v["backlog"],
        )

    def worker(self) -> WorkerConfig:
        v = self.values
        return WorkerConfig(
            app=v["app"] or "", factory=v["factory"], app_dir=v["app_dir"],
            lifespan=v["lifespan"], worker_class=v["worker_class"], timeout_s=v["timeout"],
            warn_blocking_s=v["warn_blocking"], graceful_timeout_s=v["graceful_timeout"],
            boot_timeout_s=v["boot_timeout"], shutdown_delay_s=v["shutdown_delay"],
            timeout_lifespan_s=v["timeout_lifespan"], proc_name=self.proc_name,
            log=LogConfig(v["log_level"], v["error_log"]), http=self.http(),
            privileges=self.privileges(),
        )

    def arbiter(self) -> ArbiterConfig:
        v = self.values
        return ArbiterConfig(
            workers=v["workers"], timeout_s=v["timeout"], boot_timeout_s=v["boot_timeout"],
            graceful_timeout_s=v["graceful_timeout"], shutdown_delay_s=v["shutdown_delay"],
            max_requests=v["max_requests"],
            max_requests_jitter=v["max_requests_jitter"], max_rss_mib=v["max_rss"],
            max_lifetime_s=v["max_lifetime"], max_recycling=v["max_recycling"],
            preload=v["preload"], reload=v["reload"], reload_dirs=v["reload_dirs"],
            reload_include=v["reload_include"], reload_exclude=v["reload_exclude"],
            pid_file=v["pid"], proc_name=self.proc_name, addresses=self.addresses,
            backlog=v["backlog"], uds_mode=v["uds_mode"], control_socket=v["control_socket"],
            metrics_address=parse_address(v["metrics_bind"]) if v["metrics_bind"] else None,
            privileges=self.privileges(),
        )


def resolve(
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge the sources by precedence and validate every value once.

    ``overrides`` (from ``arbiter.run(**kwargs)``) rank with the CLI.
    Raises ConfigError naming the setting, the value and what is allowed.
    """
    file_values = dict(file_values or {})
    hooks = {k: file_values.pop(k) for k in list(file_values) if k in HOOK_NAMES}
    for name, hook in hooks.items():
        if not callable(hook):
            raise ConfigError(f"config file: {name}", hook, "a hook must be callable")
    if "post_worker_init" in hooks:
        raise ConfigError("config file hook", "post_worker_init",
                          "not supported: a worker imports the app inside its event loop, so "
                          "there is no moment that matches; use post_fork (runs in the "
                          "worker right after the fork) or the app's lifespan startup")
    unknown = sorted(k for k in file_values if k not in BY_NAME)
    if unknown:
        raise ConfigError(f"config file setting {unknown[0]}", file_values[unknown[0]],
                          "not a known setting")
    merged = dict(cli)
    merged.update(overrides or {})
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    env = dict(environ)
    for setting in SETTINGS:
        raw, source = _pick(setting, merged, env, file_values)
        values[setting.name] = _convert(setting, raw, source)
        sources[setting.name] = source
    config = Config(values, sources, hooks)
    _check_consistency(config)
    return config


def _pick(setting: Setting, cli: Mapping[str, Any], env: Mapping[str, str],
          file_values: Mapping[str, Any]) -> tuple[Any, str]:
    if setting.name in cli and cli[setting.name] is not None and cli[setting.name] != []:
        return cli[setting.name], "command line"
    if env.get(setting.env_var, "") != "":
        return env[setting.env_var], f"env {setting.env_var}"
    if setting.name in file_values:
        return file_values[setting.name], "config file"
    if setting.default_env and env.get(setting.default_env, "").strip():
        return default_of(setting, dict(env)), f"env {setting.default_env}"
    return setting.default, "default"


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    if raw is None and source == "default":
        return None
    try:
        return setting.convert(raw)
    except InvalidValue as exc:
        label = setting.flag if setting.flags else setting.name.upper()
        if source.startswith("env "):
            label = f"{label} (from {source[4:]})"
        elif source == "config file":
            label = f"{setting.name} (config file)"
        raise ConfigError(label, raw, str(exc)) from None


def _check_consistency(config: Config) -> None:
    v = config.values
    try:
        config.addresses
    except ValueError as exc:
        raise ConfigError("--bind", v["bind"] or v["host"], str(exc)) from None
    if v["ssl_certfile"] is None and v["ssl_keyfile"] is not None:
        raise ConfigError("--ssl-keyfile", v["ssl_keyfile"], "needs --ssl-certfile as well")
    user = v["user"]
    if user is not None and user.gid is None and v["group"] is None:
        raise ConfigError("--user", user.uid, "this uid has no passwd entry, so it has no login "
                                              "group: give --group too")
    if v["initgroups"] and user is None:
        raise ConfigError("--initgroups", True, "needs --user, whose groups it sets")
    if v["initgroups"] and user is not None and user.name is None:
        raise ConfigError("--initgroups", True, f"uid {user.uid} has no passwd entry, so "
                                                "/etc/group cannot list its groups")
    if v["timeout"] and v["timeout"] < 2:
        raise ConfigError("--timeout", v["timeout"], "must be 0 (off) or at least 2 seconds")
