"""Master supervision, black-box: the behaviours of issue 3 the other files do not cover.

Boot timeouts and first-generation halts, crashes under load and crash
backoff, log reopening on SIGUSR1, recycling by RSS and lifetime, config
re-reads and superseded reloads, --reload's watch options, graceful stop on
the wire, the pid file and --preload. Real processes and loopback sockets;
every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import APPS, wait_until
from tests.load import Load

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


def wait_in_file(path: Path, pattern: str, timeout: float = 15.0) -> re.Match[str]:
    regex = re.compile(pattern)

    def found() -> re.Match[str] | None:
        return regex.search(path.read_text()) if path.exists() else None

    try:
        return wait_until(found, timeout, message=f"{pattern!r} in {path.name}")
    except AssertionError as exc:
        text = path.read_text()[-3000:] if path.exists() else "(no file)"
        raise AssertionError(f"{exc}\n--- {path} ---\n{text}") from None


def lines_matching(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]


def index_of(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not logged"
    return match.start()


# ------------------------------------------------------------------ booting (1, 7)


def test_boot_timeout_not_timeout_bounds_a_slow_boot(arbiter_process, tmp_path) -> None:
    delay = tmp_path / "delay"
    delay.write_text("3")  # longer than --timeout: booting is not a silent loop
    server = arbiter_process(["supervised:app", "--workers", "2", "--timeout", "2",
                              "--boot-timeout", "30"], env={"BOOT_DELAY_FILE": str(delay)})
    server.wait_ready(30)
    boots = [float(s) for s in re.findall(r"is ready \(([\d.]+) s to boot\)", server.stderr)]
    assert len(boots) == 2 and min(boots) >= 2.9
    assert httpx.get(server.url + "/pid", timeout=5).status_code == 200
    assert "WORKER TIMEOUT" not in server.stderr and "killing" not in server.stderr


def test_boot_timeout_stops_a_first_generation_that_never_boots(arbiter_process) -> None:
    """An import that hangs (a lifespan startup that hangs is reported by the worker
    itself: tests/integration/test_stop_sequence.py)."""
    started = time.monotonic()
    server = arbiter_process(["slow_import:app", "--workers", "3", "--boot-timeout", "2"],
                             env={"IMPORT_DELAY": "60"})
    assert server.wait_exit(20) == 3
    elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed
    assert "did not become ready within the boot timeout of 2 s" in server.stderr
    assert server.stderr.count("failed to boot") == 1  # one halt, no fork loop


@pytest.mark.parametrize("app, code, message", [
    ("broken_import:app", 4, "No module named 'this_module_does_not_exist_anywhere'"),
    ("lifespan_fails:app", 3, "database unreachable"),
])
def test_first_generation_failure_stops_within_seconds(arbiter_process, app: str, code: int,
                                                       message: str) -> None:
    started = time.monotonic()
    server = arbiter_process([app, "--workers", "4"])
    assert server.wait_exit(20) == code
    elapsed = time.monotonic() - started
    print(f"{app}: exit {code} after {elapsed:.2f} s")
    assert elapsed < 5
    assert server.stderr.count(message) == 1
    assert server.stderr.count("failed to boot") == 1  # one halt, no fork loop


# ------------------------------------------------------------------ crashes (6)


def test_kill_9_under_load_is_replaced_while_clients_keep_going(arbiter_process) -> None:
    server = arbiter_process(["supervised:app", "--workers", "2"]).wait_ready()
    kept, fresh = Load(server.url), Load(server.url, fresh=True)
    kept.wait_more(20)
    fresh.wait_more(20)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log(rf"\(pid {victim}, generation 1\) was killed by SIGKILL "
                        rf"\(perhaps out of memory\?\)")
    server.wait_for_log(r"is ready", count=3)
    kept.wait_more(50)
    fresh.wait_more(50)
    kept.finish()
    fresh.finish()
    # only a request on the killed worker at that moment can fail: one per client at most
    assert len(kept.failed) <= 1 and len(fresh.failed) <= 1, (kept.failed, fresh.failed)
    pids = server.worker_pids()
    assert len(pids) == 2 and victim not in pids


def test_kill_9_of_busy_workers_never_delays_their_replacements(arbiter_process) -> None:
    """Ten kill -9s of a random worker of 2 under load, each right after the last
    replacement answered: a worker that served requests is no crash loop, so
    every replacement answers within a second (no backoff)."""
    server = arbiter_process(["supervised:app", "--workers", "2"]).wait_ready()
    kept, fresh = Load(server.url), Load(server.url, fresh=True)
    kept.wait_more(20)
    rng = random.Random()
    latencies: list[float] = []
    with httpx.Client(timeout=5, headers={"connection": "close"}) as probe:
        for _ in range(10):
            before = set(wait_until(lambda: len(server.worker_pids()) == 2
                                    and server.worker_pids(), 10, message="two workers"))
            victim = rng.choice(sorted(before))
            start = time.monotonic()
            os.kill(victim, signal.SIGKILL)

            def replacement_answered() -> int | None:
                try:
                    pid = int(probe.get(server.url + "/pid").text)
                except httpx.HTTPError:
                    return None
                return pid if pid not in before else None

            wait_until(replacement_answered, 15, interval=0.005,
                       message="the replacement to answer")
            latencies.append(time.monotonic() - start)
    kept.finish()
    fresh.finish()
    print("kill -9 -> replacement answered, s:", " ".join(f"{x:.3f}" for x in latencies))
    assert max(latencies) < 1.0, latencies
    assert "keeps dying" not in server.stderr


def test_crash_looping_slot_backs_off_while_the_healthy_worker_serves(arbiter_process,
                                                                      tmp_path) -> None:
    crash = tmp_path / "crash"
    server = arbiter_process(["supervised:app", "--workers", "2"],
                             env={"CRASH_FILE": str(crash)}).wait_ready()
    crash.touch()  # every worker booted from now on dies in its first request
    victim = int(httpx.get(server.url + "/exit?code=7", timeout=5).text)
    (healthy,) = set(server.worker_pids()) - {victim}
    slot = server.wait_for_log(rf"worker (\d) \(pid {victim}, generation 1\) exited with "
                               rf"code 7").group(1)
    load = Load(server.url, fresh=True)
    for delay in ("0.5", "1.0", "2.0"):
        server.wait_for_log(rf"worker {slot} keeps dying; next restart in {delay} s", timeout=30)
    load.wait_more(20)
    assert healthy in server.worker_pids()
    crash.unlink()

    def settled() -> bool:  # a crashing worker dies at its first request; these outlived that
        pids = server.worker_pids()
        try:
            return len(pids) == 2 and all(time.time() - psutil.Process(p).create_time() > 2
                                          for p in pids)
        except psutil.NoSuchProcess:
            return False

    wait_until(settled, 30, message="the slot to recover")
    load.wait_more(20)
    load.finish()
    assert healthy in server.worker_pids()
    assert "exited with code 7" in server.stderr and "was killed" not in server.stderr


# ------------------------------------------------------------------ SIGUSR1 (4)


def test_usr1_reopens_the_log_files_of_the_master_and_every_worker(arbiter_process,
                                                                   tmp_path) -> None:
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    server = arbiter_process(["supervised:app", "--workers", "2", "--error-log", str(error_log),
                              "--access-log-file", str(access_log)])
    wait_in_file(error_log, r"all 2 worker\(s\) ready", 20)
    url = wait_in_file(error_log, r"Listening at: (http://\S+)").group(1)
    workers = server.worker_pids()
    assert httpx.get(url + "/log", timeout=5).status_code == 200
    wait_in_file(access_log, r'"GET /log HTTP/1.1" 200')
    rotated_error, rotated_access = tmp_path / "error.log.1", tmp_path / "access.log.1"
    error_log.rename(rotated_error)  # what logrotate does before it sends SIGUSR1
    access_log.rename(rotated_access)
    server.signal(signal.SIGUSR1)
    wait_in_file(error_log, rf"\[{server.pid}\] \[INFO\] received SIGUSR1: log files reopened")

    def holds_new_files(pid: int) -> bool:
        paths = {f.path for f in psutil.Process(pid).open_files()}
        return {str(error_log), str(access_log)} <= paths and not paths & {
            str(rotated_error), str(rotated_access)}

    for pid in (server.pid, *workers):
        wait_until(lambda: holds_new_files(pid), 10, message=f"pid {pid} to reopen its logs")
    served = set()
    for _ in range(10):  # both workers are usually reached; at least one must be
        served.add(int(httpx.get(url + "/log", timeout=5).text))
    for pid in served:
        wait_in_file(error_log, rf"\[{pid}\] \[WARNING\] app log line from worker {pid}")
    wait_in_file(access_log, r'"GET /log HTTP/1.1" 200')
    assert "SIGUSR1" not in rotated_error.read_text()
    assert server.worker_pids() == workers  # no worker died of the signal
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0


# ------------------------------------------------------------------ recycling (5)


def test_max_rss_recycles_only_the_worker_that_stays_above_it(arbiter_process) -> None:
    server = arbiter_process(["supervised:app", "--workers", "2", "--max-rss", "80"]
                             ).wait_ready()
    assert all(psutil.Process(p).memory_info().rss < 70 * MIB for p in server.worker_pids())
    bloated = int(httpx.get(server.url + "/grow?mib=120", timeout=10).text)
    (healthy,) = set(server.worker_pids()) - {bloated}
    server.wait_for_log(rf"recycling worker \d \(pid {bloated}, generation 1\): RSS above 80 "
                        rf"MiB for 3 samples \(--max-rss\)", timeout=20)
    server.wait_for_log(rf"\(pid {bloated}, generation 1\) retired \(RSS above", timeout=20)
    wait_until(lambda: len(server.worker_pids()) == 2 and bloated not in server.worker_pids(),
               10, message="the replacement")
    assert healthy in server.worker_pids()
    text = server.stderr
    marked = index_of(text, rf"recycling worker \d \(pid {bloated}")
    # readiness-gated: a replacement became ready between marking and retiring
    assert lines_matching(text[marked:index_of(text, rf"retiring worker \d \(pid {bloated}")],
                          r"is ready")


def test_max_lifetime_recycles_one_at_a_time_without_failures(arbiter_process) -> None:
    server = arbiter_process(["supervised:app", "--workers", "2", "--max-lifetime", "3",
                              "--graceful-timeout", "20"]).wait_ready()
    first = server.worker_pids()
    master = psutil.Process(server.pid)
    cpu_before = sum(master.cpu_times()[:2])
    load = Load(server.url)
    # requests in flight on both workers make each retirement drain for a while, so the
    # second worker is past its lifetime while the first is still being recycled
    slow = [threading.Thread(target=httpx.get, args=(server.url + "/slow?s=5",),
                             kwargs={"timeout": 30}, daemon=True) for _ in range(6)]
    for thread in slow:
        thread.start()
    wait_until(lambda: len(server.worker_pids()) == 2 and not set(first) & set(
        server.worker_pids()), 40, message="both workers recycled")
    load.wait_more(20)
    load.finish()
    cpu = sum(master.cpu_times()[:2]) - cpu_before
    print(f"master CPU while recycling two draining workers: {cpu:.2f} s")
    assert load.failed == []
    assert cpu < 1.0, "the master loop must sleep while waiting for recycling room"
    text = server.stderr
    for pid in first:
        marked = index_of(text, rf"recycling worker \d \(pid {pid}, generation 1\): alive for "
                                rf"\d+ s \(--max-lifetime\)")
        retired = index_of(text, rf"\(pid {pid}, generation 1\) retired \(alive for")
        # --max-recycling 1: no other worker is marked while this one is being recycled
        assert not lines_matching(text[marked + 1:retired], r"recycling worker"), pid
        # readiness-gated: a replacement became ready between marking and retiring
        assert lines_matching(text[marked:index_of(text, rf"retiring worker \d \(pid {pid}")],
                              r"is ready"), pid


# ------------------------------------------------------------------ SIGHUP (3)


def write_config(path: Path, workers: int, label: str) -> None:
    path.write_text(f"workers = {workers}\nheaders = ['x-config: {label}']\n")


def test_sighup_rereads_the_config_file(arbiter_process, tmp_path) -> None:
    config = tmp_path / "conf.py"
    write_config(config, 1, "one")
    server = arbiter_process(["supervised:app", "--config", str(config)]).wait_ready()
    assert httpx.get(server.url, timeout=5).headers["x-config"] == "one"
    write_config(config, 3, "two")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload: generation 2 is serving", timeout=30)
    wait_until(lambda: len(server.worker_pids()) == 3, 10, message="3 workers")
    for _ in range(6):
        assert httpx.get(server.url, headers={"connection": "close"},
                         timeout=5).headers["x-config"] == "two"


def test_sighup_during_a_reload_restarts_it_with_the_newest_config(arbiter_process,
                                                                   tmp_path) -> None:
    config, delay = tmp_path / "conf.py", tmp_path / "delay"
    write_config(config, 2, "one")
    delay.write_text("0")
    server = arbiter_process(["supervised:app", "--config", str(config)],
                             env={"BOOT_DELAY_FILE": str(delay)}).wait_ready()
    kept, fresh = Load(server.url), Load(server.url, fresh=True)
    kept.wait_more(20)
    write_config(config, 2, "two")
    delay.write_text("4")  # generation 2's canary is still booting at the next SIGHUP
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload: starting generation 2")
    write_config(config, 2, "three")
    delay.write_text("0")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload: restarting generation 2's reload with the newest config")
    server.wait_for_log(r"retiring worker 1 \(pid \d+, generation 2\): superseded")
    server.wait_for_log(r"reload: generation 3 is serving", timeout=30)
    kept.wait_more(20)
    fresh.wait_more(20)
    kept.finish()
    fresh.finish()
    assert kept.failed == [] and fresh.failed == []
    assert kept.configs | fresh.configs == {"one", "three"}  # generation 2 never served
    assert "reload: generation 2 is serving" not in server.stderr
    assert len(server.worker_pids()) == 2


# ------------------------------------------------------------------ --reload (12)


def test_reload_dir_include_and_exclude(arbiter_process, tmp_path) -> None:
    src, watched = tmp_path / "src", tmp_path / "watched"
    src.mkdir()
    watched.mkdir()
    (src / "watched_app.py").write_text((APPS / "supervised.py").read_text())
    for name in ("data.txt", "skip.txt", "notes.md", "helper.py"):
        (watched / name).write_text("v1\n")
    past = time.time() - 100
    for path in [*src.iterdir(), *watched.iterdir()]:
        os.utime(path, (past, past))
    server = arbiter_process(["watched_app:app", "--reload", "--app-dir", str(src),
                              "--reload-dir", str(watched), "--reload-include", "*.txt",
                              "--reload-exclude", "skip*"], cwd=tmp_path).wait_ready()
    backend = server.wait_for_log(rf"--reload: watching {re.escape(str(watched))} for "
                                  rf"\*\.txt \*\.py \(excluding skip\* .*\), by ([^\n]+)")
    try:
        import watchfiles  # noqa: F401
        expected = "watchfiles"
    except ImportError:
        expected = "polling mtimes"
    assert backend.group(1) == expected
    # not watched: excluded, not included, outside the reload dirs; then one that is
    for path in (watched / "skip.txt", watched / "notes.md", src / "watched_app.py",
                 watched / "data.txt"):
        path.write_text(path.read_text() + "# edited\n")
    server.wait_for_log(r"--reload: .* changed; reloading")
    server.wait_for_log(r"reload: generation 2 is serving", timeout=20)
    (changed,) = lines_matching(server.stderr, r"--reload: .* changed; reloading")
    assert "data.txt" in changed
    assert not any(n in changed for n in ("skip.txt", "notes.md", "watched_app.py")), changed
    (watched / "helper.py").write_text("v2\n")  # *.py stays watched next to --reload-include
    server.wait_for_log(r"--reload: .*helper\.py changed; reloading")
    server.wait_for_log(r"reload: generation 3 is serving", timeout=20)
    assert httpx.get(server.url, timeout=5).status_code == 200


@pytest.mark.parametrize("backend", ["StatReloader", "WatchfilesReloader"])
def test_reloader_include_exclude_and_skipped_dirs(tmp_path, backend: str) -> None:
    from arbiter import reloader as reloader_module
    if backend == "WatchfilesReloader":
        pytest.importorskip("watchfiles")
    files = {name: tmp_path / name for name in (
        "app.py", "page.txt", "skip.txt", "notes.md", "sub/deep.py", ".hidden/x.py",
        "__pycache__/y.py", "skipdir/z.py", "app.pyc", "app.py~")}
    for path in files.values():
        path.parent.mkdir(exist_ok=True)
        path.write_text("v1\n")
    past = time.time() - 100
    for path in files.values():
        os.utime(path, (past, past))
    watcher = getattr(reloader_module, backend)([str(tmp_path)], ["*.txt"], ["skip*"])
    try:
        assert watcher.changed() == []
        wanted = {"app.py", "page.txt", "sub/deep.py"}
        for name in sorted(files, key=lambda n: n in wanted):  # unwanted ones first
            files[name].write_text("v2\n")
        seen: set[str] = set()

        def all_seen() -> bool:
            seen.update(str(Path(p).relative_to(tmp_path)) for p in watcher.changed())
            return wanted <= seen

        wait_until(all_seen, 10, interval=0.1, message=f"changes seen by {backend}")
        assert seen == wanted
    finally:
        watcher.close()


def test_reload_on_a_public_address_warns_and_on_loopback_does_not(arbiter_process) -> None:
    public = arbiter_process(["supervised:app", "--reload", "--bind", "0.0.0.0:0"])
    public.wait_ready()
    assert "--reload is for development only" in public.stderr
    local = arbiter_process(["supervised:app", "--reload"]).wait_ready()
    assert "development only" not in local.stderr


# ------------------------------------------------------------------ stopping (8)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response with a Content-Length body; returns (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a full head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


def test_sigterm_on_the_wire(arbiter_process) -> None:
    server = arbiter_process(["supervised:app", "--graceful-timeout", "20"]).wait_ready()
    address = server.address
    idle = socket.create_connection(address, timeout=10)
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(idle)[1] == b"ok"  # now an idle keep-alive connection
    busy = socket.create_connection(address, timeout=10)
    busy.sendall(b"GET /slow?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    (worker,) = server.worker_pids()
    wait_until(lambda: sum(c.status == "ESTABLISHED"
                           for c in psutil.Process(worker).net_connections()) == 2, 10,
               message="both connections accepted")
    stopped = time.monotonic()
    server.signal(signal.SIGTERM)
    server.wait_for_log(r"graceful stop of 1 worker")
    assert idle.recv(1) == b""  # idle keep-alive: closed, within its short grace
    idle_closed = time.monotonic() - stopped
    with pytest.raises(ConnectionRefusedError):  # once stopping, a new connection is refused
        socket.create_connection(address, timeout=10)
    head, body = read_response(busy)
    assert body == b"slow done" and re.search(rb"(?i)\r\nconnection: close", head), head
    assert busy.recv(1) == b""
    assert server.wait_exit(20) == 0
    assert "LIFESPAN SHUTDOWN" in server.stdout
    print(f"SIGTERM -> idle keep-alive closed: {idle_closed:.2f} s")
    assert idle_closed < 3
    for sock in (idle, busy):
        sock.close()


# ------------------------------------------------------------------ pid file (11)


def test_stale_pid_file_is_replaced_and_kept_across_usr2(arbiter_process, tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = tmp_path / "arbiter.pid"
    pid_file.write_text(f"{dead.pid}\n")
    server = arbiter_process(["supervised:app", "--pid", str(pid_file)]).wait_ready()
    assert pid_file.read_text() == f"{server.pid}\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".arbiter-pid-")]
    server.signal(signal.SIGUSR2)
    server.wait_for_log(r"adopted 1 worker\(s\)", timeout=30)
    server.wait_for_log(r"reload: generation \d+ is serving", timeout=30)
    assert pid_file.read_text() == f"{server.pid}\n"
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0
    assert not pid_file.exists()


# ------------------------------------------------------------------ --preload (13)


def test_preload_imports_once_in_the_master_and_every_worker_is_frozen(arbiter_process) -> None:
    preloaded = arbiter_process(["supervised:app", "--workers", "2", "--preload"]).wait_ready()
    assert re.findall(r"IMPORTED (\d+)", preloaded.stdout) == [str(preloaded.pid)]
    assert int(httpx.get(preloaded.url + "/gc", timeout=5).text) > 0
    plain = arbiter_process(["supervised:app", "--workers", "2"]).wait_ready()
    workers = {str(p) for p in plain.worker_pids()}
    wait_until(lambda: set(re.findall(r"IMPORTED (\d+)", plain.stdout)) == workers, 10,
               message=f"an import in each worker: {plain.stdout!r}")
    # a ready worker freezes its boot heap (gc.freeze) whether or not the master preloaded
    assert int(httpx.get(plain.url + "/gc", timeout=5).text) > 0


# ------------------------------------------------------------------ re-exec pre-flight (10, 13)


def test_preload_sighup_with_broken_code_keeps_master_and_workers(arbiter_process,
                                                                  tmp_path) -> None:
    app = tmp_path / "preapp.py"
    good = (APPS / "supervised.py").read_text()
    app.write_text(good)
    server = arbiter_process(["preapp:app", "--workers", "2", "--preload",
                              "--app-dir", str(tmp_path)], cwd=tmp_path).wait_ready()
    workers = server.worker_pids()
    load = Load(server.url)
    load.wait_more(20)
    app.write_text("raise ImportError('deploy is broken')\n")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"re-exec cancelled: the new master would not start \(check exited "
                        r"with 4\); this master and its workers keep serving", timeout=30)
    assert "ImportError: deploy is broken" in server.stderr
    load.wait_more(20)
    assert server.proc.poll() is None and server.worker_pids() == workers
    app.write_text(good.replace('payload = b"ok"', 'payload = b"fixed"'))
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"adopted 2 worker\(s\)", timeout=30)
    server.wait_for_log(r"reload: generation \d+ is serving", timeout=30)
    load.wait_more(20)
    load.finish()
    assert load.failed == []
    assert httpx.get(server.url, timeout=5).text == "fixed"
    assert server.proc.poll() is None


def test_usr2_with_a_broken_config_file_keeps_serving(arbiter_process, tmp_path) -> None:
    config = tmp_path / "conf.py"
    write_config(config, 2, "one")
    server = arbiter_process(["supervised:app", "--config", str(config)]).wait_ready()
    workers = server.worker_pids()
    config.write_text("workers = 'many'\n")
    server.signal(signal.SIGUSR2)
    server.wait_for_log(r"re-exec cancelled: the new master would not start \(check exited "
                        r"with 2\)", timeout=30)
    assert "invalid value for workers (config file): 'many'" in server.stderr
    assert server.proc.poll() is None and server.worker_pids() == workers
    assert httpx.get(server.url, timeout=5).headers["x-config"] == "one"
    write_config(config, 2, "two")
    server.signal(signal.SIGUSR2)
    server.wait_for_log(r"adopted 2 worker\(s\)", timeout=30)
    server.wait_for_log(r"reload: generation \d+ is serving", timeout=30)
    assert httpx.get(server.url, headers={"connection": "close"},
                     timeout=5).headers["x-config"] == "two"
