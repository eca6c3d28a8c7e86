"""--backlog is the listen backlog the workers serve with, not a constant of their own.

Every worker calls listen() again on the socket it serves (asyncio's and uvloop's
create_server(sock=...) do), so the backlog it passes is the one the socket keeps.
The test holds the listening socket itself (--fd) and reads the backlog back from
the kernel: for a listener, TCP_INFO's ``tcpi_sacked`` is the accept queue's limit.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO")]


def max_backlog(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    # struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked
    return struct.unpack_from("I", info, 28)[0]


def test_workers_listen_with_the_backlog_setting(arbiter_process) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    assert max_backlog(listener) == 16  # the probe reads what listen() set
    os.set_inheritable(listener.fileno(), True)
    launcher = (f"import os, sys\nos.execv(sys.executable, [sys.executable, '-m', 'arbiter', "
                f"'basic:app', '--workers', '2', '--fd', '{listener.fileno()}', "
                f"'--backlog', '100'])\n")
    arbiter_process([], command=[sys.executable, "-c", launcher],
                    pass_fds=(listener.fileno(),)).wait_ready()
    try:
        assert max_backlog(listener) == 100
    finally:
        listener.close()
