"""The foundation, black-box: the real `arbiter` command serving real requests."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

import httpx
import psutil
import pytest

from tests.conftest import APPS, REPO, wait_until

pytestmark = pytest.mark.slow


def get(url: str, path: str = "/", **kwargs: object) -> httpx.Response:
    return httpx.get(url + path, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_hello_example_from_the_readme(arbiter_process) -> None:
    server = arbiter_process(["examples.hello:app", "--workers", "2"], cwd=REPO).wait_ready()
    response = get(server.url)
    assert response.status_code == 200
    assert response.text == "Hello, world!\n"
    assert response.headers["server"] == "arbiter"
    assert "date" in response.headers
    assert len(server.worker_pids()) == 2


def test_keep_alive_reuses_one_connection(arbiter_process) -> None:
    server = arbiter_process(["basic:app"]).wait_ready()
    host, port = server.address
    with socket.create_connection((host, port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"Hello, world!" not in data:
                chunk = sock.recv(65536)
                assert chunk, "server closed a keep-alive connection"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")


def test_post_body_and_chunked_request(arbiter_process) -> None:
    server = arbiter_process(["basic:app"]).wait_ready()
    assert httpx.post(server.url + "/echo", content=b"x" * 100_000, timeout=10).content == \
        b"x" * 100_000

    def chunks():
        yield b"hello "
        yield b"world"

    assert httpx.post(server.url + "/echo", content=chunks(), timeout=10).content == \
        b"hello world"


def test_lifespan_state_reaches_requests(arbiter_process) -> None:
    server = arbiter_process(["basic:app"]).wait_ready()
    assert get(server.url, "/state").text == "hello from lifespan"


def test_app_error_before_response_is_a_500(arbiter_process) -> None:
    server = arbiter_process(["basic:app"]).wait_ready()
    assert get(server.url, "/error").status_code == 500
    assert get(server.url).status_code == 200  # the worker survived


def test_custom_worker_class_from_outside_the_package(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--worker-class", "custom_worker:HeaderWorker",
                              "--workers", "2"]).wait_ready()
    response = get(server.url)
    assert response.status_code == 200
    assert response.headers["x-custom-worker"] in ("slot-1", "slot-2")
    assert "custom_worker:HeaderWorker" in server.stderr


@pytest.mark.parametrize("worker_class", ["asyncio", "uvloop"])
def test_builtin_worker_classes(arbiter_process, worker_class: str) -> None:
    server = arbiter_process(["basic:app", "--worker-class", worker_class]).wait_ready()
    assert get(server.url).status_code == 200


def test_import_error_exits_4_and_says_why_once(arbiter_process) -> None:
    server = arbiter_process(["broken_import:app", "--workers", "3"])
    assert server.wait_exit(20) == 4
    assert server.stderr.count("No module named 'this_module_does_not_exist_anywhere'") == 1
    assert server.stderr.count("failed to boot") == 1  # no fork loop


def test_lifespan_startup_failure_exits_3(arbiter_process) -> None:
    server = arbiter_process(["lifespan_fails:app", "--workers", "2"])
    assert server.wait_exit(20) == 3
    assert "database unreachable" in server.stderr


def test_killed_worker_is_replaced(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"]).wait_ready()
    before = server.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: len(server.worker_pids()) == 2 and before[0] not in server.worker_pids(),
               15, message="a replacement worker")
    server.wait_for_log(r"was killed by SIGKILL \(perhaps out of memory\?\)")
    server.wait_for_log(r"is ready", count=3)
    for _ in range(10):
        assert get(server.url).status_code == 200


def test_sigterm_lets_an_in_flight_request_finish(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--graceful-timeout", "10"]).wait_ready()
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", get(server.url,
                                                                        "/slow?s=1.5")))
    thread.start()
    wait_until(lambda: server.worker_pids() and any(
        c.status == "ESTABLISHED" for pid in server.worker_pids()
        for c in psutil.Process(pid).net_connections()), 10, message="request in flight")
    server.signal(signal.SIGTERM)
    thread.join(15)
    assert result["r"].status_code == 200 and result["r"].text == "slow done"
    assert server.wait_exit(15) == 0
    assert "LIFESPAN SHUTDOWN" in server.stdout


def test_process_titles(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"]).wait_ready()
    assert " ".join(psutil.Process(server.pid).cmdline()).startswith(
        "arbiter: master [basic:app]")
    titles = sorted(" ".join(psutil.Process(p).cmdline()) for p in server.worker_pids())
    assert titles[0].startswith("arbiter: worker 1 [basic:app]")
    assert titles[1].startswith("arbiter: worker 2 [basic:app]")


def test_address_in_use_is_reported_without_traceback(arbiter_process) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        server = arbiter_process(["basic:app", "--port", str(port)])
        assert server.wait_exit(10) == 1
        assert f"127.0.0.1:{port}: address already in use" in server.stderr
        assert "Traceback" not in server.stderr
    finally:
        holder.close()


def test_invalid_setting_exits_2_with_one_line(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "many"])
    assert server.wait_exit(10) == 2
    lines = server.stderr.strip().splitlines()
    assert lines == ["arbiter: error: invalid value for --workers: 'many' "
                     "(must be an integer from 1 to 512)"]


def test_unix_socket_bind(arbiter_process, tmp_path) -> None:
    path = tmp_path / "arbiter.sock"
    server = arbiter_process(["basic:app", "--uds", str(path)]).wait_ready()
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport) as client:
        assert client.get("http://localhost/").status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0
    assert not path.exists()


def test_check_config(arbiter_process) -> None:
    ok = arbiter_process(["basic:app", "--check-config"], bind=False)
    assert ok.wait_exit(20) == 0
    bad = arbiter_process(["broken_import:app", "--check-config"], bind=False)
    assert bad.wait_exit(20) == 4
    assert "this_module_does_not_exist_anywhere" in bad.stderr


def test_env_and_config_file(arbiter_process, tmp_path) -> None:
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 2\nbind = ['127.0.0.1:0']\n")
    server = arbiter_process(["basic:app", "-c", str(conf)], bind=False,
                             env={"ARBITER_LOG_LEVEL": "debug"}).wait_ready()
    assert len(server.worker_pids()) == 2
    assert "[DEBUG]" in server.stderr


def test_access_log_line_and_no_access_log(arbiter_process) -> None:
    server = arbiter_process(["basic:app"]).wait_ready()
    get(server.url, "/pid")
    server.wait_for_log(r"GET /pid", stream="stdout")
    quiet = arbiter_process(["basic:app", "--no-access-log"]).wait_ready()
    get(quiet.url, "/pid")
    quiet.signal(signal.SIGTERM)
    quiet.wait_exit(15)
    assert "/pid" not in quiet.stdout


def test_python_api_run(arbiter_process, tmp_path) -> None:
    script = tmp_path / "serve.py"
    script.write_text(
        "import sys, arbiter\n"
        f"sys.path.insert(0, {str(APPS)!r})\n"
        "from basic import app\n"
        "sys.exit(arbiter.run(app, host='127.0.0.1', port=0))\n")
    server = arbiter_process([], command=[sys.executable, str(script)]).wait_ready()
    assert get(server.url).text == "Hello, world!"
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0


def test_python_api_refuses_app_object_with_many_workers() -> None:
    import arbiter
    from arbiter.errors import UsageError

    async def app(scope, receive, send):  # pragma: no cover - never served
        pass

    with pytest.raises(UsageError, match="one worker"):
        arbiter.run(app, workers=2)


def test_fastapi_example(arbiter_process) -> None:
    pytest.importorskip("fastapi")
    server = arbiter_process(["examples.fastapi_app:app"], cwd=REPO).wait_ready()
    assert get(server.url, "/items/7?q=x").json() == {"item_id": 7, "q": "x"}
