"""--user/--group/--umask/--initgroups with the real command, as root (CI is root).

The master binds a port below 1024 and a unix socket in a root-owned directory,
then its workers become nobody. The app and the sockets live in a directory
made world-readable (pytest's tmp_path is under /tmp/pytest-of-root, mode 0700,
which nobody could not enter); the worker imports its own modules before it
gives up root, because CI's Python lives under /root (mode 0700).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import APPS, wait_until

pytestmark = pytest.mark.slow
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

NOBODY = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else 65534
NOGROUP_NAME = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
ROOT_WARNING = "the workers run as root"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A root-owned directory everyone may enter and read, holding the test app."""
    path = Path(tempfile.mkdtemp(prefix="arbiter-privileges-"))
    path.chmod(0o755)
    shutil.copy(APPS / "privileged.py", path / "privileged.py")
    (path / "privileged.py").chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_low_port() -> int:
    """A free port below 1024, which only root may bind."""
    for port in range(700 + os.getpid() % 200, 1024):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


def unix_client(path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://app",
                        timeout=10)


def worker_ids(server) -> list[tuple[tuple[int, ...], tuple[int, ...], list[int]]]:
    """(real, effective, saved) uids and gids and the supplementary groups of
    every worker, from /proc."""
    out = []
    for pid in server.worker_pids():
        process = psutil.Process(pid)
        groups_line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("Groups:"))
        out.append((tuple(process.uids()), tuple(process.gids()),
                    sorted(int(g) for g in groups_line.split()[1:])))
    return out


def all_workers_are(server, uid: int, gid: int, groups: list[int], count: int) -> bool:
    ids = worker_ids(server)
    return len(ids) == count and all(i == ((uid,) * 3, (gid,) * 3, groups) for i in ids)


@needs_root
def test_workers_become_nobody_and_the_master_stays_root(arbiter_process, shared_dir) -> None:
    sock, pid_file, port = shared_dir / "app.sock", shared_dir / "arbiter.pid", free_low_port()
    control = shared_dir / "control.sock"
    server = arbiter_process(
        ["privileged:app", "--workers", "2", "--user", "nobody", "--group", NOGROUP_NAME,
         "--bind", f"unix:{sock}", "--bind", f"127.0.0.1:{port}", "--uds-mode", "660",
         "--umask", "027", "--pid", str(pid_file), "--control-socket", str(control)],
        cwd=shared_dir).wait_ready()
    master = psutil.Process(server.pid)
    assert tuple(master.uids()) == (0, 0, 0) and tuple(master.gids()) == (0, 0, 0)
    wait_until(lambda: all_workers_are(server, NOBODY, 65534, [], 2), 10,
               message=f"two workers as nobody, saw {worker_ids(server)}")

    info = os.stat(sock)  # owned by the service user, with --uds-mode
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, 65534, 0o660)
    info = os.stat(control)  # the master's: whoever may use it can stop the server
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
    pid_info = os.stat(pid_file)  # readable by the user that needs it
    assert stat.S_IMODE(pid_info.st_mode) == 0o644
    assert pid_file.read_text().strip() == str(server.pid)

    root_only = shared_dir / "root-only.txt"
    root_only.write_text("root's\n")
    root_only.chmod(0o644)
    with unix_client(sock) as client:
        ids = client.get("/ids").json()
        assert (ids["uid"], ids["euid"], ids["gid"], ids["egid"]) == (NOBODY, NOBODY, 65534, 65534)
        assert ids["umask"] == 0o027
        assert client.get(f"/write?path={root_only}").text == "PermissionError"
    assert root_only.read_text() == "root's\n"
    assert httpx.get(f"http://127.0.0.1:{port}/ids", timeout=10).json()["uid"] == NOBODY
    assert ROOT_WARNING not in server.stderr

    # a rolling reload and a re-exec of the master keep the workers unprivileged
    for sig in (signal.SIGHUP, signal.SIGUSR2):
        before = set(server.worker_pids())
        server.signal(sig)
        wait_until(lambda: not (set(server.worker_pids()) & before)
                   and all_workers_are(server, NOBODY, 65534, [], 2), 30,
                   message=f"the generation after {sig.name} as nobody")
        with unix_client(sock) as client:
            assert client.get("/ids").json()["uid"] == NOBODY
    assert "adopted 2 worker(s)" in server.stderr  # the re-exec happened, in place
    assert tuple(psutil.Process(server.pid).uids()) == (0, 0, 0)
    assert ROOT_WARNING not in server.stderr
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    assert not pid_file.exists()  # removed by the master, still root


def _user_with_supplementary_groups() -> str | None:
    for group in grp.getgrall():
        for member in group.gr_mem:
            try:
                if pwd.getpwnam(member).pw_gid != group.gr_gid:
                    return member
            except KeyError:
                continue
    return None


@needs_root
@pytest.mark.parametrize("user", ["nobody", "member"])
def test_initgroups_sets_the_supplementary_groups_of_the_user(arbiter_process, shared_dir,
                                                              user: str) -> None:
    if user == "member":
        user = _user_with_supplementary_groups() or pytest.skip(
            "no user on this machine is listed in a group other than its login group")
    entry = pwd.getpwnam(user)
    expected = sorted(set(os.getgrouplist(user, entry.pw_gid)))
    for flag, groups in (("--initgroups", expected), ("--no-initgroups", [])):
        sock = shared_dir / f"app{len(groups)}.sock"
        server = arbiter_process(["privileged:app", "--user", user, flag, "--bind",
                                  f"unix:{sock}"], cwd=shared_dir).wait_ready()
        wait_until(lambda: all_workers_are(server, entry.pw_uid, entry.pw_gid, groups, 1), 10,
                   message=f"{flag}: groups {groups}, saw {worker_ids(server)}")
        with unix_client(sock) as client:
            assert client.get("/ids").json()["groups"] == groups
        server.kill()


@needs_root
def test_the_root_warning_is_one_line_without_user(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"]).wait_ready()
    assert server.stderr.count(ROOT_WARNING) == 1, server.stderr
    assert "[WARNING] " + ROOT_WARNING in server.stderr


@needs_root
def test_umask_applies_to_the_sockets_and_logs_the_master_creates(arbiter_process,
                                                                 shared_dir) -> None:
    sock, access_log = shared_dir / "app.sock", shared_dir / "access.log"
    server = arbiter_process(["privileged:app", "--umask", "0o077", "--bind", f"unix:{sock}",
                              "--access-log-file", str(access_log)], cwd=shared_dir).wait_ready()
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(access_log).st_mode) == 0o600
    with unix_client(sock) as client:
        assert client.get("/ids").json()["umask"] == 0o077
    server.kill()


@needs_root
def test_log_files_belong_to_the_user_so_workers_reopen_them(arbiter_process,
                                                            shared_dir) -> None:
    """logrotate renames the file, SIGUSR1: the master (root) opens a new one and
    hands it to --user; the workers (nobody) must be able to reopen it."""
    sock, access_log = shared_dir / "app.sock", shared_dir / "access.log"
    server = arbiter_process(["privileged:app", "--user", "nobody", "--bind", f"unix:{sock}",
                              "--access-log-file", str(access_log)], cwd=shared_dir).wait_ready()
    assert os.stat(access_log).st_uid == NOBODY
    with unix_client(sock) as client:
        client.get("/ids?before")
        wait_until(lambda: "/ids?before" in access_log.read_text(), 10, message="access line")
        access_log.rename(shared_dir / "access.log.1")
        server.signal(signal.SIGUSR1)
        server.wait_for_log(r"log files reopened")
        wait_until(access_log.exists, 10, message="the new access log")
        assert os.stat(access_log).st_uid == NOBODY
        wait_until(lambda: client.get("/ids?after") and "/ids?after" in access_log.read_text(),
                   10, message="an access line in the reopened file")
    assert "Permission denied" not in server.stderr, server.stderr
    server.kill()


def test_unknown_user_and_group_exit_2_naming_them() -> None:
    import subprocess
    for flag, name, why in (("--user", "nosuch-user", "no such user"),
                            ("--group", "nosuch-group", "no such group")):
        result = subprocess.run([sys.executable, "-m", "arbiter", "basic:app", flag, name],
                                cwd=APPS, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert result.stderr.strip() == (f"arbiter: error: invalid value for {flag}: "
                                         f"{name!r} ({why})")
