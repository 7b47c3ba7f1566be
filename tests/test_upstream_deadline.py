"""The upstream deadline holds while the reply's headers trickle in, sync and async alike
(Navai.handle, Navai.ahandle, the WSGI and the ASGI adapter)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
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


def test_a_trickling_proxy_of_the_environment_is_cut_off_at_the_deadline(
    mint,  # noqa: F811
    trickling,
    monkeypatch,
):
    # The proxies of the environment get the deadline too (sync: a proxy transport of its own).
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", trickling.base_url.removesuffix("/v1"))
    # A host only the proxy can reach (.invalid never resolves).
    status, body, took = mint(
        "http://api.openai.invalid/v1", upstream_max_retries=0, upstream_timeout_seconds=CUT_OFF
    )
    assert (status, body) == (504, {"error": "OpenAI client_secrets timed out."})
    assert took < CUT_OFF + SLACK


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connect to it hangs (SYN dropped)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for filler in fillers:
        filler.close()
    server.close()


def test_a_host_of_several_silent_addresses_is_cut_off_at_the_deadline(
    mint,  # noqa: F811
    silent_port,
    monkeypatch,
):
    # socket.create_connection gives each address of a name the whole timeout it is given;
    # the deadline is the whole attempt's, however many addresses the name has.
    real = socket.getaddrinfo

    def three_addresses(host, port, *args, **kwargs):
        if host in ("several.invalid", b"several.invalid"):
            return real("127.0.0.1", silent_port, *args, **kwargs) * 3
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", three_addresses)
    status, body, took = mint(
        f"http://several.invalid:{silent_port}/v1",
        upstream_max_retries=0,
        upstream_timeout_seconds=CUT_OFF,
    )
    assert (status, body) == (504, {"error": "OpenAI client_secrets timed out."})
    assert took < CUT_OFF + SLACK


def test_the_httpx2_hooks_the_sync_deadline_relies_on():
    # httpx2 has no public way to give a Client's transports (its proxy ones included) a
    # network backend; navai's DeadlineClient overrides these two builders and fills
    # HTTPTransport's pool itself. If httpx2 changes them, this says where.
    import inspect

    import httpx2

    from navai_core.upstream.send import DeadlineClient, _DeadlineTransport

    for hook in ("_init_transport", "_init_proxy_transport"):
        ours = inspect.signature(getattr(DeadlineClient, hook)).parameters
        theirs = inspect.signature(getattr(httpx2.Client, hook)).parameters
        assert list(ours) == list(theirs), hook
    assert set(vars(httpx2.HTTPTransport())) == {"_pool"}
    with DeadlineClient() as client:
        assert set(vars(client._transport)) == {"_pool"}
        assert isinstance(client._transport, _DeadlineTransport)
