"""CPU a request costs in the whole ASGI stack, in process (no network, no load generator).

    .venv/bin/python benchmarks/bench_asgi_stack.py            # sync and async execute
    .venv/bin/python benchmarks/bench_asgi_stack.py async
    PYTHONPATH=../before .venv/bin/python benchmarks/bench_asgi_stack.py   # another checkout

Calls ``create_app(navai)`` directly on uvloop, 32 execute requests at a time, 11 rounds of
1,920 requests after a warm-up, and prints the fastest and the median round's time per
request. The thread hop of a sync function makes its figure noisier than the async one's.
Less noisy than a wrk run on a 2-core machine for telling two versions apart.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from typing import Any

import uvloop

from navai_adapters.asgi import create_app
from navai_core import Navai, NavaiConfig

BODIES = {
    "sync": b'{"function_name":"add","payload":{"a":1,"b":2}}',
    "async": b'{"function_name":"aping","payload":{}}',
}
CONCURRENT, ROUNDS, BATCHES = 32, 11, 60


def make_app() -> Any:
    os.environ.update(OPENAI_API_KEY="sk-bench-not-a-real-key", NAVAI_RATE_LIMIT_FUNCTIONS="off")
    navai = Navai(NavaiConfig.from_env())
    registry = navai.functions()

    @registry.function
    def add(a: int, b: int) -> int:
        return a + b

    @registry.function
    async def aping() -> str:
        return "pong"

    return create_app(navai)


async def request(app: Any, body: bytes) -> None:
    path = "/navai/functions/execute"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise SystemExit(f"unexpected answer: {sent}")


async def main(names: list[str]) -> None:
    app = make_app()
    for name in names:
        body = BODIES[name]

        async def batch(body: bytes = body) -> None:
            await asyncio.gather(*(request(app, body) for _ in range(CONCURRENT)))

        for _ in range(30):
            await batch()
        rounds = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(BATCHES):
                await batch()
            rounds.append((time.perf_counter() - started) / (BATCHES * CONCURRENT) * 1e6)
        print(
            f"execute {name}: fastest {min(rounds):.1f} us, "
            f"median {statistics.median(rounds):.1f} us a request"
        )


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1:] or ["sync", "async"]))
