"""What the master policy asks the master loop to do, and how a worker ended.

Plain frozen values, no behaviour beyond describing themselves: ``arbiter.policy``
returns them, ``arbiter.master`` carries them out, and the metrics and logs read
them. Kept apart from the policy so each module stays one job.
"""

from __future__ import annotations

import dataclasses
import signal


@dataclasses.dataclass(frozen=True)
class Spawn:
    slot: int
    generation: int


@dataclasses.dataclass(frozen=True)
class Kill:
    pid: int
    sig: signal.Signals


@dataclasses.dataclass(frozen=True)
class Log:
    """A line for the error log. Lifecycle lines also name their ``event`` and carry
    its facts as ``fields`` (worker slot, pid, generation, reason...), which the JSON
    log format and the metrics read: the message is for people, the fields for tools."""

    level: str  # "debug" | "info" | "warning" | "error" | "critical"
    message: str
    event: str = ""  # spawned, ready, retired, exited, reload_started, _finished, _aborted
    fields: tuple[tuple[str, object], ...] = ()


@dataclasses.dataclass(frozen=True)
class Halt:
    code: int


@dataclasses.dataclass(frozen=True)
class ReloadFailed:
    generation: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ReloadDone:
    generation: int


Action = Spawn | Kill | Log | Halt | ReloadFailed | ReloadDone


@dataclasses.dataclass(frozen=True)
class ExitStatus:
    code: int | None = None
    sig: int | None = None

    def describe(self, killed_by_master: bool = False) -> str:
        if self.sig is not None:
            name = signal_name(self.sig)
            if self.sig == signal.SIGKILL and killed_by_master:
                return f"was killed by {name} from the master"
            if self.sig == signal.SIGKILL:
                return f"was killed by {name} (perhaps out of memory?)"
            return f"was killed by {name}"
        meaning = {3: " (boot error)", 4: " (app import error)"}.get(self.code or 0, "")
        return f"exited with code {self.code}{meaning}"


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
