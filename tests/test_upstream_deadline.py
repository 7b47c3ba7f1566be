"""The upstream deadline holds while the reply's headers trickle in, sync and async alike
(Navai.handle, Navai.ahandle, the WSGI and the ASGI adapter)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.test_core_upstream_faults import CUT_OFF, SLACK, mint  # noqa: F401  (fixture)


class TricklingUpstream:
    """Answers every request with a status line, then one header byte every ``pause``
    seconds, for ever (each byte resets a per-read timeout)."""

    def __init__(self, pause: float = 0.1) -> None:
        self.pause = pause
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.base_url = f"http://127.0.0.1:{self._server.getsockname()[1]}/v1"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                header = b"X-Slow: " + b"a" * 200  # 20 s in all: bounded even when it fails
                for i in range(len(header)):
                    if self._stop.wait(self.pause):
                        return
                    connection.sendall(header[i : i + 1])
            except OSError:
                return  # the client gave up, as it should

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()


@pytest.fixture
def trickling() -> Iterator[TricklingUpstream]:
    upstream = TricklingUpstream()
    yield upstream
    upstream.close()


def test_trickling_headers_are_cut_off_at_the_deadline(mint, trickling):  # noqa: F811
    status, body, took = mint(
        trickling.base_url, upstream_max_retries=0, upstream_timeout_seconds=CUT_OFF
    )
    assert (status, body) == (504, {"error": "OpenAI client_secrets timed out."})
    assert took < CUT_OFF + SLACK
