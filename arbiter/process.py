"""The few OS calls about the process itself that both sides of the fork make.

The master and every worker name themselves (``ps`` and ``top`` show what each
process is) and set Linux process-control flags: the master becomes a child
subreaper, a worker asks for a signal when its master dies. A worker also
switches to ``--user``/``--group``. All live here, in the seam ``workers/`` may
import, so each is written once.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def set_title(title: str) -> None:
    """The process title ``ps`` shows; a no-op without setproctitle."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


def prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False where it is missing or fails (elsewhere: always)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def switch_user(uid: int | None, gid: int | None, groups: Sequence[int]) -> None:
    """Become ``uid``/``gid`` with exactly ``groups`` as supplementary groups.

    The order is the only one that works: setgroups and setgid need root, which
    setuid gives up for good (real, effective and saved ids all change). Raises
    OSError (EPERM) when the process may not make the switch. The kernel clears
    the parent-death signal when credentials change, so a caller re-arms it.
    """
    os.setgroups(list(groups))
    if gid is not None:
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
