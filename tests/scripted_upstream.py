"""A scripted fake upstream on 127.0.0.1: each request gets the next scripted answer.

Used by the fault tests: an answer can be a status with a body and headers, a delay
before answering (a hang), a reply trickled byte by byte, or a dropped connection.
Every request received is recorded. The server runs in a thread and stops on ``close()``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    trickle: float = 0.0  # seconds between body bytes
    drop: bool = False  # close the connection without answering

    @classmethod
    def json(cls, status: int, data: object, **kw) -> Answer:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return cls(status, json.dumps(data).encode(), headers, **kw)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script: deque[Answer] = deque()
        self.default = Answer.json(200, {"value": "ek_default", "expires_at": 1})
        self.received: list[Received] = []
        self._stop = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                upstream.received.append(
                    Received("POST", self.path, dict(self.headers.items()), body)
                )
                answer = upstream.script.popleft() if upstream.script else upstream.default
                if answer.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if answer.delay and upstream._stop.wait(answer.delay):
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                try:
                    if answer.trickle:
                        for i in range(len(answer.body)):
                            self.wfile.write(answer.body[i : i + 1])
                            self.wfile.flush()
                            if upstream._stop.wait(answer.trickle):
                                return
                    else:
                        self.wfile.write(answer.body)
                except OSError:
                    pass  # the client gave up, as it should

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def answer(self, *answers: Answer) -> None:
        self.script.extend(answers)

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def refused_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def elapsed(fn, *args):
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start
