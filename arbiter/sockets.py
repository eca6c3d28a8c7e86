"""Create the listening sockets once, in the master, before any fork.

Binds TCP (v4/v6) and unix addresses, adopts inherited descriptors (fd://N,
systemd socket activation, a re-exec'd master's ARBITER_LISTEN_FDS), and
reports every failure as a BindError naming the address. Workers never call
this module: they inherit the sockets.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Iterable, Mapping

from arbiter.addresses import Address
from arbiter.errors import BindError

INHERIT_ENV = "ARBITER_LISTEN_FDS"
SD_LISTEN_FDS_START = 3


class Listener:
    """A bound, listening socket and the address it was asked for."""

    __slots__ = ("sock", "address", "owns_path")

    def __init__(self, sock: socket.socket, address: Address, owns_path: bool) -> None:
        self.sock = sock
        self.address = address
        self.owns_path = owns_path

    def url(self, tls: bool = False) -> str:
        """Where clients reach it, with the real port when port 0 was asked for."""
        name = self.sock.getsockname()
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{name if isinstance(name, str) else name.decode(errors='replace')}"
        host, port = name[0], name[1]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if tls else 'http'}://{host}:{port}"

    def close(self, unlink: bool) -> None:
        path = self.address.path if self.address.kind == "unix" else ""
        self.sock.close()
        if unlink and self.owns_path and path:
            try:
                os.unlink(path)
            except OSError:
                pass


def open_listeners(addresses: Iterable[Address], backlog: int, uds_mode: int | None,
                   environ: Mapping[str, str],
                   owner: tuple[int, int] | None = None) -> list[Listener]:
    """Bind every address, or adopt the descriptors a parent handed down.

    A unix socket file arbiter creates gets ``uds_mode`` and, with --user or
    --group, that owner (uid, gid; -1 keeps one), as gunicorn does: whoever may
    connect is decided by the file, so it belongs to the service's account."""
    addresses = tuple(addresses)
    inherited = _inherited_fds(environ)
    if inherited is not None:
        return [Listener(_adopt_fd(fd), _describe_fd(fd), owns_path=False) for fd in inherited]
    listeners: list[Listener] = []
    try:
        for address in addresses:
            listeners.append(_open_one(address, backlog, uds_mode, owner))
    except BaseException:
        for listener in listeners:
            listener.close(unlink=True)
        raise
    return listeners


def open_unix(path: str, mode: int, backlog: int) -> Listener:
    """A unix listener outside --bind (the control socket): the same stale-file rule,
    and the master's owner (never --user's: see the README's Privileges)."""
    address = Address("unix", path=path)
    return Listener(_bind_unix(address, backlog, mode, owner=None), address, owns_path=True)


def adopt_unix(fd: int) -> Listener:
    """A unix listener of ours handed down across a re-exec; we still own its path."""
    sock = _adopt_fd(fd)
    name = sock.getsockname()
    path = name if isinstance(name, str) else name.decode(errors="replace")
    return Listener(sock, Address("unix", path=path), owns_path=True)


def export_for_exec(listeners: list[Listener]) -> dict[str, str]:
    """Make the listeners survive exec() and return the env that describes them."""
    for listener in listeners:
        os.set_inheritable(listener.sock.fileno(), True)
    return {INHERIT_ENV: ",".join(str(listener.sock.fileno()) for listener in listeners)}


def _inherited_fds(environ: Mapping[str, str]) -> list[int] | None:
    if environ.get(INHERIT_ENV):
        return [int(fd) for fd in environ[INHERIT_ENV].split(",") if fd.strip()]
    if environ.get("LISTEN_FDS") and environ.get("LISTEN_PID") == str(os.getpid()):
        count = int(environ["LISTEN_FDS"])
        return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    return None


def _open_one(address: Address, backlog: int, uds_mode: int | None,
              owner: tuple[int, int] | None) -> Listener:
    if address.kind == "fd":
        return Listener(_adopt_fd(address.fd), address, owns_path=False)
    if address.kind == "unix":
        return Listener(_bind_unix(address, backlog, uds_mode, owner), address, owns_path=True)
    return Listener(_bind_tcp(address, backlog), address, owns_path=False)


def _bind_tcp(address: Address, backlog: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot bind {address}: unknown host {address.host!r} ({exc.strerror})") \
            from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind {address}: {_why(exc)}") from None
    sock.setblocking(False)
    return sock


def _bind_unix(address: Address, backlog: int, uds_mode: int | None,
               owner: tuple[int, int] | None) -> socket.socket:
    path = address.path
    _remove_stale_unix_socket(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if uds_mode is None:
            sock.bind(path)
        else:
            # Created with no bit the mode lacks (the umask is process-wide, but the master
            # is still single-threaded here), so the file is never wider than asked for;
            # chmod then adds any bit the umask took away.
            umask = os.umask(0o777 & ~uds_mode)
            try:
                sock.bind(path)
            finally:
                os.umask(umask)
        if owner is not None:
            os.chown(path, *owner)
        if uds_mode is not None:
            os.chmod(path, uds_mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind {address}: {_why(exc)}") from None
    sock.setblocking(False)
    return sock


def _remove_stale_unix_socket(address: Address) -> None:
    """Unlink a socket file left by a dead server; refuse if someone still listens."""
    try:
        mode = os.stat(address.path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindError(f"cannot bind {address}: {_why(exc)}") from None
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot bind {address}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(address.path)
    except OSError:
        os.unlink(address.path)
    else:
        raise BindError(f"cannot bind {address}: address already in use by a running server")
    finally:
        probe.close()


def _adopt_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"cannot use fd://{fd}: {_why(exc)}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"cannot use fd://{fd}: not a stream socket")
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 1
    if not listening:
        sock.detach()
        raise BindError(f"cannot use fd://{fd}: the socket is not listening")
    sock.setblocking(False)
    return sock


def _describe_fd(fd: int) -> Address:
    return Address("fd", fd=fd)


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    if exc.errno == errno.EBADF:
        return "not an open file descriptor"
    if exc.errno == errno.ENOTSOCK:
        return "not a socket"
    return exc.strerror or str(exc)
