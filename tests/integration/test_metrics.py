"""--metrics-bind end to end: a real master scraped while load runs, workers killed and
reloaded, scrapers that misbehave, a re-exec and a unix socket."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import APPS, wait_until
from tests.load import Load

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
TOTALS = [("arbiter_requests_total", ()), *(("arbiter_responses_total", (("code", c),))
                                            for c in ("2xx", "3xx", "4xx", "5xx")),
          ("arbiter_blocked_loop_warnings_total", ())]


def metrics_url(server) -> str:
    return server.wait_for_log(r"Metrics at: (\S+)").group(1)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(url: str, transport: httpx.HTTPTransport | None = None) -> Samples:
    with httpx.Client(transport=transport, timeout=5) as client:
        response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def worker_pids(samples: Samples) -> set[int]:
    """The pids the per-worker series are labelled with (each family the same set, but
    RSS: a worker spawned since the last sample, once a second, has none yet)."""
    by_family = {}
    for name in ("arbiter_worker_requests_total", "arbiter_worker_connections",
                 "arbiter_worker_in_flight", "arbiter_worker_loop_lag_seconds",
                 "arbiter_worker_rss_bytes"):
        by_family[name] = {int(dict(labels)["pid"]) for n, labels in samples if n == name}
    pids = by_family.pop("arbiter_worker_requests_total")
    assert by_family.pop("arbiter_worker_rss_bytes") <= pids
    assert all(p == pids for p in by_family.values()), (pids, by_family)
    return pids


def restarts(samples: Samples) -> dict[str, float]:
    return {dict(labels)["reason"]: v for (name, labels), v in samples.items()
            if name == "arbiter_worker_restarts_total"}


def assert_never_down(history: list[Samples]) -> None:
    """Every total, and every restart and reload count, only grows from scrape to scrape."""
    for before, after in zip(history, history[1:]):
        for key, was in before.items():
            name = key[0]
            if name in ("arbiter_worker_restarts_total", "arbiter_reloads_total") or \
                    key in TOTALS:
                assert after[key] >= was, (key, was, after[key])


def test_scrapes_follow_load_a_kill_9_and_a_reload(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "2", "--metrics-bind",
                              "127.0.0.1:0"]).wait_ready()
    url = metrics_url(server)
    history = [scrape(url)]
    assert worker_pids(history[0]) == set(server.worker_pids())
    assert value(history[0], "arbiter_workers", state="ready") == 2
    assert value(history[0], "arbiter_generation") == 1
    assert value(history[0], "arbiter_build_info", version="0.1.0") == 1
    load, fresh = Load(server.url), Load(server.url, fresh=True)

    def grown() -> Samples | None:  # the counters the next TICKs bring
        samples = scrape(url)
        history.append(samples)
        return samples if value(samples, "arbiter_requests_total") >= \
            value(history[-2], "arbiter_requests_total") + 20 else None

    now = wait_until(grown, 15, interval=0.3, message="arbiter_requests_total to grow")
    assert value(now, "arbiter_responses_total", code="2xx") >= 20
    per_worker = {int(dict(labels)["pid"]): v for (name, labels), v in now.items()
                  if name == "arbiter_worker_requests_total"}
    assert sum(per_worker.values()) == value(now, "arbiter_requests_total")
    assert all(v > 0 for (name, _), v in now.items() if name == "arbiter_worker_rss_bytes")

    # kill -9: the victim's series go, its replacement's come, the totals keep what it served
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> Samples | None:
        samples = scrape(url)
        history.append(samples)
        pids = worker_pids(samples)
        return samples if victim not in pids and len(pids) == 2 and \
            value(samples, "arbiter_workers", state="ready") == 2 else None

    after_kill = wait_until(replaced, 15, interval=0.2, message="the victim's series to go")
    assert worker_pids(after_kill) == set(server.worker_pids())
    assert restarts(after_kill)["crash"] == 1 and sum(restarts(after_kill).values()) == 1
    # from here on nothing is lost: what the clients count, the totals count (what the
    # victim served after its last TICK is all a kill -9 can take away)
    served_before = load.ok + fresh.ok
    total_before = value(scrape(url), "arbiter_requests_total")

    # a reload: every series is a new generation's worker; the old ones count as restarts
    old = set(server.worker_pids())
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload: generation 2 is serving", timeout=30)

    def reloaded() -> Samples | None:
        samples = scrape(url)
        history.append(samples)
        return samples if not worker_pids(samples) & old and \
            value(samples, "arbiter_workers", state="ready") == 2 else None

    after_reload = wait_until(reloaded, 15, interval=0.2, message="the new generation's series")
    assert value(after_reload, "arbiter_generation") == 2
    assert value(after_reload, "arbiter_reloads_total", result="ok") == 1
    wait_until(lambda: restarts(scrape(url))["reload"] == 2, 15,
               message="two reload restarts")  # the old ones exit once drained
    load.wait_more(20)
    history.append(scrape(url))
    load.finish()
    fresh.finish()
    assert len(load.failed) <= 1, load.failed  # a request on the killed worker, at most
    served = load.ok + fresh.ok - served_before

    def caught_up() -> Samples | None:  # the retired workers' final frames are in
        samples = scrape(url)
        history.append(samples)
        counted = value(samples, "arbiter_requests_total") - total_before
        return samples if counted >= served - 2 else None  # two in flight at either end

    final = wait_until(caught_up, 10, interval=0.2, message=f"{served} requests counted")
    assert worker_pids(final) == set(server.worker_pids())
    assert_never_down(history)
    print("scrapes:", len(history), "requests_total:", value(final, "arbiter_requests_total"),
          "served by the clients:", load.ok + fresh.ok, "(the difference: what the victim "
          "served after its last TICK)")


def test_responses_by_status_class(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--metrics-bind", "127.0.0.1:0"]).wait_ready()
    url = metrics_url(server)
    host, port = server.address
    with httpx.Client(timeout=5) as client:
        for _ in range(5):
            assert client.get(server.url + "/").status_code == 200
        for _ in range(3):
            assert client.get(server.url + "/error").status_code == 500
    for _ in range(2):  # bad requests the gate answers itself
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                         b"Content-Length: 2\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400 ")

    def counted() -> Samples | None:
        samples = scrape(url)
        return samples if value(samples, "arbiter_requests_total") >= 8 and \
            value(samples, "arbiter_responses_total", code="4xx") >= 2 else None

    samples = wait_until(counted, 10, interval=0.2, message="the responses to be counted")
    assert value(samples, "arbiter_responses_total", code="2xx") == 5
    assert value(samples, "arbiter_responses_total", code="3xx") == 0
    assert value(samples, "arbiter_responses_total", code="4xx") == 2
    assert value(samples, "arbiter_responses_total", code="5xx") == 3
    assert value(samples, "arbiter_requests_total") == 8  # the gate's 400s are no requests


def test_silent_and_unread_scrapers_do_not_delay_a_kill_9_replacement(arbiter_process) -> None:
    server = arbiter_process(["supervised:app", "--workers", "2", "--metrics-bind",
                              "127.0.0.1:0"]).wait_ready()
    url = metrics_url(server)
    host, port = httpx.URL(url).host, httpx.URL(url).port
    master = psutil.Process(server.pid)
    fds_before = master.num_fds()  # (before a scrape: its connection lingers a moment)
    scrape(url)
    load = Load(server.url)
    load.wait_more(20)

    silent = [socket.create_connection((host, port), timeout=5) for _ in range(8)]
    unread = []
    for _ in range(6):  # ask, then never read, through the smallest receive window
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sock.connect((host, port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        unread.append(sock)
    wait_until(lambda: master.num_fds() >= fds_before + 14, 5, message="14 accepted scrapes")

    latencies = []
    with httpx.Client(timeout=5, headers={"connection": "close"}) as probe:
        for _ in range(3):
            before = set(wait_until(lambda: len(server.worker_pids()) == 2
                                    and server.worker_pids(), 10, message="two workers"))
            start = time.monotonic()
            os.kill(min(before), signal.SIGKILL)

            def replacement_answered() -> bool:
                try:
                    return int(probe.get(server.url + "/pid").text) not in before
                except httpx.HTTPError:
                    return False

            wait_until(replacement_answered, 15, interval=0.005,
                       message="the replacement to answer")
            latencies.append(time.monotonic() - start)
    print("kill -9 -> replacement answered with 8 silent and 6 unread scrapes, s:",
          " ".join(f"{x:.3f}" for x in latencies))
    assert max(latencies) < 1.0, latencies
    scrape(url)  # and a well-behaved scraper is still answered meanwhile

    # Each misbehaving connection is dropped at its deadline (5 s), even though workers
    # were forked while it was open: the master's fds go back to what they were, and a
    # silent one that speaks now meets a closed connection
    wait_until(lambda: master.num_fds() <= fds_before, 15, interval=0.1,
               message="the scrape connections to be closed")
    for sock in silent:
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            assert sock.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
        sock.close()
    for sock in unread:  # what was written before the deadline is there, then the end
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        sock.close()
    load.finish()
    assert len(load.failed) <= 3, load.failed  # a request on a killed worker may fail


def test_the_connection_limit_and_bad_requests(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--metrics-bind", "127.0.0.1:0"]).wait_ready()
    url = metrics_url(server)
    host, port = httpx.URL(url).host, httpx.URL(url).port
    master = psutil.Process(server.pid)
    fds_before = master.num_fds()

    def exchange(data: bytes) -> bytes:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(data)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            return out

    assert exchange(b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert exchange(b"DELETE /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert exchange(b"\x00\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert exchange(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000).startswith(b"HTTP/1.1 431 ")
    head = exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    full = exchange(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert b"arbiter_requests_total" in full
    # 16 connections at once are served; the 17th is closed at once, not queued forever
    wait_until(lambda: master.num_fds() <= fds_before, 5, message="the exchanges closed")
    held = [socket.create_connection((host, port), timeout=5) for _ in range(16)]
    try:
        wait_until(lambda: master.num_fds() >= fds_before + 16, 5, message="16 accepted")
        extra = socket.create_connection((host, port), timeout=5)
        try:
            extra.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            assert extra.recv(100) == b""
        except ConnectionResetError:
            pass
        extra.close()
        held[0].sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        assert held[0].recv(100).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: b"HTTP/1.1 200 " in exchange(b"GET /metrics HTTP/1.1\r\n\r\n"), 10)
    assert server.proc.poll() is None


def test_an_aborted_reload_is_counted(arbiter_process, tmp_path) -> None:
    app = tmp_path / "flaky.py"
    app.write_text((APPS / "basic.py").read_text())
    server = arbiter_process(["flaky:app", "--workers", "2", "--app-dir", str(tmp_path),
                              "--metrics-bind", "127.0.0.1:0"]).wait_ready()
    url = metrics_url(server)
    pids = set(server.worker_pids())
    before = scrape(url)
    assert value(before, "arbiter_reloads_total", result="aborted") == 0
    app.write_text("raise ImportError('deploy is broken')\n")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload aborted: .*deploy is broken")
    after = wait_until(lambda: (s := scrape(url)) and worker_pids(s) == pids and s, 10,
                       message="only the old generation's series")
    assert value(after, "arbiter_reloads_total", result="aborted") == 1
    assert value(after, "arbiter_reloads_total", result="ok") == 0
    assert value(after, "arbiter_generation") == 1
    assert restarts(after)["boot_failure"] == 1  # the canary
    assert_never_down([before, after])


def test_a_unix_metrics_socket_survives_sigusr2_and_is_removed_on_exit(arbiter_process,
                                                                         tmp_path) -> None:
    path = tmp_path / "metrics.sock"
    server = arbiter_process(["basic:app", "--workers", "2", "--metrics-bind",
                              f"unix:{path}"]).wait_ready()
    assert metrics_url(server) == f"unix:{path}"
    transport = httpx.HTTPTransport(uds=str(path))
    inode = os.stat(path).st_ino
    load = Load(server.url)
    load.wait_more(30)
    old = set(server.worker_pids())
    history = [scrape("http://metrics/metrics", transport)]
    failures: list[str] = []
    stop = threading.Event()

    def keep_scraping() -> None:  # across the exec: the listener is handed over, not rebound
        while not stop.is_set():
            try:
                history.append(scrape("http://metrics/metrics", httpx.HTTPTransport(
                    uds=str(path))))
            except (httpx.HTTPError, AssertionError) as exc:
                failures.append(repr(exc))
            time.sleep(0.05)  # deliberate (noqa: sleep): a scraper's pacing, not a wait for state

    scraper = threading.Thread(target=keep_scraping, daemon=True)
    scraper.start()
    server.signal(signal.SIGUSR2)
    server.wait_for_log(r"re-executing the master in place")
    server.wait_for_log(r"reload: generation 1 is serving", timeout=30)
    wait_until(lambda: not worker_pids(history[-1]) & old and
               len(worker_pids(history[-1])) == 2, 15, message="the new master's workers")
    load.wait_more(20)
    stop.set()
    scraper.join(10)
    load.finish()
    assert failures == []
    assert os.stat(path).st_ino == inode  # the same socket, handed over
    assert_never_down(history)
    final = history[-1]
    assert value(final, "arbiter_requests_total") >= value(history[0],
                                                           "arbiter_requests_total") + 20
    assert restarts(final)["reload"] == 2  # the adopted workers, replaced by the new master
    assert load.failed == []
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists()


def test_metrics_are_off_by_default(arbiter_process) -> None:
    server = arbiter_process(["basic:app"]).wait_ready()
    assert "Metrics at" not in server.stderr
    master = psutil.Process(server.pid)
    assert all(c.status != psutil.CONN_LISTEN or c.laddr.port == server.address[1]
               for c in master.net_connections("inet"))


def test_an_address_in_use_is_a_clear_error_and_leaves_nothing_behind(arbiter_process,
                                                                       tmp_path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    uds = tmp_path / "app.sock"
    try:
        server = arbiter_process(["basic:app", "--uds", str(uds), "--metrics-bind",
                                  f"127.0.0.1:{port}"], bind=False)
        assert server.wait_exit() == 1
    finally:
        taken.close()
    assert f"--metrics-bind: cannot bind 127.0.0.1:{port}: address already in use" \
        in server.stderr
    assert not uds.exists()  # the app's listener, bound first, is closed and removed
