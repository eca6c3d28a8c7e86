"""The master's counters and gauges, rendered as Prometheus text: pure, no I/O.

The per-worker numbers live in the policy's WorkerRecords (fed by heartbeat
frames and RSS samples); this module keeps what outlives a worker -- the
``Ledger`` of totals that never go down across restarts, reloads and re-execs
-- and renders both in the text exposition format 0.0.4. Serving it is
``arbiter.metrics_server``'s job.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from arbiter.policy import Phase, WorkerRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESPONSE_CLASSES = ("2xx", "3xx", "4xx", "5xx")
RESTART_REASONS = ("crash", "timeout", "boot_failure", "max_requests", "max_rss",
                   "max_lifetime", "reload", "scale")
RELOAD_RESULTS = ("ok", "aborted")
WORKER_STATES = {Phase.BOOTING: "booting", Phase.READY: "ready", Phase.RETIRING: "draining"}
# a `retired` event's reason -> the restart reason counted when that worker exits
_RETIRED_AS = {"reload": "reload", "superseded": "reload", "reload_aborted": "reload",
               "max_requests": "max_requests", "max_rss": "max_rss",
               "max_lifetime": "max_lifetime", "scale": "scale"}


# ------------------------------------------------------------------ the ledger


@dataclasses.dataclass
class Totals:
    """Monotonic totals of the whole server."""

    requests: int = 0
    responses: tuple[int, ...] = (0,) * len(RESPONSE_CLASSES)  # 2xx, 3xx, 4xx, 5xx
    blocked_loop_warnings: int = 0
    restarts: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(RESTART_REASONS, 0))
    reloads: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(RELOAD_RESULTS, 0))


class Ledger:
    """Totals = what exited workers served (their final counters) + what live ones have.

    A live worker's counters are cumulative for its life (its WorkerRecord), so
    adding them at render time and moving them into the base when it exits
    keeps every total monotonic without remembering deltas. ``export()`` and
    ``restore()`` carry the base across a SIGUSR2 re-exec, with the live
    workers' counters, which ``seed()`` puts back into their adopted records
    (so neither their series nor the totals dip until their next frame).
    """

    def __init__(self) -> None:
        self._requests = 0
        self._responses = [0] * len(RESPONSE_CLASSES)
        self._blocked = 0
        self._restarts = dict.fromkeys(RESTART_REASONS, 0)
        self._reloads = dict.fromkeys(RELOAD_RESULTS, 0)
        self._retired: dict[int, str] = {}  # pid -> why the policy retired it
        self._handed: dict[int, list[int]] = {}  # pid -> its counters, from the last master

    def worker_gone(self, record: WorkerRecord) -> None:
        """A worker exited; its final frames are in ``record`` already."""
        self._requests += record.requests
        for i, count in enumerate(record.responses[:len(self._responses)]):
            self._responses[i] += count
        self._blocked += record.blocked_loop_warnings

    def lifecycle(self, event: str, fields: Iterable[tuple[str, object]]) -> None:
        """Count what a lifecycle event (a policy Log action's event and fields) says.

        A worker's restart is counted when it exits: by its exit's cause (crash,
        timeout, boot_failure), or for a retired one by why it was retired; one
        that exits because the server stops is no restart. A worker retired by
        the previous master (handed over draining) counts as a reload.
        """
        facts = dict(fields)
        if event == "retired":
            self._retired[int(facts.get("pid", 0))] = str(facts.get("reason", ""))
        elif event == "exited":
            why = self._retired.pop(int(facts.get("pid", 0)), "")
            cause = facts.get("cause")
            if cause == "retired":
                self._bump(self._restarts, _RETIRED_AS.get(why, "reload"))
            elif cause in ("crash", "timeout", "boot_failure"):
                self._bump(self._restarts, str(cause))
        elif event == "reload_finished":
            self._bump(self._reloads, "ok")
        elif event == "reload_aborted":
            self._bump(self._reloads, "aborted")

    @staticmethod
    def _bump(counter: dict[str, int], key: str) -> None:
        counter[key] = counter.get(key, 0) + 1

    def totals(self, live: Iterable[WorkerRecord]) -> Totals:
        requests, responses, blocked = self._requests, list(self._responses), self._blocked
        for w in live:
            requests += w.requests
            for i, count in enumerate(w.responses[:len(responses)]):
                responses[i] += count
            blocked += w.blocked_loop_warnings
        return Totals(requests, tuple(responses), blocked, dict(self._restarts),
                      dict(self._reloads))

    def seed(self, record: WorkerRecord) -> None:
        """An adopted worker's counters as the previous master last knew them."""
        counters = self._handed.pop(record.pid, None)
        if counters is not None:
            record.requests, record.blocked_loop_warnings = counters[0], counters[1]
            record.responses = tuple(counters[2:2 + len(RESPONSE_CLASSES)])

    def export(self, live: Iterable[WorkerRecord]) -> str:
        workers = {w.pid: [w.requests, w.blocked_loop_warnings, *w.responses] for w in live}
        return json.dumps({"requests": self._requests, "responses": self._responses,
                           "blocked": self._blocked, "restarts": self._restarts,
                           "reloads": self._reloads, "retired": self._retired,
                           "workers": workers}, separators=(",", ":"))

    @classmethod
    def restore(cls, text: str) -> Ledger:
        """The ledger a previous master of this process exported; a fresh one for
        anything unreadable (a counter reset is better than a master that cannot start)."""
        ledger = cls()
        try:
            data = json.loads(text)
            ledger._requests = _nonnegative_int(data["requests"])
            responses = [_nonnegative_int(n) for n in data["responses"]][:len(RESPONSE_CLASSES)]
            ledger._responses[:len(responses)] = responses
            ledger._blocked = _nonnegative_int(data["blocked"])
            for name in ("restarts", "reloads"):
                target = getattr(ledger, "_" + name)
                for key, value in dict(data[name]).items():
                    target[str(key)] = _nonnegative_int(value)
            ledger._retired = {int(pid): str(why) for pid, why in dict(data["retired"]).items()}
            width = 2 + len(RESPONSE_CLASSES)
            for pid, counters in dict(data["workers"]).items():
                values = [_nonnegative_int(n) for n in counters]
                if len(values) != width:
                    raise ValueError(f"worker {pid}: {values!r}")
                ledger._handed[int(pid)] = values
        except (ValueError, KeyError, TypeError):
            return cls()
        return ledger


def _nonnegative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


# ------------------------------------------------------------------ rendering


def render(workers: Iterable[WorkerRecord], generation: int, totals: Totals,
           version: str) -> str:
    """The text exposition format: each family's HELP and TYPE, then its samples."""
    workers = sorted(workers, key=lambda w: (w.slot, w.pid))
    out: list[str] = []

    def family(name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Mapping[str, object], float | int]]) -> None:
        out.append(f"# HELP {name} {_escape_help(help_text)}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{_labels(labels)} {_number(value)}")

    def per_worker(attribute: str) -> list[tuple[Mapping[str, object], float | int]]:
        return [({"worker": w.slot, "pid": w.pid}, getattr(w, attribute)) for w in workers
                if getattr(w, attribute) is not None]

    states = dict.fromkeys(WORKER_STATES.values(), 0)
    for w in workers:
        states[WORKER_STATES[w.phase]] += 1
    family("arbiter_build_info", "gauge", "The running arbiter's version; always 1.",
           [({"version": version}, 1)])
    family("arbiter_generation", "gauge", "The current worker generation (a reload starts "
           "the next one).", [({}, generation)])
    family("arbiter_workers", "gauge", "Worker processes by state.",
           [({"state": state}, n) for state, n in states.items()])
    family("arbiter_requests_total", "counter", "Requests served by every worker, past "
           "and present.", [({}, totals.requests)])
    family("arbiter_responses_total", "counter", "HTTP responses written, by status class "
           "(the server's own 4xx and 503 answers included).",
           [({"code": code}, n) for code, n in zip(RESPONSE_CLASSES, totals.responses)])
    family("arbiter_worker_restarts_total", "counter", "Workers that exited and were "
           "replaced (or retired), by reason.",
           [({"reason": reason}, n) for reason, n in sorted(totals.restarts.items())])
    family("arbiter_reloads_total", "counter", "Rolling reloads, by result.",
           [({"result": result}, n) for result, n in sorted(totals.reloads.items())])
    family("arbiter_blocked_loop_warnings_total", "counter", "Event-loop stalls longer than "
           "--warn-blocking, in every worker.", [({}, totals.blocked_loop_warnings)])
    family("arbiter_worker_requests_total", "counter", "Requests this worker has served.",
           per_worker("requests"))
    family("arbiter_worker_connections", "gauge", "Open connections (WebSockets included).",
           per_worker("connections"))
    family("arbiter_worker_in_flight", "gauge", "Requests the app is handling now.",
           per_worker("in_flight"))
    family("arbiter_worker_rss_bytes", "gauge", "Resident memory, sampled by the master.",
           per_worker("rss_bytes"))
    family("arbiter_worker_loop_lag_seconds", "gauge", "How late the worker's last "
           "heartbeat timer fired: event-loop lag.", per_worker("loop_lag_s"))
    return "\n".join(out) + "\n"


def _labels(labels: Mapping[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items()) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
