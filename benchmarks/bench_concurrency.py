"""Benchmark of navai's concurrency layer: the cost of each hop a call can take.

Run from the repository root:

    .venv/bin/python benchmarks/bench_concurrency.py [--calls 3000]

Prints microseconds per call (best of five runs) for: a sync function with a time limit
called from sync code (one hop to a function thread), an async function called from sync
code (one hop to the background loop), a sync function called from async code, an async
function with a time limit awaited from async code, and a mint through ``Navai.handle``
against a loopback fake upstream. This is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from navai_core import Navai, NavaiConfig  # noqa: E402
from navai_core._http import RequestContext  # noqa: E402
from navai_core.functions.dispatch import aexecute, execute, prepare_call  # noqa: E402
from navai_core.functions.registry import FunctionRegistry  # noqa: E402

LIMIT = 30.0


def ping() -> str:
    return "pong"


async def aping() -> str:
    return "pong"


async def asleep0() -> str:
    await asyncio.sleep(0)
    return "pong"


def best(fn: Callable[[], float], repeat: int = 5) -> float:
    return min(fn() for _ in range(repeat))


def timed_sync(call: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    n = parser.parse_args().calls
    registry = FunctionRegistry()
    for fn in (ping, aping, asleep0):
        registry.add(fn)
    context = RequestContext("POST", "/navai/functions/execute", {}, "127.0.0.1")

    def sync_call(name: str, limit: float | None) -> Callable[[], Any]:
        body = {"function_name": name}
        return lambda: execute(prepare_call(registry, body, context), default_timeout=limit)

    rows: list[tuple[str, float]] = []
    for label, name, limit in (
        ("execute sync ping, no limit (inline)", "ping", None),
        ("execute sync ping, 30 s limit (function thread)", "ping", LIMIT),
        ("execute async ping, no limit (background loop)", "aping", None),
        ("execute async ping, 30 s limit (background loop)", "aping", LIMIT),
        ("execute async sleep(0), 30 s limit (background loop)", "asleep0", LIMIT),
    ):
        call = sync_call(name, limit)
        call()
        rows.append((label, best(lambda call=call: timed_sync(call, n))))

    async def run_async(name: str, limit: float | None, count: int) -> float:
        body = {"function_name": name}
        start = time.perf_counter()
        for _ in range(count):
            await aexecute(prepare_call(registry, body, context), default_timeout=limit)
        return (time.perf_counter() - start) / count

    for label, name, limit, count in (
        ("aexecute async ping, 30 s limit", "aping", LIMIT, n * 5),
        ("aexecute async sleep(0), 30 s limit", "asleep0", LIMIT, n * 5),
        ("aexecute sync ping, 30 s limit (function thread)", "ping", LIMIT, n),
    ):
        rows.append(
            (
                label,
                best(
                    lambda name=name, limit=limit, count=count: asyncio.run(
                        run_async(name, limit, count)
                    )
                ),
            )
        )

    fake = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "fake_openai.py"), "--max-seconds", "120"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        base = f"http://127.0.0.1:{int(fake.stdout.readline().split()[1])}/v1"
        navai = Navai(
            NavaiConfig(
                openai_api_key="sk-bench",
                openai_base_url=base,
                rate_limit_client_secret="off",
                functions_enabled=False,
            )
        )
        mint_context = RequestContext(
            "POST", "/navai/realtime/client-secret", {"Content-Type": "application/json"}
        )
        with navai:
            assert navai.handle(mint_context, b"{}").status == 200
            mints = max(n // 3, 200)
            rows.append(
                (
                    "Navai.handle mint (loopback fake upstream)",
                    best(lambda: timed_sync(lambda: navai.handle(mint_context, b"{}"), mints)),
                )
            )
    finally:
        fake.terminate()
        fake.wait(10)

    for label, seconds in rows:
        print(f"{label}: {seconds * 1e6:.1f} us")


if __name__ == "__main__":
    main()
