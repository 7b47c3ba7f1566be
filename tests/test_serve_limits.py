"""``navai serve`` (ASGI and --wsgi) under hostile clients: idle and trickling connections,
slow functions holding threads, a tight file limit, oversized declared bodies, and forwarded
headers. Real servers on loopback; every load is bounded in count and time."""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from conftest import NAVAI_BIN, NavaiProcess, Targets, hermetic_env, start_server

KINDS = ("asgi-server", "wsgi-server")


@pytest.fixture
def serve(targets: Targets, tmp_path: Path) -> Iterator[object]:
    """Start ``navai serve`` of the main setup with extra arguments/environment."""
    started: list[NavaiProcess] = []

    def start(kind: str, *args: str, env: dict[str, str] | None = None) -> NavaiProcess:
        setup = targets.setups["main"]
        setup = dataclasses.replace(
            setup, name=f"limits{len(started)}", env={**setup.env, **(env or {})}
        )
        process = start_server(setup, kind == "wsgi-server", tmp_path, tuple(args))
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


def _port(process: NavaiProcess) -> int:
    assert process.url is not None
    return int(process.url.rsplit(":", 1)[1])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def _health_times(url: str, count: int = 5) -> list[float]:
    """Seconds each of ``count`` fresh GET /health took (each on a new connection)."""
    times = []
    for _ in range(count):
        start = time.monotonic()
        with httpx2.Client(timeout=5) as client:
            assert client.get(f"{url}/health").status_code == 200
            assert client.get(f"{url}/navai/functions").status_code == 200
        times.append(time.monotonic() - start)
    return times


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server let go of ``sock`` (EOF, a reset or a last answer) in time."""
    sock.settimeout(within)
    try:
        sock.recv(1024)
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


@pytest.mark.parametrize("kind", KINDS)
def test_idle_and_trickling_connections_do_not_lock_clients_out(serve, kind: str):
    """More idle and trickling connections than the cap: new clients still get answers."""
    process = serve(kind, "--max-connections", "40")
    port = _port(process)
    hostile = [_connect(port) for _ in range(60)]  # idle: connected, nothing sent
    trickling = [_connect(port) for _ in range(20)]
    try:
        for sock in trickling:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        for step in range(3):  # one header line at a time keeps them "active"
            for sock in trickling:
                with contextlib.suppress(OSError):  # closed by the server: fine
                    sock.sendall(f"X-Slow-{step}: 1\r\n".encode())
            assert max(_health_times(process.url or "", 2)) < 2.0
        assert max(_health_times(process.url or "")) < 2.0
    finally:
        for sock in hostile + trickling:
            sock.close()
    err = process.stderr()
    assert "Traceback" not in err
    assert err.count("open connections (the cap)") <= 1  # said once, not per connection


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_head_or_body_that_never_ends_is_cut_off(serve, kind: str):
    process = serve(kind, "--head-timeout", "1")
    port = _port(process)
    idle, trickle, body = _connect(port), _connect(port), _connect(port)
    try:
        trickle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        body.sendall(
            b"POST /navai/functions/execute HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        start = time.monotonic()
        for _ in range(8):  # a byte every 0.25 s: the deadline counts from the first byte
            time.sleep(0.25)
            try:
                trickle.sendall(b"X")
            except OSError:
                break
        # The head deadline (1 s) closed the idle and trickling ones; well before 5 s.
        assert _closed_by_server(idle, within=4.0)
        assert _closed_by_server(trickle, within=4.0)
        assert time.monotonic() - start < 6
        # The body deadline is longer (the head arrived): still open after the head's.
        assert not _closed_by_server(body, within=0.2)
        assert max(_health_times(process.url or "", 2)) < 2.0
    finally:
        for sock in (idle, trickle, body):
            sock.close()


@pytest.mark.parametrize("kind", KINDS)
def test_slow_functions_do_not_stall_health_or_cheap_routes(serve, kind: str):
    """Eight slow sync calls at once (waitress's old default had 4 threads)."""
    process = serve(kind)
    url = process.url or ""

    def slow() -> int:
        payload = {"function_name": "slow", "payload": {"seconds": 3}}
        return httpx2.post(f"{url}/navai/functions/execute", json=payload, timeout=15).status_code

    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(slow) for _ in range(8)]
        time.sleep(0.8)  # they are running now
        assert not any(call.done() for call in calls)
        assert max(_health_times(url, 3)) < 1.5
        assert [call.result() for call in calls] == [200] * 8


def _limited_files(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return preexec


@pytest.mark.parametrize("kind", KINDS)
def test_more_connections_than_the_file_limit_allows(targets: Targets, tmp_path: Path, kind: str):
    """Under a 256-file limit, 400 idle sockets: no "Too many open files" flood, /health
    answers, and the log stays small."""
    setup = targets.setups["main"]
    env = hermetic_env({**setup.env, **setup.dotenv})
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        args = [str(NAVAI_BIN), "serve", "--port", "0", *(["--wsgi"] if "wsgi" in kind else [])]
        proc = subprocess.Popen(
            args,
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=_limited_files(256),
        )
        try:
            deadline = time.monotonic() + 30
            while "serving on" not in out.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err.read_text()
                time.sleep(0.05)
            url = out.read_text().split("serving on ", 1)[1].split()[0]
            port = int(url.rsplit(":", 1)[1])
            for _ in range(100):
                try:
                    if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx2.TransportError:
                    time.sleep(0.1)
            sockets = []
            try:
                for _ in range(400):
                    sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                time.sleep(0.5)
                assert max(_health_times(url, 3)) < 2.0
            finally:
                for sock in sockets:
                    sock.close()
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(15)
    log = err.read_text()
    assert "Too many open files" not in log
    assert "Traceback" not in log
    assert len(log) < 10_000


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(serve):
    """waitress refuses a Content-Length over navai's limit at once (413), without reading
    or spooling the body to a temporary file."""
    process = serve("wsgi-server")
    with _connect(_port(process)) as sock:
        sock.sendall(
            b"POST /navai/functions/execute HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n{}"
        )
        start = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):  # the server closes after a refusal
            answer += chunk
        assert time.monotonic() - start < 3
    assert answer.startswith(b"HTTP/1.1 413"), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head
    assert body == b'{"error":"Request body is larger than 1048576 bytes."}'


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("trusted", [False, True], ids=["default", "trusted"])
def test_forwarded_for_is_trusted_only_when_told(serve, kind: str, trusted: bool):
    """Per-client rate limits: from loopback, X-Forwarded-For changes the client only with
    --forwarded-allow-ips (uvicorn alone trusts it from 127.0.0.1 by default)."""
    args = ("--forwarded-allow-ips", "127.0.0.1") if trusted else ()
    process = serve(kind, *args, env={"NAVAI_RATE_LIMIT_FUNCTIONS": "2/minute"})
    url = f"{process.url}/navai/functions/execute"
    body = {"function_name": "add", "payload": {"a": 1, "b": 2}}
    codes = [
        httpx2.post(url, json=body, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(4)
    ]
    assert codes == ([200] * 4 if trusted else [200, 200, 429, 429])


def test_forwarded_ips_come_from_the_environment_too(serve):
    process = serve(
        "asgi-server",
        env={"NAVAI_RATE_LIMIT_FUNCTIONS": "1/minute", "NAVAI_FORWARDED_ALLOW_IPS": "*"},
    )
    url = f"{process.url}/navai/functions/execute"
    body = {"function_name": "add", "payload": {"a": 1, "b": 2}}
    codes = [
        httpx2.post(url, json=body, headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 200]
