"""The control socket's pure core: request parsing and validation, replies, scale
arithmetic, telling a command from an app, and the `arbiter status` text. No sockets."""

from __future__ import annotations

import json

import pytest

from arbiter import control
from arbiter.control import Request, RequestError, parse_request, parse_scale, scale_target
from arbiter.errors import ControlError
from tests.unit.test_policy import Table


@pytest.mark.parametrize("line, expected", [
    (b'{"command": "status"}', Request("status")),
    (b'{"command": "reload"}', Request("reload")),
    (b'{"command": "reopen-logs"}', Request("reopen-logs")),
    (b'{"command": "stop"}', Request("stop")),
    (b'{"command": "stop", "quick": true}', Request("stop", quick=True)),
    (b'{"command": "stop", "quick": false}', Request("stop")),
    (b'{"command": "scale", "to": 3}', Request("scale", to=3)),
    (b'{"command": "scale", "by": -1}', Request("scale", by=-1)),
    (b' {"by": 2, "command": "scale"} \r', Request("scale", by=2)),  # order, spaces, a CR
])
def test_good_requests(line: bytes, expected: Request) -> None:
    assert parse_request(line) == expected


@pytest.mark.parametrize("line, fragment", [
    (b"", "not JSON"),
    (b"status", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"command": "status"', "not JSON"),
    (b"[]", "a JSON object"),
    (b'"status"', "a JSON object"),
    (b"null", "a JSON object"),
    (b"{}", 'no "command"'),
    (b'{"cmd": "status"}', 'no "command"'),
    (b'{"command": 1}', '"command" must be a string'),
    (b'{"command": null}', 'no "command"'),
    (b'{"command": ["status"]}', '"command" must be a string'),
    (b'{"command": "restart"}', "unknown command 'restart' (one of status, reload, scale"),
    (b'{"command": "STATUS"}', "unknown command 'STATUS'"),
    (b'{"command": "status", "verbose": true}', "status takes no field 'verbose'"),
    (b'{"command": "stop", "quick": "yes"}', "'quick' must be true or false"),
    (b'{"command": "stop", "quick": 1}', "'quick' must be true or false"),
    (b'{"command": "scale"}', 'either "to"'),
    (b'{"command": "scale", "to": 2, "by": 1}', 'either "to"'),
    (b'{"command": "scale", "to": "3"}', "'to' must be an integer"),
    (b'{"command": "scale", "to": 3.0}', "'to' must be an integer"),
    (b'{"command": "scale", "to": true}', "'to' must be an integer"),
    (b'{"command": "scale", "to": 0}', "at least 1"),
    (b'{"command": "scale", "to": -2}', "at least 1"),
    (b'{"command": "scale", "by": 0}', "changes nothing"),
    (b'{"command": "scale", "workers": 3}', "scale takes no field 'workers'"),
    (b"x" * (control.MAX_REQUEST_BYTES + 1), "longer than 65536 bytes"),
])
def test_bad_requests_say_what_is_wrong(line: bytes, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(line)
    assert fragment in str(info.value)


@pytest.mark.parametrize("request_", [
    Request("status"), Request("reload"), Request("reopen-logs"), Request("stop"),
    Request("stop", quick=True), Request("scale", to=4), Request("scale", by=-2),
])
def test_a_request_survives_its_wire_form(request_: Request) -> None:
    line = request_.encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_request(line[:-1]) == request_


@pytest.mark.parametrize("text, expected", [
    ("3", Request("scale", to=3)),
    ("+2", Request("scale", by=2)),
    ("-1", Request("scale", by=-1)),
    (" 12 ", Request("scale", to=12)),
    ("1", Request("scale", to=1)),
])
def test_scale_argument(text: str, expected: Request) -> None:
    assert parse_scale(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("0", "at least 1"),
    ("+0", "changes nothing"),
    ("-0", "changes nothing"),
    ("x", "expected N, +N or -N"),
    ("", "expected N, +N or -N"),
    ("1.5", "expected N, +N or -N"),
    ("--1", "expected N, +N or -N"),
    ("+-1", "expected N, +N or -N"),
    ("3 workers", "expected N, +N or -N"),
    ("1e3", "expected N, +N or -N"),
])
def test_bad_scale_argument(text: str, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_scale(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize("request_, current, target", [
    (Request("scale", to=3), 5, 3),
    (Request("scale", to=5), 5, 5),
    (Request("scale", by=2), 1, 3),
    (Request("scale", by=-1), 3, 2),
    (Request("scale", by=-1), 1, 1),  # never below 1, as SIGTTOU
    (Request("scale", by=-10), 3, 1),
    (Request("scale", to=512), 1, 512),
])
def test_scale_target(request_: Request, current: int, target: int) -> None:
    assert scale_target(request_, current) == target


@pytest.mark.parametrize("request_", [Request("scale", to=513), Request("scale", by=600)])
def test_scale_target_above_the_workers_maximum(request_: Request) -> None:
    with pytest.raises(RequestError, match=r"cannot scale to \d+ workers: --workers must be "
                                           r"an integer from 1 to 512"):
        scale_target(request_, 3)


@pytest.mark.parametrize("word, is_command", [
    ("status", True), ("reload", True), ("scale", True), ("reopen-logs", True), ("stop", True),
    ("main:app", False), ("status:app", False), ("stop:app", False),
    ("Status", False), ("restart", False), ("--workers", False), ("", False),
])
def test_a_command_word_is_told_apart_from_an_app(word: str, is_command: bool) -> None:
    assert control.is_command(word) is is_command


def test_replies_are_one_json_line() -> None:
    ok = control.reply_ok(generation=3, message="generation 3 is serving")
    assert ok.endswith(b"\n") and ok.count(b"\n") == 1
    assert json.loads(ok) == {"ok": True, "generation": 3, "message": "generation 3 is serving"}
    error = control.reply_error("reload aborted: boom", generation=4)
    assert json.loads(error) == {"ok": False, "error": "reload aborted: boom", "generation": 4}
    assert control.decode_reply(error[:-1])["error"] == "reload aborted: boom"


@pytest.mark.parametrize("line", [b"garbage", b"[]", b'{"error": "x"}', b'{"ok": "yes"}'])
def test_a_malformed_reply_is_a_control_error(line: bytes) -> None:
    with pytest.raises(ControlError):
        control.decode_reply(line)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (59.9, "59s"), (60, "1m 00s"), (65, "1m 05s"), (3599, "59m 59s"),
    (3600, "1h 00m"), (86399, "23h 59m"), (90061, "1d 01h"), (None, "-"),
])
def test_durations(seconds: float | None, text: str) -> None:
    assert control.format_duration(seconds) == text


def _status(**master: object) -> dict[str, object]:
    base = {"pid": 4242, "version": "0.1.0", "app": "main:app", "generation": 3,
            "workers_target": 2, "workers_ready": 2, "reloading": False, "stopping": False,
            "uptime_s": 65.0, "listeners": ["http://127.0.0.1:8000", "unix:/run/app.sock"],
            "control_socket": "/run/arbiter.sock"}
    base.update(master)
    workers = [
        {"slot": 1, "pid": 4250, "generation": 3, "state": "ready", "uptime_s": 62.0,
         "requests": 1204, "connections": 2, "in_flight": 1, "rss_bytes": 43_200_000,
         "loop_lag_s": 0.0012},
        {"slot": 2, "pid": 4251, "generation": 3, "state": "booting", "uptime_s": 1.0,
         "requests": 0, "connections": 0},  # numbers the master does not have yet
    ]
    return {"master": base, "workers": workers}


def test_status_text_has_the_master_and_one_row_per_worker() -> None:
    lines = control.format_status(_status()).splitlines()
    assert lines[0] == ("master     pid 4242, generation 3, 2/2 workers ready, up 1m 05s "
                        "(arbiter 0.1.0)")
    assert lines[1] == "state      running"
    assert lines[2] == "listening  http://127.0.0.1:8000, unix:/run/app.sock"
    assert lines[4].split() == ["SLOT", "PID", "GEN", "STATE", "UPTIME", "REQUESTS", "CONNS",
                                "IN-FLIGHT", "RSS", "LOOP", "LAG"]
    assert lines[5].split() == ["1", "4250", "3", "ready", "1m", "02s", "1204", "2", "1",
                                "41.2", "MiB", "1.2", "ms"]
    assert lines[6].split() == ["2", "4251", "3", "booting", "1s", "0", "0", "-", "-", "-"]
    assert len(lines) == 7
    # the columns line up: each header starts where its cells end or begin
    assert lines[4].index("PID") + len("PID") == lines[5].index("4250") + len("4250")


@pytest.mark.parametrize("master, state", [
    ({"reloading": True, "generation": 4}, "reloading to generation 4"),
    ({"stopping": True}, "stopping"),
    ({"stopping": True, "reloading": True}, "stopping"),
])
def test_status_text_says_reloading_or_stopping(master: dict[str, object], state: str) -> None:
    assert control.format_status(_status(**master)).splitlines()[1] == f"state      {state}"


def test_at_target_means_settled_ready_and_current() -> None:
    t = Table(workers=2)
    t.tick()
    assert not t.sup.at_target()  # booting
    for pid in t.pids():
        t.ready(pid)
    assert t.sup.at_target()
    t.run(t.sup.scale(+1, t.now))
    assert not t.sup.at_target()  # the third boots
    t.ready(t.pids()[-1])
    assert t.sup.at_target()
    t.run(t.sup.scale(-2, t.now))
    assert not t.sup.at_target()  # two retiring, still in the table
    retiring = [w.pid for w in t.sup.workers.values() if w.phase.value == "retiring"]
    for pid in retiring:
        t.exit(pid)
    assert t.sup.at_target() and len(t.pids()) == 1
    t.run(t.sup.request_reload(t.now))
    assert not t.sup.at_target()  # the old generation is not current


def test_the_control_socket_is_never_wider_than_0600(tmp_path, monkeypatch) -> None:
    """Created under a umask that masks out everything 0600 lacks, so even before the
    chmod (observed here as it happens) no one else could connect; the umask is restored."""
    import os
    import stat

    from arbiter import sockets

    path = str(tmp_path / "c.sock")
    seen = []
    real_chmod = os.chmod

    def observe(target, mode, *args, **kwargs):
        seen.append(stat.S_IMODE(os.stat(target).st_mode))
        return real_chmod(target, mode, *args, **kwargs)

    old = os.umask(0)  # the most permissive umask a master could inherit
    try:
        monkeypatch.setattr(os, "chmod", observe)
        listener = sockets.open_unix(path, 0o600, 16)
        assert os.umask(0) == 0  # restored
    finally:
        os.umask(old)
    try:
        assert seen == [0o600]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        listener.close(unlink=True)
    assert not os.path.exists(path)
