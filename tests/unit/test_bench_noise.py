"""bench/noise.py (CPU accounting and the quiet-machine verdict) and the parts of
bench/run.py's report that depend on it. No bench venv needed: only the standard
library and the two files themselves."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


noise = _load("noise", BENCH / "noise.py")  # run.py imports it under this name
bench_run = _load("bench_run", BENCH / "run.py")

Proc, Cpu, Snapshot = noise.Proc, noise.Cpu, noise.Snapshot


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int = 0,
              cstime: int = 0, start: int = 151215) -> str:
    """A /proc/PID/stat line with the fields proc(5) numbers 1..24 (the rest omitted)."""
    return (f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194304 102 0 0 0 "
            f"{utime} {stime} {cutime} {cstime} 20 0 1 0 {start} 3133440 393")


# ---------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize("text, want", [
    # user nice system idle iowait irq softirq steal guest guest_nice: guest is inside user
    ("cpu  100 5 50 800 10 3 7 2 40 1\ncpu0 50 2 25 400 5 1 3 1 20 0\n"
     "cpu1 50 3 25 400 5 2 4 1 20 1\nintr 12345\n",
     Cpu(busy=167, irq=10, steal=2)),
    # an old kernel's seven columns
    ("cpu 10 0 5 100 1 0 0\n", Cpu(busy=15, irq=0, steal=0)),
], ids=["modern", "old-kernel"])
def test_parse_cpu(text, want):
    assert noise.parse_cpu(text) == want


def test_parse_cpu_without_the_aggregate_line_is_an_error():
    with pytest.raises(ValueError, match="aggregate cpu line"):
        noise.parse_cpu("cpu0 1 2 3 4\nintr 5\n")


@pytest.mark.parametrize("text, want", [
    (stat_line(14256, "cat", 14250, 7, 3, 20, 5), Proc(14256, 14250, "cat", 10, 25, 151215)),
    (stat_line(42, "arbiter: worker", 41, 1, 2, start=9), Proc(42, 41, "arbiter: worker", 3, 0, 9)),
    # the name may hold spaces and parentheses: fields start after the last ')'
    (stat_line(7, "a (b)) c", 1, 4, 4, 1, 1), Proc(7, 1, "a (b)) c", 8, 2, 151215)),
], ids=["plain", "spaces", "parentheses"])
def test_parse_proc_stat(text, want):
    assert noise.parse_proc_stat(text) == want


# ---------------------------------------------------------------------------
# trees and intervals

# init 1; run.py 100 -> server master 200 -> workers 201, 202; run.py 100 -> wrk 300;
# an unrelated process 400.
PROCS = {p.pid: p for p in [
    Proc(1, 0, "init", 5, 0), Proc(100, 1, "python", 10, 40), Proc(200, 100, "master", 3, 0),
    Proc(201, 200, "worker", 50, 0), Proc(202, 200, "worker", 60, 0),
    Proc(300, 100, "wrk", 30, 0), Proc(400, 1, "stress", 70, 0)]}


@pytest.mark.parametrize("root, want", [
    (100, {100, 200, 201, 202, 300}), (200, {200, 201, 202}), (201, {201}), (999, set()),
])
def test_tree(root, want):
    assert noise.tree(PROCS, root) == want


@pytest.mark.parametrize("root, want", [(100, 10 + 40 + 3 + 50 + 60 + 30), (200, 113), (999, 0)])
def test_tree_ticks_counts_own_and_reaped_children(root, want):
    assert noise.tree_ticks(PROCS, root) == want


def snap(busy: int, wall: float, procs: list[Proc], irq: int = 10, steal: int = 5) -> Snapshot:
    return Snapshot(Cpu(busy=busy, irq=irq, steal=steal), {p.pid: p for p in procs}, wall)


BEFORE = snap(1000, 50.0, list(PROCS.values()))


def changed(**updates: tuple[int, int] | None) -> list[Proc]:
    """PROCS with some processes' (own, children) ticks replaced; None drops one."""
    out = []
    for p in PROCS.values():
        new = updates.get(f"p{p.pid}", (p.own, p.children))
        if new is not None:
            out.append(Proc(p.pid, p.ppid, p.comm, *new, start=p.start))
    return out


# Every case spans 1 s of wall time: 100 ticks of one core at 100 Hz.
@pytest.mark.parametrize("after, want", [
    pytest.param(
        # the server's worker +90, wrk +95, run.py +2, loopback softirq +20: nothing else
        snap(1187, 51.0, changed(p201=(140, 0), p300=(125, 0), p100=(12, 40)), irq=30),
        dict(core_ticks=100, server_ticks=90, client_ticks=97, other_ticks=0, irq_ticks=20,
             steal_ticks=0, top_other=()), id="quiet"),
    pytest.param(
        # worker 201 died and the master reaped it: its 50 old ticks and 10 new ones move
        # into the master's children; worker 202 +80; a replacement 203 started and used 5
        snap(1190, 51.0, changed(p201=None, p200=(3, 60), p202=(140, 0), p300=(125, 0))
             + [Proc(203, 200, "worker", 5, 0)]),
        dict(core_ticks=100, server_ticks=95, client_ticks=95, other_ticks=0, top_other=()),
        id="worker-reaped"),
    pytest.param(
        # an unrelated process used 30 ticks and the hypervisor stole 10: both are other CPU
        snap(1225, 51.0, changed(p201=(140, 0), p300=(125, 0), p400=(100, 0)), steal=15),
        dict(core_ticks=100, server_ticks=90, client_ticks=95, other_ticks=40, steal_ticks=10,
             top_other=(("stress", 400, 30),)), id="competitor"),
    pytest.param(
        # a new process reusing a known pid counts from zero, not from the old one's ticks
        snap(1012, 51.0, changed(p400=None) + [Proc(400, 1, "stress", 12, 0, start=777)]),
        dict(server_ticks=0, client_ticks=0, other_ticks=12, top_other=(("stress", 400, 12),)),
        id="pid-reused"),
    pytest.param(
        # a process that renamed itself (setproctitle, a kworker taking other work) is the
        # same process: only its new ticks count
        snap(1003, 51.0, changed(p400=None) + [Proc(400, 1, "kworker/1:1-events", 73, 0)]),
        dict(other_ticks=3, top_other=(("kworker/1:1-events", 400, 3),)), id="renamed"),
    pytest.param(
        # the bench's own loopback softirq on an idle CPU: 20 irq ticks charged to nobody
        snap(1207, 51.0, changed(p201=(140, 0), p300=(125, 0), p100=(12, 40)), irq=30),
        dict(server_ticks=90, client_ticks=97, other_ticks=0, irq_ticks=20, idle_irq_ticks=20),
        id="irq-on-idle"),
    pytest.param(
        # 30 ticks charged to nobody, only 10 of them interrupts: 20 stay other CPU
        snap(1217, 51.0, changed(p201=(140, 0), p300=(125, 0), p100=(12, 40)), irq=20),
        dict(other_ticks=20, idle_irq_ticks=10), id="unexplained-busy"),
    pytest.param(
        # a competitor's interrupts do not hide it: its own ticks are other CPU
        snap(1230, 51.0, changed(p201=(140, 0), p300=(125, 0), p100=(12, 40), p400=(100, 0)),
             irq=40),
        dict(other_ticks=30, idle_irq_ticks=13), id="competitor-and-irq"),
    pytest.param(
        # a short-lived command that its (unrelated) parent reaped is other CPU, not idle irq
        snap(1212, 51.0, changed(p201=(140, 0), p300=(125, 0), p100=(12, 40), p400=(70, 25)),
             irq=40),
        dict(other_ticks=25, idle_irq_ticks=0), id="reaped-by-another"),
])
def test_interval(after, want):
    got = noise.interval(BEFORE, after, server=200, bench=100, hz=100)
    assert {k: getattr(got, k) for k in want} == want


@pytest.mark.parametrize("other_ticks, core_ticks, want", [
    (30, 100, 30.0), (5, 1000, 0.5), (-2, 100, 0.0), (10, 0, 0.0),
])
def test_other_pct_of_one_core(other_ticks, core_ticks, want):
    iv = noise.Interval(core_ticks=core_ticks, server_ticks=0, client_ticks=0,
                        other_ticks=other_ticks, irq_ticks=0, steal_ticks=0, top_other=())
    assert iv.other_pct == want


def test_record_is_in_seconds_and_percent_of_a_core():
    iv = noise.Interval(core_ticks=1000, server_ticks=950, client_ticks=900, other_ticks=120,
                        irq_ticks=40, steal_ticks=10, top_other=(("pytest", 9, 100),))
    assert iv.record(hz=100) == {
        "interval_s": 10.0, "server_cpu_s": 9.5, "client_cpu_s": 9.0, "other_cpu_s": 1.2,
        "server_core_pct": 95.0, "client_core_pct": 90.0, "other_core_pct": 12.0,
        "irq_core_pct": 4.0, "steal_core_pct": 1.0, "idle_irq_core_pct": 0.0,
        "top_other": [{"comm": "pytest", "pid": 9, "core_pct": 10.0}]}


@pytest.mark.parametrize("requests, cpu_s, want", [
    (100_000, 2.0, 50_000.0), (5, 0.5, 10.0), (1000, 0.0, None), (1000, None, None),
    (0, 1.0, None), (None, 1.0, None),
])
def test_per_cpu_second(requests, cpu_s, want):
    assert noise.per_cpu_second(requests, cpu_s) == want


# ---------------------------------------------------------------------------
# the verdict, the decision and the banner


@pytest.mark.parametrize("load, others, allow, noisy, decision", [
    (0.05, [("a", 0.4), ("b", 5.0)], False, False, "write"),  # at the limits is still quiet
    (0.50, [], False, False, "write"),
    (0.51, [("a", 0.1)], False, True, "refuse"),
    (0.51, [("a", 0.1)], True, True, "write-noisy"),
    (0.10, [("a", 0.1), ("b", 5.1)], False, True, "refuse"),
    (0.10, [("a", 0.1), ("b", 40.0)], True, True, "write-noisy"),
    (1.90, [("a", 9.0)], False, True, "refuse"),
])
def test_verdict_and_decision(load, others, allow, noisy, decision):
    v = noise.verdict(load, others)
    assert v.noisy is noisy
    assert noise.decide(v, allow) == decision


def test_reasons_name_the_numbers():
    v = noise.verdict(0.93, [("hello uvicorn round 1", 2.0), ("hello granian round 2", 17.5),
                             ("post-16k granian round 1", 6.0)])
    assert v.reasons() == [
        "load average 0.93 at the start (limit 0.5)",
        "other processes used more than 5% of a core in 2 of 3 measurements "
        "(worst 17.5%, hello granian round 2)"]
    assert v.worst_other_pct == 17.5


def test_banner_only_for_a_noisy_run():
    assert noise.banner(noise.verdict(0.1, [("a", 1.0)])) == []
    lines = noise.banner(noise.verdict(0.1, [("a", 1.0), ("websocket hypercorn round 3", 12.25)]))
    assert lines[0].startswith("> **NOISY RUN")
    assert "12.2%, websocket hypercorn round 3" in "\n".join(lines)
    assert "worst other CPU 12.2% of a core over 2 measurements" in "\n".join(lines)
    assert lines[-1] == ""  # a blank line before the title


# ---------------------------------------------------------------------------
# real /proc: the accounting sees a child's CPU in the tree it belongs to


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_snapshot_attributes_a_busy_child_to_its_tree():
    burn = ("import sys, time\n"
            "while time.process_time() < 0.3: pass\n"
            "print('done', flush=True)\n"
            "sys.stdin.read()\n")
    before = noise.snapshot()
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"  # it has used its 0.3 s of CPU
        after = noise.snapshot()
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    hz = noise.clock_ticks_per_second()
    used = noise.interval(before, after, server=child.pid, bench=os.getpid(), hz=hz)
    assert 0.25 * hz <= used.server_ticks <= 5 * hz  # 0.3 s, with room for interpreter start
    assert child.pid not in [pid for _, pid, _ in used.top_other]


# ---------------------------------------------------------------------------
# bench/run.py's report: the columns, the refusal and the banner


def run_result(rps: float, per_cpu: float, other: float, rnd: int = 1) -> dict:
    return {"rps": rps, "requests": rps * 10, "req_per_cpu_s": per_cpu, "round": rnd,
            "latency_us": {"p50": 1000, "p99": 4000}, "rss_per_worker": 30 * 2**20,
            "error_total": 0, "noise": {"other_core_pct": other}}


def fake_bench(tmp_path: Path, others: tuple[float, float], allow_noisy: bool):
    args = argparse.Namespace(
        json_out=str(tmp_path / "results.json"), md_out=str(tmp_path / "RESULTS.md"),
        allow_noisy=allow_noisy, smoke=False, duration=10, warmup=2, rounds=1, connections=64,
        pin=True, scenarios=["hello"], ws_clients=64, idle_conns=10_000)
    results = {"hello": {
        "uvicorn-httptools": {"status": "ok", "notes": [],
                              "runs": [run_result(10_000, 10_500, others[0])]},
        "arbiter-httptools-uvloop": {"status": "ok", "notes": [],
                                     "runs": [run_result(15_000, 21_000, others[1])]}}}
    return SimpleNamespace(args=args, results=results, commands={})


def fake_meta(load: float) -> dict:
    return {"date": "2026-12-02 10:00 UTC", "cores": 2, "cpu": "test", "kernel": "6.x",
            "loadavg_start": (load, 0.1, 0.1), "loadavg_end": (0.1, 0.1, 0.1),
            "python": "3.11", "wrk": "wrk 4", "arbiter_commit": "abc", "versions": {},
            "argv": "bench/run.py"}


def test_a_quiet_run_writes_results_with_the_cpu_columns(tmp_path):
    bench = fake_bench(tmp_path, (0.5, 1.2), allow_noisy=False)
    assert bench_run.write_reports(bench, fake_meta(0.2)) == "write"
    md = (tmp_path / "RESULTS.md").read_text()
    assert md.startswith("# arbiter benchmark results")
    header, _, arbiter_row = [ln for ln in md.splitlines() if ln.startswith("| ")][:3]
    cells = dict(zip([c.strip() for c in header.split("|")],
                     [c.strip() for c in arbiter_row.split("|")]))
    assert cells["server"] == "arbiter-httptools-uvloop"
    assert (cells["req/CPU-s"], cells["CPU × uvicorn"]) == ("21,000", "2.00")
    assert cells["× uvicorn"] == "1.50"
    assert cells["other CPU max %"] == "1.2" and cells["p99 latency ms"] == "4.00"
    assert cells["RSS/worker MiB"] == "30.0"
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["noise"]["noisy"] is False
    assert data["summary"]["hello"]["arbiter-httptools-uvloop"]["cpu_ratio_to_uvicorn"] == 2.0


@pytest.mark.parametrize("load, others", [(0.9, (0.5, 1.0)), (0.1, (0.5, 7.5))],
                         ids=["loaded-at-start", "busy-during-a-measurement"])
def test_a_noisy_run_is_refused_but_keeps_its_raw_data(tmp_path, load, others, capsys):
    bench = fake_bench(tmp_path, others, allow_noisy=False)
    assert bench_run.write_reports(bench, fake_meta(load)) == "refuse"
    assert not (tmp_path / "RESULTS.md").exists()
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["noise"]["noisy"] is True
    assert data["results"]["hello"]["arbiter-httptools-uvloop"]["runs"][0]["noise"] == {
        "other_core_pct": others[1]}
    assert "--allow-noisy" in capsys.readouterr().err


def test_allow_noisy_writes_results_marked_at_the_top(tmp_path):
    bench = fake_bench(tmp_path, (0.5, 7.5), allow_noisy=True)
    assert bench_run.write_reports(bench, fake_meta(0.1)) == "write-noisy"
    md = (tmp_path / "RESULTS.md").read_text()
    assert md.startswith("> **NOISY RUN")
    top = md.split("# arbiter benchmark results")[0]
    assert "7.5%, hello arbiter-httptools-uvloop round 1" in top
