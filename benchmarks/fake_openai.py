"""A fake OpenAI upstream for the benchmark: fast, loopback only, with a fixed added latency.

    python benchmarks/fake_openai.py --port 0 [--delay-ms 0]

Prints ``PORT <n>`` on stdout once it listens on 127.0.0.1, then answers every request
(keep-alive HTTP/1.1) with a fixed client-secret reply after ``delay`` milliseconds, and
counts the TCP connections it accepted. Control routes, for the benchmark driver:

- ``GET /__stats``: ``{"accepted", "used", "requests", "open"}`` since the last reset: TCP
  connections accepted, distinct connections that carried at least one request, requests
  answered, and connections open now;
- ``POST /__reset?delay_ms=N``: start a new count and set the added latency.

It is a raw ``asyncio.Protocol`` (no web framework) so that it costs far less per request
than any server under test: the tests' fake (``tests/fakes``, uvicorn and a route table)
costs about as much per request as navai itself and would share the two cores with it. Its
reply is built by the tests' fake's own shapes (``tests/fakes/shapes.py``). It stops by itself
after ``--max-seconds`` (default 900).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.shapes import client_secret_reply

REPLY_BODY = json.dumps(
    client_secret_reply({"session": {"type": "realtime", "model": "gpt-realtime-2.1"}}, 1),
    separators=(",", ":"),
).encode()


def _response(body: bytes, status: str = "200 OK") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


REPLY = _response(REPLY_BODY)


class Stats:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.epoch = 0
        self.accepted = 0
        self.used = 0
        self.requests = 0
        self.open = 0


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.epoch = -1
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.accepted += 1
        self.stats.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(head.split(b" ", 2))

    def answer(self, request_line: list[bytes]) -> None:
        target = request_line[1].decode("latin-1") if len(request_line) > 1 else "/"
        path, _, query = target.partition("?")
        if path == "/__stats":
            s = self.stats
            body = json.dumps(
                {"accepted": s.accepted, "used": s.used, "requests": s.requests, "open": s.open}
            ).encode()
            self.write(_response(body))
        elif path == "/__reset":
            delay = parse_qs(query).get("delay_ms", [None])[0]
            if delay is not None:
                self.stats.delay = float(delay) / 1000
            s = self.stats
            s.epoch += 1
            s.accepted = s.used = s.requests = 0
            self.write(_response(b"{}"))
        else:
            s = self.stats
            s.requests += 1
            if self.epoch != s.epoch:
                self.epoch = s.epoch
                s.used += 1
            if s.delay > 0:
                self.loop.call_later(s.delay, self.write, REPLY)
            else:
                self.write(REPLY)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def serve(port: int, delay_ms: float, max_seconds: float) -> None:
    stats = Stats(delay_ms / 1000)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(stats), "127.0.0.1", port, backlog=2048
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await asyncio.sleep(max_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.delay_ms, args.max_seconds))
    sys.exit(0)


if __name__ == "__main__":
    main()
