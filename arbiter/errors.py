"""Typed errors and the process exit codes.

Library code raises these; only ``arbiter.cli`` turns them into exit codes and
messages. Workers exit with the same codes so the master can tell a bad deploy
(import error, boot error) from a crash.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    RUNTIME_ERROR = 1
    USAGE = 2
    BOOT_ERROR = 3
    APP_LOAD_ERROR = 4


class ArbiterError(Exception):
    """Base of every error arbiter raises on purpose."""

    exit_code: ExitCode = ExitCode.RUNTIME_ERROR


class ConfigError(ArbiterError):
    """A setting has a value that is not allowed; the message names both."""

    exit_code = ExitCode.USAGE

    def __init__(self, setting: str, value: object, allowed: str) -> None:
        self.setting = setting
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid value for {setting}: {value!r} ({allowed})")


class UsageError(ArbiterError):
    """The command line or config file cannot be understood at all."""

    exit_code = ExitCode.USAGE


class BindError(ArbiterError):
    """A listening address could not be bound; the message names the address."""

    exit_code = ExitCode.RUNTIME_ERROR


class AppLoadError(ArbiterError):
    """An import string ("module:attr") could not be resolved."""

    exit_code = ExitCode.APP_LOAD_ERROR


class BootError(ArbiterError):
    """The app was imported but could not start (lifespan startup failed...)."""

    exit_code = ExitCode.BOOT_ERROR


class PidfileError(ArbiterError):
    """The pid file names a live process or cannot be written."""

    exit_code = ExitCode.RUNTIME_ERROR


class ControlError(ArbiterError):
    """A control command could not reach the master, or the master refused or aborted it."""

    exit_code = ExitCode.RUNTIME_ERROR
