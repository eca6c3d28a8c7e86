"""The --pid file: written atomically, refused when it names a live process."""

from __future__ import annotations

import errno
import os
import tempfile

from arbiter.errors import PidfileError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def write(path: str, pid: int) -> None:
    try:
        with open(path) as f:
            old = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        old = 0
    except OSError as exc:
        raise PidfileError(f"cannot read pid file {path}: {exc.strerror}") from None
    if old and old != pid and _pid_alive(old):
        raise PidfileError(f"pid file {path} names a running process ({old}); "
                           f"is another arbiter running?")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".arbiter-pid-")
        with os.fdopen(fd, "w") as f:
            f.write(f"{pid}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise PidfileError(f"cannot write pid file {path}: {exc.strerror}") from None


def remove(path: str, pid: int) -> None:
    """Unlink only if the file still holds our pid (a successor may own it now)."""
    try:
        with open(path) as f:
            if int(f.read().strip() or 0) != pid:
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass
