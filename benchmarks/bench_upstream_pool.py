"""Does an HTTP client's pool keep one warm connection per concurrent request?

    python benchmarks/bench_upstream_pool.py httpx2 [plain|lanes]
    python benchmarks/bench_upstream_pool.py httpx             # in an environment with httpx

64 concurrent workers post to ``fake_openai.py`` (0 ms, then 50 ms added latency) after 20
warm-up requests; prints requests per second and the TCP connections the fake accepted and
used. ``lanes`` uses navai's connection-lanes transport. A measurement script,
not a test; figures in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONCURRENCY = 64


def main() -> None:
    library = sys.argv[1] if len(sys.argv) > 1 else "httpx2"
    mode = sys.argv[2] if len(sys.argv) > 2 else "plain"
    http: Any = importlib.import_module(library)
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

    async def run(total: int, delay_ms: int) -> None:
        transport = None
        if mode == "lanes":
            sys.path.insert(0, str(HERE.parent))
            from navai_core._upstream import AsyncLaneTransport

            transport = AsyncLaneTransport()
        async with http.AsyncClient(transport=transport) as client:
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
        stats = control("/__stats")
        print(
            f"{library} {mode} c={CONCURRENCY} upstream {delay_ms} ms: "
            f"{total / seconds:.0f} req/s, "
            f"connections accepted {stats['accepted']}, used {stats['used']}, "
            f"requests {stats['requests']}"
        )

    try:
        asyncio.run(run(3000, 0))
        asyncio.run(run(1500, 50))
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
