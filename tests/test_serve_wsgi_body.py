"""``navai serve --wsgi``: waitress reads a request's whole body before navai runs, so an
authorisation hook answers only once the body is in (docs/security.md says so). What bounds
that cost, tested here on a real server with a deny-all hook: a declared body over the limit is
refused unread, a chunked body is cut off at the limit (never read to its end), and a denied
body under the limit is read once, then answered 403. (The body deadline: test_serve_limits.)"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest
from conftest import SERVER_KEY, NavaiProcess
from fakes import FakeOpenAI
from serve_helpers import serve

pytestmark = pytest.mark.slow

LIMIT = 1024 * 1024  # NAVAI_MAX_BODY_BYTES's default
DENY_ALL = """
from navai_core import Navai, NavaiConfig

def deny(context):
    return False

navai = Navai(NavaiConfig.from_env(authorize_functions=deny, authorize_client_secret=deny))
"""
HEAD = b"POST /navai/functions/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NavaiProcess]:
    tmp_path = tmp_path_factory.mktemp("wsgi-body")
    with FakeOpenAI(key=SERVER_KEY) as fake:
        (tmp_path / "navai").mkdir()
        (tmp_path / "navai" / "deny_app.py").write_text(DENY_ALL)
        process = serve(tmp_path, fake, "--wsgi", "--app", "deny_app:navai")
        process.wait_ready()
        yield process
        process.stop()


def connect(process: NavaiProcess) -> socket.socket:
    port = int((process.url or "").rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def answered(sock: socket.socket, within: float = 0.0) -> bool:
    return bool(select.select([sock], [], [], within)[0])


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_denied_body_is_answered_once_it_is_in(server: NavaiProcess) -> None:
    body = b'{"function_name": "add", "payload": {"pad": "' + b"x" * 500_000 + b'"}}'
    with connect(server) as sock:
        sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body[: len(body) // 2])
        # Under waitress the hook has not run yet: it waits for the rest of the body.
        assert not answered(sock, within=0.5)
        sock.sendall(body[len(body) // 2 :])
        started = time.monotonic()
        answer = read_answer(sock)
        assert time.monotonic() - started < 2
    assert answer.startswith(b"HTTP/1.1 403"), answer


def test_a_declared_body_over_the_limit_is_refused_before_the_hook(
    server: NavaiProcess,
) -> None:
    with connect(server) as sock:
        sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % (LIMIT + 1))
        started = time.monotonic()
        answer = read_answer(sock)
        assert time.monotonic() - started < 2
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_a_chunked_body_is_cut_off_at_the_limit(server: NavaiProcess) -> None:
    """A body without a length is refused once past the limit, and the connection closed: a
    client that would send 16 MiB is stopped early (what it sent past the limit sat in the
    kernel's socket buffers, several MiB on loopback; waitress keeps none of it)."""
    chunk = b"x" * 65536
    sent = 0
    with connect(server) as sock:
        sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        while sent < 16 * LIMIT and not answered(sock):
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # (the server closed the connection after its answer)
                break
            sent += len(chunk)
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert sent < 16 * LIMIT, sent
        # Then the server lets go of the connection (EOF or a reset), reading no more.
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
