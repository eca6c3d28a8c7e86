"""Metrics without I/O: the renderer, the ledger's accounting driven by the real policy
with a fake clock, and the scrape endpoint's answers to request heads."""

from __future__ import annotations

import random
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from arbiter.heartbeat import Frame, Kind, Load
from arbiter.metrics import CONTENT_TYPE, Ledger, Totals, render
from arbiter.metrics_server import head_end, respond
from arbiter.policy import ExitStatus, Log, Phase, PolicyConfig, Spawn, Supervisor, WorkerRecord

U32 = 2**32


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by the Prometheus client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def record(pid: int, slot: int, phase: Phase = Phase.READY, **numbers: object) -> WorkerRecord:
    w = WorkerRecord(pid, slot, generation=1, spawned_at=0.0, phase=phase)
    for name, value in numbers.items():
        setattr(w, name, value)
    return w


# ------------------------------------------------------------------ the renderer


def test_every_family_has_help_and_type_and_parses() -> None:
    text = render([record(11, 1, requests=5, rss_bytes=1000)], 3, Totals(), "9.9")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "arbiter_build_info": "gauge", "arbiter_generation": "gauge",
        "arbiter_workers": "gauge", "arbiter_requests": "counter",
        "arbiter_responses": "counter", "arbiter_worker_restarts": "counter",
        "arbiter_reloads": "counter", "arbiter_blocked_loop_warnings": "counter",
        "arbiter_worker_requests": "counter", "arbiter_worker_connections": "gauge",
        "arbiter_worker_in_flight": "gauge", "arbiter_worker_rss_bytes": "gauge",
        "arbiter_worker_loop_lag_seconds": "gauge",
    }
    assert {name: f.type for name, f in families.items()} == expected
    assert all(f.documentation for f in families.values())
    lines = text.splitlines()
    for name in expected:
        exposed = name + "_total" if expected[name] == "counter" else name
        assert f"# TYPE {exposed} {expected[name]}" in lines
        assert any(line.startswith(f"# HELP {exposed} ") for line in lines)
    assert text.endswith("\n")


@pytest.mark.parametrize("workers, generation, totals, expected", [
    # no workers at all: the server-wide series are there, zero, and no per-worker ones
    ([], 1, Totals(), {
        ("arbiter_build_info", (("version", "1.2.3"),)): 1,
        ("arbiter_generation", ()): 1,
        ("arbiter_workers", (("state", "booting"),)): 0,
        ("arbiter_workers", (("state", "ready"),)): 0,
        ("arbiter_workers", (("state", "draining"),)): 0,
        ("arbiter_requests_total", ()): 0,
        ("arbiter_responses_total", (("code", "2xx"),)): 0,
        ("arbiter_responses_total", (("code", "5xx"),)): 0,
        ("arbiter_worker_restarts_total", (("reason", "crash"),)): 0,
        ("arbiter_worker_restarts_total", (("reason", "reload"),)): 0,
        ("arbiter_reloads_total", (("result", "ok"),)): 0,
        ("arbiter_reloads_total", (("result", "aborted"),)): 0,
        ("arbiter_blocked_loop_warnings_total", ()): 0,
    }),
    # one worker per state; per-worker series labelled by slot and pid
    ([record(21, 1, requests=7, connections=2, in_flight=1, loop_lag_s=0.25,
             rss_bytes=50_000_000),
      record(22, 2, Phase.BOOTING),
      record(20, 1, Phase.RETIRING, requests=900)],
     4, Totals(requests=1234, responses=(1000, 3, 200, 31), blocked_loop_warnings=2,
               restarts={"crash": 1, "reload": 2}, reloads={"ok": 3, "aborted": 1}), {
        ("arbiter_generation", ()): 4,
        ("arbiter_workers", (("state", "booting"),)): 1,
        ("arbiter_workers", (("state", "ready"),)): 1,
        ("arbiter_workers", (("state", "draining"),)): 1,
        ("arbiter_requests_total", ()): 1234,
        ("arbiter_responses_total", (("code", "2xx"),)): 1000,
        ("arbiter_responses_total", (("code", "3xx"),)): 3,
        ("arbiter_responses_total", (("code", "4xx"),)): 200,
        ("arbiter_responses_total", (("code", "5xx"),)): 31,
        ("arbiter_worker_restarts_total", (("reason", "crash"),)): 1,
        ("arbiter_worker_restarts_total", (("reason", "reload"),)): 2,
        ("arbiter_reloads_total", (("result", "ok"),)): 3,
        ("arbiter_reloads_total", (("result", "aborted"),)): 1,
        ("arbiter_blocked_loop_warnings_total", ()): 2,
        ("arbiter_worker_requests_total", (("pid", "21"), ("worker", "1"))): 7,
        ("arbiter_worker_requests_total", (("pid", "20"), ("worker", "1"))): 900,
        ("arbiter_worker_requests_total", (("pid", "22"), ("worker", "2"))): 0,
        ("arbiter_worker_connections", (("pid", "21"), ("worker", "1"))): 2,
        ("arbiter_worker_in_flight", (("pid", "21"), ("worker", "1"))): 1,
        ("arbiter_worker_loop_lag_seconds", (("pid", "21"), ("worker", "1"))): 0.25,
        ("arbiter_worker_rss_bytes", (("pid", "21"), ("worker", "1"))): 50_000_000,
    }),
])
def test_render(workers, generation, totals, expected) -> None:
    got = samples(render(workers, generation, totals, "1.2.3"))
    for key, value in expected.items():
        assert got[key] == value, key
    per_worker = {labels for (name, labels) in got if name.startswith("arbiter_worker_")
                  and name != "arbiter_worker_restarts_total"}
    assert per_worker == {(("pid", str(w.pid)), ("worker", str(w.slot))) for w in workers}


def test_rss_not_sampled_yet_has_no_series() -> None:
    got = samples(render([record(5, 1)], 1, Totals(), "1"))
    assert ("arbiter_worker_requests_total", (("pid", "5"), ("worker", "1"))) in got
    assert not any(name == "arbiter_worker_rss_bytes" for name, _ in got)


def test_label_values_are_escaped() -> None:
    text = render([], 1, Totals(), 'a"b\\c\nd')
    assert 'arbiter_build_info{version="a\\"b\\\\c\\nd"} 1' in text.splitlines()
    assert samples(text)[("arbiter_build_info", (("version", 'a"b\\c\nd'),))] == 1


# ------------------------------------------------------------------ the ledger


class Server:
    """The policy and the ledger wired as the master wires them, with fake pids and clock:
    every Log action's event goes to the ledger, and an exited worker's record (its final
    frames taken in) goes to ``worker_gone`` before the policy hears of the exit."""

    def __init__(self, **config: object) -> None:
        self.now = 1000.0
        self.sup = Supervisor(PolicyConfig(**{"workers": 2, **config}), self.now,
                              random.Random(3))
        self.ledger = Ledger()
        self.next_pid = 100
        self.seen: list[Totals] = []

    def run(self, actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self.next_pid += 1
                self.run(self.sup.worker_spawned(self.next_pid, action.slot,
                                                 action.generation, self.now))
            elif isinstance(action, Log) and action.event:
                self.ledger.lifecycle(action.event, action.fields)
        self.check_monotonic()

    def tick(self, advance: float = 0.0) -> None:
        self.now += advance
        self.sup.next_deadline(self.now)
        self.run(self.sup.tick(self.now))

    def boot(self) -> None:
        self.tick()
        for pid in self.booting():
            self.frame(pid, Kind.READY)
        self.tick()

    def booting(self) -> list[int]:
        return [p for p, w in self.sup.workers.items() if w.phase is Phase.BOOTING]

    def frame(self, pid: int, kind: Kind = Kind.TICK, requests: int = 0,
              load: Load | None = None) -> None:
        w = self.sup.workers[pid]
        self.run(self.sup.frame(pid, Frame(kind, requests, w.connections, load=load),
                                self.now))

    def serve(self, pid: int, n: int, errors: int = 0, stalls: int = 0) -> None:
        """The worker served ``n`` more requests (``errors`` of them 5xx)."""
        w = self.sup.workers[pid]
        r2, r3, r4, r5 = w.responses
        self.frame(pid, Kind.TICK, w.requests + n, Load(
            blocked_loop_warnings=w.blocked_loop_warnings + stalls,
            responses_2xx=r2 + n - errors, responses_3xx=r3, responses_4xx=r4,
            responses_5xx=r5 + errors))

    def exit(self, pid: int, code: int | None = 0, sig: int | None = None) -> None:
        self.ledger.worker_gone(self.sup.workers[pid])
        status = ExitStatus(sig=sig) if sig else ExitStatus(code=code)
        self.run(self.sup.worker_exited(pid, status, self.now))

    def totals(self) -> Totals:
        return self.ledger.totals(self.sup.workers.values())

    def check_monotonic(self) -> None:
        now = self.totals()
        if self.seen:
            before = self.seen[-1]
            assert now.requests >= before.requests
            assert all(a >= b for a, b in zip(now.responses, before.responses))
            assert now.blocked_loop_warnings >= before.blocked_loop_warnings
            for name in ("restarts", "reloads"):
                old, new = getattr(before, name), getattr(now, name)
                assert all(new.get(k, 0) >= v for k, v in old.items()), name
        self.seen.append(now)


def test_a_killed_worker_is_replaced_and_no_total_goes_down() -> None:
    s = Server()
    s.boot()
    a, b = sorted(s.sup.workers)
    s.serve(a, 100, errors=3, stalls=1)
    s.serve(b, 50)
    assert s.totals().requests == 150
    s.serve(a, 20)  # its last TICK before the kill -9
    s.exit(a, sig=signal.SIGKILL)
    assert s.totals().requests == 170  # the dead worker's requests stay counted
    s.tick()
    (c,) = s.booting()  # the replacement starts from zero ...
    s.frame(c, Kind.READY)
    s.serve(c, 5)
    t = s.totals()  # ... and adds to the total
    assert (t.requests, t.responses, t.blocked_loop_warnings) == (175, (172, 0, 0, 3), 1)
    assert t.restarts["crash"] == 1 and sum(t.restarts.values()) == 1


def test_a_reload_counts_one_ok_and_a_reload_restart_per_old_worker() -> None:
    s = Server()
    s.boot()
    old = sorted(s.sup.workers)
    for pid in old:
        s.serve(pid, 10)
    s.run(s.sup.request_reload(s.now))
    for _ in range(4):  # canary, then the rest, each retiring an old one
        for pid in s.booting():
            s.frame(pid, Kind.READY)
        s.tick()
        for pid in [p for p in old if s.sup.workers.get(p) and
                    s.sup.workers[p].phase is Phase.RETIRING]:
            s.serve(pid, 1)  # a request finished while draining, in its final frames
            s.exit(pid)
    t = s.totals()
    assert not any(p in s.sup.workers for p in old)
    assert t.requests == 22
    assert t.restarts["reload"] == 2 and t.reloads == {"ok": 1, "aborted": 0}


def test_an_aborted_reload() -> None:
    s = Server()
    s.boot()
    s.run(s.sup.request_reload(s.now))
    (canary,) = s.booting()
    s.exit(canary, code=4)  # the new code does not import
    t = s.totals()
    assert t.reloads == {"ok": 0, "aborted": 1}
    assert t.restarts["boot_failure"] == 1


@pytest.mark.parametrize("config, act, reason", [
    ({"max_requests": 10}, lambda s, pid: s.serve(pid, 10), "max_requests"),
    ({"max_lifetime_s": 60.0}, lambda s, pid: s.tick(61), "max_lifetime"),
    ({"max_rss_mib": 100}, lambda s, pid: [s.sup.rss_sample(pid, 200 << 20)
                                          for _ in range(3)], "max_rss"),
    ({}, lambda s, pid: s.run(s.sup.scale(-1, s.now)), "scale"),
])
def test_recycling_and_scaling_count_as_their_reason(config, act, reason) -> None:
    s = Server(**config)
    s.boot()
    pid = max(s.sup.workers)  # the highest slot: the one a scale-down retires
    act(s, pid)
    for _ in range(3):
        s.tick()
        for new in s.booting():
            s.frame(new, Kind.READY)
    retiring = [p for p, w in s.sup.workers.items() if w.phase is Phase.RETIRING]
    assert retiring, "nothing was retired"
    for p in retiring:
        s.exit(p)
    restarts = s.totals().restarts
    assert restarts[reason] == len(retiring) and sum(restarts.values()) == len(retiring)


def test_a_timeout_and_a_stop() -> None:
    s = Server(timeout_s=10.0)
    s.boot()
    a, b = sorted(s.sup.workers)
    s.frame(b)
    s.tick(11)  # both silent past --timeout: aborted
    s.exit(a, sig=signal.SIGABRT)
    assert s.totals().restarts["timeout"] == 1
    s.run(s.sup.stop(graceful=True, now=s.now))
    s.exit(b)  # exiting because the server stops is no restart
    assert sum(s.totals().restarts.values()) == 1


def test_counters_past_32_bits_keep_growing() -> None:
    s = Server(workers=1)
    s.boot()
    (pid,) = s.sup.workers
    s.frame(pid, Kind.TICK, U32 - 10, Load(responses_2xx=U32 - 10))
    s.frame(pid, Kind.TICK, (U32 + 5) % U32, Load(responses_2xx=(U32 + 5) % U32))
    assert s.totals().requests == U32 + 5
    assert s.totals().responses[0] == U32 + 5


def test_a_legacy_frame_keeps_the_gauges_it_does_not_carry() -> None:
    s = Server(workers=1)
    s.boot()
    (pid,) = s.sup.workers
    s.frame(pid, Kind.TICK, 3, Load(in_flight=2, loop_lag_us=1500, responses_2xx=3))
    s.frame(pid, Kind.TICK, 4)  # a worker of the previous version: no load
    w = s.sup.workers[pid]
    assert (w.requests, w.in_flight, w.loop_lag_s, w.responses) == (4, 2, 0.0015, (3, 0, 0, 0))


def test_the_ledger_survives_a_reexec() -> None:
    s = Server(max_requests=10)
    s.boot()
    a, b = sorted(s.sup.workers)
    s.serve(a, 3)
    s.exit(a, sig=signal.SIGKILL)
    s.serve(b, 10)  # due for recycling: retired once its replacement is ready
    for _ in range(3):
        s.tick()
        for new in s.booting():
            s.frame(new, Kind.READY)
    assert s.sup.workers[b].phase is Phase.RETIRING
    before = s.totals()
    # the new master restores the base and adopts b, whose counters go on in a new record
    restored = Ledger.restore(s.ledger.export(s.sup.workers.values()))
    adopted = record(b, 2, Phase.RETIRING)
    restored.seed(adopted)  # before its first frame to the new master
    assert (adopted.requests, adopted.responses) == (10, (10, 0, 0, 0))
    others = [w for w in s.sup.workers.values() if w.pid != b]
    assert restored.totals([adopted, *others]) == before
    assert before.requests == 13
    restored.worker_gone(adopted)
    restored.lifecycle("exited", (("pid", b), ("cause", "retired")))
    after = restored.totals([])
    assert after.requests == 13 and after.responses == (13, 0, 0, 0)
    assert after.restarts["crash"] == 1
    assert after.restarts["max_requests"] == 1  # why the previous master retired it


@pytest.mark.parametrize("text", ["", "{", "[]", '{"requests": -1}', '{"requests": "x"}',
                                  '{"requests": 1, "responses": [1], "blocked": true, '
                                  '"restarts": {}, "reloads": {}, "retired": {}, "workers": {}}',
                                  '{"requests": 1, "responses": [1], "blocked": 0, '
                                  '"restarts": {}, "reloads": {}, "retired": {}, '
                                  '"workers": {"5": [1, 2]}}'])
def test_an_unreadable_ledger_starts_fresh(text) -> None:
    assert Ledger.restore(text).totals([]) == Totals()


# ------------------------------------------------------------------ the endpoint


def page() -> str:
    return "arbiter_generation 1\n"


@pytest.mark.parametrize("head, status", [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /metrics HTTP/1.0\r\n\r\n", 200),
    (b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200),
    (b"GET /metrics HTTP/1.1\n\n", 200),
    (b"HEAD /metrics HTTP/1.1\r\n\r\n", 200),
    (b"GET / HTTP/1.1\r\n\r\n", 404),
    (b"GET /metrics/ HTTP/1.1\r\n\r\n", 404),
    (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
    (b"GET /metrics\r\n\r\n", 400),
    (b"GET /metrics HTTP/2\r\n\r\n", 400),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", 400),  # a TLS hello
    (b"\r\n\r\n", 400),
])
def test_respond(head, status) -> None:
    got_status, response = respond(head, page)
    assert got_status == status
    assert response.startswith(b"HTTP/1.1 %d " % status)
    headers, _, body = response.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close\r\n" in headers + b"\r\n"
    length = int(headers.split(b"content-length: ")[1].split(b"\r\n")[0])
    if head.startswith(b"HEAD"):
        assert body == b"" and length == len(page())
    else:
        assert len(body) == length
    if status == 200:
        assert f"content-type: {CONTENT_TYPE}".encode() in headers
        assert body in (b"", page().encode())


@pytest.mark.parametrize("buffer, end", [
    (b"", -1),
    (b"GET / HTTP/1.1\r\n", -1),
    (b"GET / HTTP/1.1\r\n\r\n", 18),
    (b"GET / HTTP/1.1\r\n\r\nleftover", 18),
    (b"GET / HTTP/1.1\n\n", 16),
    (b"GET / HTTP/1.1\r\nA: b\r\n\r\n", 24),
])
def test_head_end(buffer, end) -> None:
    assert head_end(buffer) == end
