"""argv -> Config -> Arbiter. The only module that prints errors and calls sys.exit.

The argument parser is generated from the settings registry; values are left
as raw strings here and validated once, in ``arbiter.config.resolve``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from arbiter import __version__, control
from arbiter.config import Config, resolve
from arbiter.errors import ArbiterError, ExitCode, UsageError
from arbiter.settings import BY_NAME, SETTINGS, Setting

SECTIONS = {"app": "app", "sockets": "sockets", "workers": "workers and supervision",
            "privileges": "privileges", "http": "HTTP", "tls": "TLS", "logging": "logging"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arbiter", description="Pre-fork process manager and ASGI server.",
        epilog="Every setting can also come from ARBITER_<NAME> env vars or a --config file. "
               "Commands to a running server (over its --control-socket): arbiter status, "
               "reload, scale N|+N|-N, reopen-logs, stop; see arbiter status --help.")
    groups = {key: parser.add_argument_group(title) for key, title in SECTIONS.items()}
    for s in SETTINGS:
        _add_setting(groups[s.section], s)
    parser.add_argument("--check-config", action="store_true",
                        help="Load the config and the app, then exit 0, or non-zero with the "
                             "reason.")
    parser.add_argument("--print-config", action="store_true",
                        help="Print every resolved setting and where it came from, then exit.")
    parser.add_argument("--version", action="version", version=f"arbiter {__version__}")
    return parser


def _add_setting(group: Any, s: Setting) -> None:
    help_text = f"{s.help} [env {s.env_var}]".replace("%", "%%")
    if s.kind == "positional":
        group.add_argument(s.name, nargs="?", default=None, metavar=s.metavar, help=help_text)
    elif s.kind == "bool":
        group.add_argument(*s.flags, dest=s.name, action=argparse.BooleanOptionalAction,
                           default=None, help=help_text)
    elif s.kind == "list":
        group.add_argument(*s.flags, dest=s.name, action="append", default=None,
                           metavar=s.metavar, help=help_text)
    else:
        group.add_argument(*s.flags, dest=s.name, default=None, metavar=s.metavar,
                           help=help_text)


COMMAND_HELP = {
    "status": "Show the master and a table of its workers.",
    "reload": "Rolling reload (as SIGHUP); returns once the new generation is serving, or "
              "exits 1 with the reason it was aborted.",
    "scale": "Set the worker count to N, or change it by +N / -N (never below 1), as "
             "SIGTTIN/SIGTTOU do; returns once that many workers are ready.",
    "reopen-logs": "Reopen the log files in the master and every worker (as SIGUSR1).",
    "stop": "Graceful stop (as SIGTERM), or --quick (as SIGINT); returns once the master "
            "has exited.",
}


def build_command_parser() -> argparse.ArgumentParser:
    """``arbiter COMMAND``: the control socket's client (COMMAND is the first argument)."""
    parser = argparse.ArgumentParser(
        prog="arbiter", description="Send a command to a running arbiter over its control "
                                    "socket (the server runs with --control-socket PATH).")
    common = argparse.ArgumentParser(add_help=False)
    _add_setting(common, BY_NAME["control_socket"])
    _add_setting(common, BY_NAME["config"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in control.COMMANDS:
        sub = commands.add_parser(name, parents=[common], help=COMMAND_HELP[name],
                                  description=COMMAND_HELP[name])
        if name == "status":
            sub.add_argument("--json", action="store_true",
                             help="Print the status as one JSON object.")
        elif name == "scale":
            sub.add_argument("workers", metavar="N|+N|-N", help="3, +2 or -1")
        elif name == "stop":
            sub.add_argument("--quick", action="store_true",
                             help="Quick stop (as SIGINT) instead of a graceful one.")
    return parser


def command_main(argv: list[str]) -> NoReturn:
    """Run one control command; exit 0 on success, 1 with the master's reason, 2 on usage."""
    args = build_command_parser().parse_args(argv)
    try:
        config = load_config({"control_socket": args.control_socket, "config": args.config},
                             dict(os.environ))
        path = config["control_socket"]
        if not path:
            raise UsageError(f"{args.command}: no control socket given: pass --control-socket "
                             f"PATH or set ARBITER_CONTROL_SOCKET (the server's own setting)")
        if args.command == "scale":
            try:
                request = control.parse_scale(args.workers)
            except control.RequestError as exc:
                raise UsageError(str(exc)) from None
        else:
            request = control.Request(args.command, quick=getattr(args, "quick", False))
        reply = control.call(path, request)
    except ArbiterError as exc:
        _fail(str(exc), exc.exit_code, exc)
    except KeyboardInterrupt:
        print(f"arbiter: {args.command}: interrupted; the master carries on", file=sys.stderr)
        sys.exit(ExitCode.RUNTIME_ERROR)
    if not reply["ok"]:
        print(f"arbiter: {args.command}: {reply.get('error', 'failed')}", file=sys.stderr)
        sys.exit(ExitCode.RUNTIME_ERROR)
    if args.command == "status":
        status = {k: v for k, v in reply.items() if k != "ok"}
        print(json.dumps(status, indent=2) if args.json else control.format_status(status))
    elif args.command == "stop":
        print(f"master {reply.get('pid')} has exited")
    else:
        print(reply.get("message", "done"))
    sys.exit(ExitCode.OK)


def load_config(cli_values: Mapping[str, Any], environ: Mapping[str, str],
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Resolve all sources; reads the config file named by CLI, env or overrides."""
    path = (overrides or {}).get("config") or cli_values.get("config") or \
        environ.get("ARBITER_CONFIG")
    file_values = read_config_file(path) if path else {}
    return resolve(cli_values, environ, file_values, overrides)


def read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    namespace: dict[str, Any] = {"__file__": os.path.abspath(path), "__name__": "__config__"}
    try:
        exec(compile(source, path, "exec"), namespace)
    except Exception as exc:
        raise UsageError(f"config file {path} failed: {type(exc).__name__}: {exc}") from None
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and not isinstance(v, type(os))}


def print_config(config: Config) -> None:
    width = max(len(s.name) for s in SETTINGS)
    for s in SETTINGS:
        print(f"{s.name:<{width}} = {config.values[s.name]!r}  ({config.sources[s.name]})")


def check_config(config: Config) -> None:
    from arbiter import workerclass
    from arbiter.importer import load_app

    workerclass.resolve(config["worker_class"])
    load_app(config["app"], config["app_dir"], config["factory"])


def serve(config: Config, *, reexec_argv: list[str] | None, app_object: Any = None,
          reload_config: Any = None) -> int:
    """Start the master for a resolved config; returns its exit code."""
    from arbiter import logs, workerclass
    from arbiter.master import Arbiter

    privileges = config.privileges()
    if privileges.umask is not None:  # before the log files and unix sockets are created
        os.umask(privileges.umask)
    logs.setup(config["log_level"], config["error_log"], config["access_log_file"],
               json_lines=config["log_format"] == "json", owner=privileges.owner)
    worker_cls = workerclass.resolve(config["worker_class"])
    workerclass.warm(worker_cls, config)
    preloaded = app_object
    if preloaded is None and config["preload"]:
        from arbiter.importer import load_app
        preloaded = load_app(config["app"], config["app_dir"], config["factory"])
    if config["reload"]:
        _warn_if_public(config)
    arbiter = Arbiter(config, worker_entry=workerclass.make_entry(worker_cls,
                                                                  config["worker_class"]),
                      reload_config=reload_config, reexec_argv=reexec_argv,
                      preloaded_app=preloaded,
                      worker_class_name=f"{worker_cls.__module__}:{worker_cls.__qualname__}")
    arbiter.start()
    return arbiter.run()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost reach only this machine."""
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _warn_if_public(config: Config) -> None:
    import logging
    for address in config.addresses:
        if address.kind == "tcp" and not is_loopback(address.host):
            logging.getLogger("arbiter.error").warning(
                "--reload is for development only, and %s is reachable from other machines",
                address)


def access_log_file_forms(argv: list[str]) -> list[str]:
    """``--access-log FILE`` (and gunicorn's ``--access-logfile FILE``, ``-`` for
    stdout) name the access log file, while a bare ``--access-log`` stays
    uvicorn's on/off switch. A following word is taken as a file only when it
    cannot be the app (``module:attr`` always has a colon) or another flag."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg in ("--access-log", "--access-logfile") and i + 1 < len(argv):
            following = argv[i + 1]
            if following == "-" or (not following.startswith("-") and ":" not in following):
                value, i = following, i + 1
        elif arg.startswith(("--access-log=", "--access-logfile=")):
            value = arg.partition("=")[2]
        if value is not None:
            out += ["--access-log"] + ([] if value == "-" else ["--access-log-file", value])
        elif arg == "--access-logfile":
            out.append("--access-log")
        else:
            out.append(arg)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> NoReturn:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and control.is_command(argv[0]):
        command_main(argv)
    argv = access_log_file_forms(argv)
    args = vars(build_parser().parse_args(argv))
    check, show = args.pop("check_config"), args.pop("print_config")
    environ = dict(os.environ)
    try:
        config = load_config(args, environ)
        if show:
            print_config(config)
            sys.exit(ExitCode.OK)
        if not config.app:
            raise UsageError("no app given: run `arbiter module:app` (or set ARBITER_APP)")
        if check:
            check_config(config)
            print(f"arbiter: config OK, app {config.app} loads")
            sys.exit(ExitCode.OK)
        code = serve(config, reexec_argv=["-m", "arbiter", *argv],
                     reload_config=lambda: load_config(args, dict(os.environ)))
    except ArbiterError as exc:
        _fail(str(exc), exc.exit_code, exc)
    except KeyboardInterrupt:
        code = ExitCode.OK
    sys.exit(code)


def _fail(message: str, code: int, exc: BaseException) -> NoReturn:
    cause = exc.__cause__
    if code == ExitCode.APP_LOAD_ERROR and cause is not None and not isinstance(
            cause, ModuleNotFoundError):
        import traceback
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
    print(f"arbiter: error: {message}", file=sys.stderr)
    sys.exit(code)
