"""``navai serve --wsgi``: calls waiting for a function thread never hold every request
thread of waitress, so /health (and every other route) keeps answering while one client has
64 slow sync function calls in flight; every slow call gets an answer (its result, or 503
Busy at once when too many already wait)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from conftest import SERVER_KEY
from fakes import FakeOpenAI
from serve_helpers import serve

from navai_adapters._servers import keep_request_threads
from navai_core.concurrency.threads import FunctionThreads

SLOW_SECONDS = 3.0
CALLS = 64


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=SERVER_KEY) as fake:
        yield fake


@pytest.mark.slow
def test_health_answers_while_slow_sync_calls_fill_the_function_threads(
    tmp_path: Path, fake: FakeOpenAI, functions_dir: Path
) -> None:
    env = {
        "NAVAI_FUNCTIONS_BASE_DIR": str(functions_dir),
        "NAVAI_FUNCTIONS_FOLDERS": "functions",
        "NAVAI_FUNCTION_TIMEOUT": "30",
    }
    process = serve(tmp_path, fake, "--wsgi", env=env)
    try:
        url = process.wait_ready()
        body = {"function_name": "slow", "payload": {"seconds": SLOW_SECONDS}}

        def slow_call(_: int) -> int:
            reply = httpx2.post(f"{url}/navai/functions/execute", json=body, timeout=60)
            return reply.status_code

        with ThreadPoolExecutor(CALLS) as pool:
            answers = [pool.submit(slow_call, n) for n in range(CALLS)]
            time.sleep(1.0)  # (every call sent: the function threads are full)
            waits = []
            for _ in range(5):
                started = time.monotonic()
                health = httpx2.get(f"{url}/health", timeout=30)
                waits.append(time.monotonic() - started)
                assert health.status_code == 200
                time.sleep(0.2)
            statuses = sorted(a.result(timeout=120) for a in answers)
    finally:
        process.stop()
    assert max(waits) < 1.0, f"/health took {max(waits):.2f} s; answers {statuses}"
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 20, statuses  # one function's share ran


@pytest.mark.parametrize(
    ("request_threads", "running", "share", "waiting"),
    [(64, 40, 20, 16), (200, 40, 20, 135), (16, 12, 6, 0), (8, 4, 2, 0), (1, 1, 1, 0)],
)
def test_the_function_budget_leaves_request_threads_free(
    request_threads: int, running: int, share: int, waiting: int
) -> None:
    """Running plus waiting function calls never take the last eighth (at least 4) of the
    request threads."""
    functions = FunctionThreads(40)
    keep_request_threads(functions, request_threads)
    assert (functions.max_threads, functions.per_function) == (running, share)
    assert functions.max_waiting == waiting
    if request_threads >= 8:
        assert request_threads - running - waiting >= max(4, request_threads // 8)
