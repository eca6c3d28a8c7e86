"""Why a worker stops and how long each step of its stop may take: pure rules, no I/O.

The master says why with its signal: SIGTERM means STOP (the server is going
away), SIGUSR2 means RETIRE (a reload, recycling, scale-down). The budgets
below keep every step of a stop inside the master's deadline, so a worker
finishes (and says what it cut) instead of being SIGKILLed mid-step.
"""

from __future__ import annotations

import enum


class StopReason(enum.Enum):
    STOP = "stop"  # SIGTERM: the whole server stops; honours --shutdown-delay
    RETIRE = "retire"  # SIGUSR2: this worker is replaced; drains at once

    @property
    def websocket_close_code(self) -> int:
        """RFC 6455 7.4.1: 1001 going away; IANA registry: 1012 service restart."""
        return 1001 if self is StopReason.STOP else 1012

    def shutdown_delay_s(self, configured_s: float) -> float:
        """--shutdown-delay is for the server going away (endpoint removal must
        propagate first); a retiring worker's replacement is already serving."""
        return configured_s if self is StopReason.STOP else 0.0


def exit_margin_s(budget_s: float) -> float:
    """Time kept back from a deadline the master enforces, for the worker's own
    exit (closing sockets, cancelling tasks) after the last step is cut."""
    return min(1.0, budget_s / 10)


def connection_drain_s(graceful_timeout_s: float) -> float:
    """How long open connections (requests, streams, WebSocket app tasks) get
    from the start of the drain: the graceful timeout, less the exit margin."""
    return graceful_timeout_s - exit_margin_s(graceful_timeout_s)


def lifespan_startup_s(timeout_lifespan_s: float | None, boot_timeout_s: float,
                       booting_for_s: float) -> tuple[float | None, str]:
    """The bound on lifespan startup (None: unbounded), and the setting that set it.

    Default (None): until just before the master's --boot-timeout (counted
    from the fork), so the worker, not a SIGKILL, reports the timeout. An
    explicit --timeout-lifespan bounds it too, whichever ends first; 0 leaves
    only --boot-timeout (0 as well: unbounded, as in the master).
    """
    left = None
    if boot_timeout_s:
        left = max(0.0, boot_timeout_s - exit_margin_s(boot_timeout_s) - booting_for_s)
    if timeout_lifespan_s and (left is None or timeout_lifespan_s <= left):
        return timeout_lifespan_s, "--timeout-lifespan"
    return left, "--boot-timeout"


def lifespan_shutdown_s(timeout_lifespan_s: float | None, graceful_timeout_s: float,
                        draining_for_s: float) -> tuple[float, str]:
    """The bound on lifespan shutdown, which runs once the connections are
    drained, and the setting that set it.

    Default (None): a third of --graceful-timeout. Either way never past the
    end of the graceful timeout counted from the start of the drain (the
    master kills the worker there); an explicit 0 leaves only that bound.
    """
    own = timeout_lifespan_s if timeout_lifespan_s is not None else graceful_timeout_s / 3
    left = max(0.0, graceful_timeout_s - exit_margin_s(graceful_timeout_s) - draining_for_s)
    if own and own <= left:
        return own, "--timeout-lifespan"
    return left, "--graceful-timeout"
