"""Settings resolution: precedence, defaults from conventional env vars, validation."""

from __future__ import annotations

import pytest

import arbiter
from arbiter.config import resolve
from arbiter.errors import ConfigError
from arbiter.settings import BY_NAME, SETTINGS


def test_version_is_pinned() -> None:
    assert arbiter.__version__ == "0.1.0"
    assert set(arbiter.__all__) == {"run", "Config", "__version__"}


def test_every_setting_declared_once_with_env_var_and_help() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    flags = [f for s in SETTINGS for f in s.flags]
    assert len(flags) == len(set(flags))
    for s in SETTINGS:
        assert s.help and s.env_var == "ARBITER_" + s.name.upper()


def test_defaults() -> None:
    config = resolve({}, {})
    assert config["workers"] == 1
    assert config["port"] == 8000
    assert config["timeout"] == 30.0
    assert config["graceful_timeout"] == 30.0
    assert config["boot_timeout"] == 60.0
    assert config["warn_blocking"] == 0.5
    assert config["access_log"] is True
    assert config.sources["workers"] == "default"


def test_http_timeout_defaults_and_their_env_vars() -> None:
    """A 1 byte/s head may hold a connection 10 s, a stalled body 30 s, by default."""
    http = resolve({}, {}).http()
    assert http.timeout_header_s == 10.0
    assert http.timeout_body_s == 30.0
    assert http.keep_alive_s == 5.0 and http.timeout_write_s == 30.0
    http = resolve({}, {"ARBITER_TIMEOUT_BODY": "2.5", "ARBITER_TIMEOUT_HEADER": "0"}).http()
    assert http.timeout_body_s == 2.5 and http.timeout_header_s == 0.0
    assert BY_NAME["timeout_body"].flags == ("--timeout-body",)
    with pytest.raises(ConfigError) as info:
        resolve({"timeout_body": "-1"}, {})
    assert "--timeout-body" in str(info.value)


def test_precedence_cli_over_env_over_file_over_default() -> None:
    env = {"ARBITER_WORKERS": "3"}
    file_values = {"workers": 5, "backlog": 100}
    config = resolve({"workers": "2"}, env, file_values)
    assert config["workers"] == 2 and config.sources["workers"] == "command line"
    config = resolve({}, env, file_values)
    assert config["workers"] == 3 and config.sources["workers"] == "env ARBITER_WORKERS"
    config = resolve({}, {}, file_values)
    assert config["workers"] == 5 and config["backlog"] == 100


def test_web_concurrency_and_port_are_defaults_only() -> None:
    config = resolve({}, {"WEB_CONCURRENCY": "4", "PORT": "9001"})
    assert config["workers"] == 4 and config["port"] == 9001
    config = resolve({}, {"WEB_CONCURRENCY": "4"}, {"workers": 6})
    assert config["workers"] == 6
    config = resolve({"port": "81"}, {"PORT": "9001"})
    assert config["port"] == 81


@pytest.mark.parametrize("name, value, fragment", [
    ("workers", "abc", "--workers"),
    ("workers", "0", "from 1"),
    ("timeout", "-1", "--timeout"),
    ("warn_blocking", "-0.5", "--warn-blocking"),
    ("warn_blocking", "soon", "a number"),
    ("lifespan", "maybe", "auto, on, off"),
    ("http", "h2", "h11"),
    ("worker_class", "gevent", "uvloop, asyncio"),
    ("headers", ["bad header:x"], "token"),
    ("forwarded_allow_ips", "10.0.0.0/33,x", "CIDR"),
    ("port", "70000", "0 to 65535"),
    ("bind", ["[::1:80"], "--bind"),
    ("bind", ["host:port"], "not a number"),
    ("metrics_bind", "localhost:metrics", "--metrics-bind"),
    ("metrics_bind", "localhost:metrics", "not a number"),
    ("metrics_bind", "[::1:9100", "closing ]"),
    ("metrics_bind", "unix:", "needs a path"),
    ("metrics_bind", "fd://3", "fd://N is for --bind"),
])
def test_invalid_values_name_the_setting_and_the_rule(name: str, value: object,
                                                      fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({name: value}, {})
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="ARBITER_TIMEOUT"):
        resolve({}, {"ARBITER_TIMEOUT": "soon"})


def test_unknown_config_file_setting_is_rejected() -> None:
    with pytest.raises(ConfigError, match="wokers"):
        resolve({}, {}, {"wokers": 2})


def test_config_file_hooks_are_kept_apart() -> None:
    def on_starting(arbiter: object) -> None:
        pass

    config = resolve({}, {}, {"on_starting": on_starting, "workers": 2})
    assert config.hooks == {"on_starting": on_starting}


def test_bool_and_list_values() -> None:
    config = resolve({"access_log": False, "headers": ["X-A: 1", "X-B:2"]},
                     {"ARBITER_PROXY_HEADERS": "yes"})
    assert config["access_log"] is False
    assert config["proxy_headers"] is True
    assert config["headers"] == (("X-A", "1"), ("X-B", "2"))


def test_addresses_from_shortcuts() -> None:
    assert [str(a) for a in resolve({"host": "::1", "port": "9"}, {}).addresses] == ["[::1]:9"]
    assert [str(a) for a in resolve({"uds": "/tmp/a.sock"}, {}).addresses] == ["unix:/tmp/a.sock"]
    assert [str(a) for a in resolve({"fd": "3"}, {}).addresses] == ["fd://3"]
    config = resolve({"bind": ["127.0.0.1:1", "unix:/x"]}, {})
    assert [str(a) for a in config.addresses] == ["127.0.0.1:1", "unix:/x"]


def test_metrics_bind_is_off_by_default_and_parsed_like_bind() -> None:
    assert resolve({}, {}).arbiter().metrics_address is None
    tcp = resolve({"metrics_bind": "127.0.0.1:9100"}, {}).arbiter().metrics_address
    assert tcp is not None and (tcp.kind, tcp.host, tcp.port) == ("tcp", "127.0.0.1", 9100)
    unix = resolve({}, {"ARBITER_METRICS_BIND": "unix:/run/m.sock"}).arbiter().metrics_address
    assert unix is not None and (unix.kind, unix.path) == ("unix", "/run/m.sock")
    with pytest.raises(ConfigError, match="ARBITER_METRICS_BIND"):
        resolve({}, {"ARBITER_METRICS_BIND": "fd://4"})


def test_slices_carry_units_and_only_their_fields() -> None:
    config = resolve({"keep_alive": "2.5", "limit_request_body": "1024", "max_rss": "200"}, {})
    http = config.http()
    assert http.keep_alive_s == 2.5 and http.limit_request_body == 1024
    assert config.arbiter().max_rss_mib == 200
    assert config.worker().http == http
    assert config.worker().warn_blocking_s == 0.5
    assert resolve({}, {"ARBITER_WARN_BLOCKING": "0"}).worker().warn_blocking_s == 0.0
    assert not hasattr(http, "workers")


def test_registry_covers_help_flags() -> None:
    assert BY_NAME["workers"].flag == "--workers"
    assert BY_NAME["keep_alive"].flags == ("--keep-alive", "--timeout-keep-alive")


def test_access_log_file_forms() -> None:
    from arbiter.cli import access_log_file_forms as forms
    assert forms(["--access-log", "/tmp/a.log", "main:app"]) == [
        "--access-log", "--access-log-file", "/tmp/a.log", "main:app"]
    assert forms(["--access-log", "main:app"]) == ["--access-log", "main:app"]
    assert forms(["--access-log", "--workers", "2"]) == ["--access-log", "--workers", "2"]
    assert forms(["--access-logfile", "-"]) == ["--access-log"]
    assert forms(["--access-log=x.log"]) == ["--access-log", "--access-log-file", "x.log"]
    assert forms(["--no-access-log"]) == ["--no-access-log"]


def test_loopback_hosts_for_the_reload_warning() -> None:
    from arbiter.cli import is_loopback
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))


def test_long_lived_connection_and_stop_settings() -> None:
    """Defaults (uvicorn's where they overlap: deflate on, a queue of 32), the slices
    they reach, and the flags the CLI derives (--no-ws-per-message-deflate too)."""
    config = resolve({}, {})
    http, worker, arb = config.http(), config.worker(), config.arbiter()
    assert (http.ws_close_timeout_s, http.ws_max_queue, http.ws_per_message_deflate) == \
        (5.0, 32, True)
    assert http.health_path is None and http.access_log.health is False
    assert worker.shutdown_delay_s == arb.shutdown_delay_s == 0.0
    assert worker.timeout_lifespan_s is None  # derived from --boot- and --graceful-timeout
    from arbiter.cli import build_parser
    parsed = vars(build_parser().parse_args([
        "--no-ws-per-message-deflate", "--ws-max-queue", "4", "--ws-close-timeout", "1",
        "--shutdown-delay", "2.5", "--health-path", "/healthz", "--access-log-health",
        "--timeout-lifespan", "3"]))
    config = resolve({k: v for k, v in parsed.items() if k in BY_NAME}, {})
    http, worker = config.http(), config.worker()
    assert (http.ws_per_message_deflate, http.ws_max_queue, http.ws_close_timeout_s) == \
        (False, 4, 1.0)
    assert (http.health_path, http.access_log.health) == ("/healthz", True)
    assert (worker.shutdown_delay_s, worker.timeout_lifespan_s) == (2.5, 3.0)
    assert config.arbiter().shutdown_delay_s == 2.5
    assert resolve({}, {"ARBITER_SHUTDOWN_DELAY": "4"}).arbiter().shutdown_delay_s == 4.0


@pytest.mark.parametrize("name, value, fragment", [
    ("health_path", "healthz", "starting with /"),
    ("health_path", "/health?x=1", "without a query"),
    ("health_path", "/he alth", "starting with /"),
    ("health_path", "/héalth", "ASCII"),
    ("ws_max_queue", "0", "--ws-max-queue"),
    ("ws_close_timeout", "-1", "--ws-close-timeout"),
    ("shutdown_delay", "soon", "--shutdown-delay"),
    ("timeout_lifespan", "-2", "--timeout-lifespan"),
])
def test_bad_stop_and_websocket_values_name_the_setting(name: str, value: str,
                                                        fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({name: value}, {})
    assert fragment in str(info.value) and info.value.exit_code == 2
