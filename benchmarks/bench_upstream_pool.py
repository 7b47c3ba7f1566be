"""Does an HTTP client's pool keep one warm connection per concurrent request?

    python benchmarks/bench_upstream_pool.py [navai|plain|navai-sync] [library]

64 concurrent workers post to ``fake_openai.py`` (0 ms, then 50 ms added latency) after 20
warm-up requests; prints requests per second and the TCP connections the fake accepted and
used. ``navai``: the async client as navai creates it (``navai_core.upstream.send``, its pool
limits); ``plain``: ``AsyncClient()`` of ``library`` (httpx2 by default; ``httpx`` in an
environment that has it, for comparison); ``navai-sync``: navai's sync client shared by 64
threads. A measurement script, not a test; figures in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONCURRENCY = 64


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "navai"
    library = sys.argv[2] if len(sys.argv) > 2 else "httpx2"
    http: Any = importlib.import_module(library)
    sys.path.insert(0, str(HERE.parent))
    from navai_core.upstream.send import new_async_client, new_client
    fake = subprocess.Popen(
        [sys.executable, str(HERE / "fake_openai.py"), "--max-seconds", "120"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    base = f"http://127.0.0.1:{int(fake.stdout.readline().split()[1])}"

    def control(path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(base + path, method=method)
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read() or b"null")

    def report(total: int, delay_ms: int, seconds: float) -> None:
        stats = control("/__stats")
        print(
            f"{library} {mode} c={CONCURRENCY} upstream {delay_ms} ms: "
            f"{total / seconds:.0f} req/s, "
            f"connections accepted {stats['accepted']}, used {stats['used']}, "
            f"requests {stats['requests']}"
        )

    def run_threads(total: int, delay_ms: int) -> None:
        with new_client(15.0) as client:
            for _ in range(20):
                client.post(f"{base}/v1/x", content=b"{}")
            control(f"/__reset?delay_ms={delay_ms}", "POST")

            def one(_: int) -> int:
                return int(client.post(f"{base}/v1/x", content=b"{}").status_code)

            started = time.perf_counter()
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                assert set(pool.map(one, range(total))) == {200}
            seconds = time.perf_counter() - started
        report(total, delay_ms, seconds)

    async def run(total: int, delay_ms: int) -> None:
        if mode == "navai-sync":
            return await asyncio.to_thread(run_threads, total, delay_ms)
        client = new_async_client(15.0) if mode == "navai" else http.AsyncClient()
        async with client:
            for _ in range(20):
                await client.post(f"{base}/v1/x", content=b"{}")
            control(f"/__reset?delay_ms={delay_ms}", "POST")
            left = total

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    response = await client.post(f"{base}/v1/x", content=b"{}")
                    assert response.status_code == 200

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            seconds = time.perf_counter() - started
        report(total, delay_ms, seconds)

    try:
        asyncio.run(run(3000, 0))
        asyncio.run(run(1500, 50))
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
