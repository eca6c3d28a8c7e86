"""The few OS calls about the process itself that both sides of the fork make.

The master and every worker name themselves (``ps`` and ``top`` show what each
process is) and set Linux process-control flags: the master becomes a child
subreaper, a worker asks for a signal when its master dies. Both live here, in
the seam ``workers/`` may import, so each is written once.
"""

from __future__ import annotations

import ctypes
import sys

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
