"""The caller gets its 504 at the time limit whatever an async function does, even when it
swallows the cancellation (both adapters, both tails)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from test_adapters_common import Make, make  # noqa: F401  (the both-adapters fixture)

from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext
from navai_core.functions.dispatch import aexecute, execute, prepare_call

CONTEXT = RequestContext("POST", "/navai/functions/execute", {}, "127.0.0.1")
LIMIT = 0.3
RUNS_FOR = 1.0  # what the stubborn function takes: well past LIMIT + 0.4, the latest answer


def stubborn_registry(finished: threading.Event) -> FunctionRegistry:
    registry = FunctionRegistry()

    @registry.function
    async def stubborn() -> str:
        """Swallows every cancellation and goes on for RUNS_FOR seconds."""
        end = time.monotonic() + RUNS_FOR
        while time.monotonic() < end:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:  # swallowed on purpose
                continue
        finished.set()
        return "finished late"

    return registry


def test_a_function_that_swallows_cancellation_answers_504_at_the_limit_over_http(
    make: Make,  # noqa: F811
    tmp_path,
):
    finished = threading.Event()
    config = NavaiConfig(
        functions_base_dir=str(tmp_path),
        functions_folders="none",
        function_timeout_seconds=LIMIT,
        rate_limit_functions="off",
    )
    client = make(Navai(config, functions=stubborn_registry(finished)))
    started = time.monotonic()
    response = client.post("/navai/functions/execute", json={"function_name": "stubborn"})
    took = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"] == "Function timed out."
    assert took < LIMIT + 0.4  # not the RUNS_FOR the function takes
    assert not finished.is_set()
    assert finished.wait(3)  # it ran on, unobserved, and ended by itself


@pytest.mark.parametrize("tail", ["sync", "async"])
def test_both_tails_answer_at_the_limit(tail: str):
    finished = threading.Event()
    registry = stubborn_registry(finished)
    prepared = prepare_call(registry, {"function_name": "stubborn"}, CONTEXT)

    async def in_a_loop():
        started = time.monotonic()
        reply = await aexecute(prepared, default_timeout=LIMIT)
        return reply, time.monotonic() - started

    if tail == "sync":
        started = time.monotonic()
        reply = execute(prepared, default_timeout=LIMIT)
        took = time.monotonic() - started
    else:
        # (asyncio.run then waits for the stubborn task as it closes the loop)
        reply, took = asyncio.run(in_a_loop())
    assert reply.status == 504
    assert took < LIMIT + 0.4
    assert finished.wait(3)
