"""The HTTP benchmark's smoke mode: every server starts, every route answers, one table.

It runs ``benchmarks/run.py --smoke`` (the asyncio load generator) with 0.1 s measures after
0.05 s of warm-up (every connection still completes at least one request) and checks that
the table has every row and that no request failed. The figures of a smoke run mean nothing
and the targets are not checked here: see docs/performance.md for a full run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"

pytest.importorskip("waitress")
pytest.importorskip("uvicorn")

ROUTES = [
    "client-secret (c=1, upstream 0 ms)",
    "client-secret (c=32, upstream 0 ms)",
    "client-secret (c=32, upstream 20 ms)",
    "client-secret (c=64, upstream 50 ms)",
    "execute sync add (c=32)",
    "execute async (c=32)",
    "list functions (c=32)",
]
STACKS = ("navai serve", "navai serve --wsgi")
SHORT = ("--duration", "0.1", "--warmup", "0.05")  # seconds per measure and warm-up


def test_smoke_run_prints_every_row_and_no_request_fails(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", *SHORT, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The smoke mode leaves the Node backend out (no npm, no network) and says so.
    assert "the Node backend is not measured (off)" in done.stdout
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2 * len(ROUTES)  # header + one row per route and server
    for route in ROUTES:
        for stack in STACKS:
            assert any(row.startswith(f"| {route} | {stack} |") for row in table), (route, stack)
    assert "discovery of " in done.stdout

    data = json.loads(out.read_text())
    assert {(row["label"], row["stack"]) for row in data["rows"]} == {
        (route, stack) for route in ROUTES for stack in ("asgi", "wsgi")
    }
    for row in data["rows"]:
        assert row["node"] is None
        for app in ("navai", "bare"):
            measure = row[app]
            assert measure["errors"] == 0, row
            assert measure["requests"] > 0, row
        if row["scenario"]["route"] == "client-secret":
            # The fake upstream saw the mints, over kept-alive connections.
            assert row["navai"]["upstream"]["requests"] > 0, row
            assert row["navai"]["upstream"]["used"] <= row["navai"]["upstream"]["requests"]


# ----- the upstream pool of the clients navai creates (navai_core.upstream.send) ----------------


@pytest.fixture
def fake_upstream():
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "fake_openai.py"), "--max-seconds", "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}"
    finally:
        proc.terminate()
        proc.wait(10)


def _stats(base: str) -> dict[str, int]:
    import httpx2

    return dict(httpx2.get(f"{base}/__stats").json())


def test_navai_sync_client_keeps_one_connection_per_concurrent_request(
    fake_upstream: str,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from navai_core.upstream.send import new_client

    with new_client(5.0) as client:
        for _ in range(10):
            assert client.post(f"{fake_upstream}/v1/x", content=b"{}").status_code == 200
        assert _stats(fake_upstream)["used"] == 1  # sequential: one warm connection
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(lambda _: client.post(f"{fake_upstream}/v1/x").status_code, range(80))
            )
    assert codes == [200] * 80
    stats = _stats(fake_upstream)
    assert stats["requests"] == 90
    assert stats["used"] <= 8  # never more connections than concurrent requests


def test_navai_async_client_reuses_and_bounds_connections(fake_upstream: str) -> None:
    import asyncio

    from navai_core.upstream.send import new_async_client

    async def main() -> list[int]:
        async with new_async_client(5.0) as client:
            for _ in range(5):
                await client.post(f"{fake_upstream}/v1/x", content=b"{}")

            async def one() -> int:
                return (await client.post(f"{fake_upstream}/v1/x", content=b"{}")).status_code

            codes = []
            for _ in range(3):  # three bursts of 16: the second and third reuse the first's
                codes += await asyncio.gather(*(one() for _ in range(16)))
            return codes

    assert asyncio.run(main()) == [200] * 48
    stats = _stats(fake_upstream)
    assert stats["requests"] == 53
    assert stats["used"] <= 16
