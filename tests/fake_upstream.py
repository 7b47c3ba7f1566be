"""A small recording fake of OpenAI's HTTP API on 127.0.0.1, for end-to-end tests.

It runs a stdlib ``ThreadingHTTPServer`` in a daemon thread, records every request it
receives (method, path, headers, body) and answers with a settable behaviour: status, body,
headers, a delay before answering (a hang), a body trickled byte by byte, or a dropped
connection. Behaviours can be queued one per request (``answer``) or set for every request
(``behave`` or ``default``). The default answer to ``POST /v1/realtime/client_secrets`` is a
reply that validates against OpenAI's schema. Delays and trickles end at ``stop()``, which
returns at once (a 10 ms poll).

    with FakeUpstream() as fake:
        config = NavaiConfig(openai_base_url=fake.base_url, ...)
        fake.behave(status=500, body=b'{"error": "boom"}')
        ...
        assert fake.requests[-1].json()["session"]["model"] == "gpt-realtime-2.1"
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

SECRET_PREFIX = "ek_fake_"
EXPIRES_AT = 1_900_000_000


def default_reply(request_body: Mapping[str, Any], number: int) -> dict[str, Any]:
    """OpenAI's success reply: the secret plus an echo of the session that was asked for."""
    session = dict(request_body.get("session") or {"type": "realtime"})
    session.setdefault("type", "realtime")
    if session["type"] == "realtime":
        session.setdefault("object", "realtime.session")
    session.setdefault("id", f"sess_fake_{number}")
    return {"value": f"{SECRET_PREFIX}{number}", "expires_at": EXPIRES_AT, "session": session}


@dataclass(frozen=True)
class Recorded:
    """One request the fake received. Header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    """How to answer one request. ``body`` None means the default success reply."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    trickle: float = 0.0  # seconds between body bytes
    drop: bool = False  # close the connection without answering
    content_type: str | None = "application/json"  # None: no Content-Type header

    @classmethod
    def json(cls, status: int, data: object, **kw: Any) -> Behaviour:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return cls(status, json.dumps(data).encode(), headers, **kw)


Answer = Behaviour  # what the fault tests call one scripted answer


class FakeUpstream:
    """A recording fake OpenAI on a free loopback port. Thread-safe; use as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._queue: deque[Behaviour] = deque()
        self._default = Behaviour()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What ``OPENAI_BASE_URL`` should be set to."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ----- control -----------------------------------------------------------------

    def behave(
        self,
        status: int = 200,
        body: bytes | str | Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        times: int | None = None,
    ) -> None:
        """Answer the next ``times`` requests this way (every request when ``times`` is None)."""
        behaviour = Behaviour(status, _encode(body), dict(headers or {}), delay)
        with self._lock:
            if times is None:
                self._queue.clear()
                self._default = behaviour
            else:
                self._queue.extend([behaviour] * times)

    def answer(self, *behaviours: Behaviour) -> None:
        """Answer the next requests with ``behaviours``, one each, in order."""
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def default(self) -> Behaviour:
        return self._default

    @default.setter
    def default(self, behaviour: Behaviour) -> None:
        """How every request past the queued answers is answered."""
        with self._lock:
            self._default = behaviour

    def reset(self) -> None:
        """Forget every recorded request and go back to the default success reply."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._default = Behaviour()

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    received = requests

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """The recorded requests once there are at least ``count`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests
            if len(found) >= count:
                return found
            time.sleep(0.01)
        raise AssertionError(f"expected {count} upstream requests, got {len(self.requests)}")

    # ----- lifecycle ---------------------------------------------------------------

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----- serving -----------------------------------------------------------------

    def respond(self, recorded: Recorded) -> Behaviour | None:
        """An answer decided by the request itself, before the queue (a subclass's own rule,
        such as a wrong key); None: the queued or default behaviour."""
        return None

    def _answer(self, recorded: Recorded) -> tuple[Behaviour, int]:
        with self._lock:
            self._requests.append(recorded)
            number = len(self._requests)
            behaviour = self.respond(recorded)
            if behaviour is None:
                behaviour = self._queue.popleft() if self._queue else self._default
        return behaviour, number

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                behaviour, number = fake._answer(recorded)
                if behaviour.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if behaviour.delay and fake._stopping.wait(behaviour.delay):
                    return
                content = behaviour.body
                if content is None:
                    try:
                        request_json = json.loads(body) if body else {}
                    except ValueError:
                        request_json = {}
                    if not isinstance(request_json, dict):
                        request_json = {}
                    content = json.dumps(default_reply(request_json, number)).encode()
                try:
                    self.send_response(behaviour.status)
                    kind = behaviour.content_type
                    headers = {**({"Content-Type": kind} if kind else {}), **behaviour.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if not behaviour.trickle:
                        self.wfile.write(content)
                        return
                    for i in range(len(content)):
                        self.wfile.write(content[i : i + 1])
                        self.wfile.flush()
                        if fake._stopping.wait(behaviour.trickle):
                            return
                except OSError:
                    pass  # the client gave up (a timeout test): nothing left to answer

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def refused_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def elapsed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


def _encode(body: bytes | str | Mapping[str, Any] | None) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()
