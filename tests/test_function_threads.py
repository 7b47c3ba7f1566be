"""Threads of sync functions are a bounded budget: a hung function holds at most half of
them, other functions keep the rest, a call with no free thread answers 503, and a time limit
counts from when the function starts, not while it waits for a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import anyio.to_thread
import pytest
from test_adapters_common import Make, make  # noqa: F401  (the both-adapters fixture)

from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext
from navai_core.concurrency.threads import Busy, FunctionThreads
from navai_core.functions.dispatch import aexecute, execute, prepare_call

CONTEXT = RequestContext("POST", "/navai/functions/execute", {}, "127.0.0.1")


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Hung:
    """A sync function that blocks until released, recording the threads it holds."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[int] = set()

    def __call__(self) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        try:
            self.release.wait(5)
        finally:
            with self.lock:
                self.running -= 1
        return "released"


def hung_registry(hung: Hung) -> FunctionRegistry:
    registry = FunctionRegistry()

    def hangs() -> str:
        return hung()

    def quick() -> str:
        return "ok"

    registry.add(hangs)
    registry.add(quick)
    return registry


def test_a_hung_function_holds_at_most_half_the_threads_over_http(make: Make, tmp_path):  # noqa: F811
    hung = Hung()
    config = NavaiConfig(
        functions_base_dir=str(tmp_path),
        functions_folders="none",
        function_timeout_seconds=0.2,
        rate_limit_functions="off",
    )
    client = make(Navai(config, functions=hung_registry(hung)))
    calls = 60

    def call(name: str):
        response = client.post("/navai/functions/execute", json={"function_name": name})
        return response.status_code, response.json(), response.headers.get("retry-after")

    try:
        with ThreadPoolExecutor(calls) as pool:
            answers = list(pool.map(call, ["hangs"] * calls))
            # While the hung calls hold their share, other functions are answered at once.
            started = time.monotonic()
            status, body, _ = call("quick")
            assert (status, body["result"]) == (200, "ok")
            assert time.monotonic() - started < 1.0
        statuses = sorted(status for status, _, _ in answers)
        assert set(statuses) <= {503, 504}, statuses
        assert statuses.count(504) == len(hung.threads)
        # The default budget is 40 threads, one function at most 20 of them.
        assert hung.most <= 20 and len(hung.threads) <= 20, (hung.most, len(hung.threads))
        busy = [(body, retry) for status, body, retry in answers if status == 503]
        assert busy, statuses
        for body, retry in busy:
            assert body == {
                "ok": False,
                "function_name": "hangs",
                "error": "Function is busy.",
                "details": "Too many calls of hangs are running. Try again later.",
            }
            assert retry == "1"
    finally:
        hung.release.set()


@pytest.mark.parametrize("tail", ["sync", "async"])
def test_threads_are_bounded_and_other_functions_keep_their_share(tail: str):
    hung = Hung()
    registry = hung_registry(hung)
    pool = FunctionThreads(8)

    def run(name: str):
        prepared = prepare_call(registry, {"function_name": name}, CONTEXT)
        if tail == "sync":
            return execute(prepared, default_timeout=0.1, threads=pool)
        return asyncio.run(aexecute(prepared, default_timeout=0.1, threads=pool))

    try:
        with ThreadPoolExecutor(30) as executor:
            replies = list(executor.map(run, ["hangs"] * 30))
        assert {r.status for r in replies} == {503, 504}
        assert hung.most == 4 and len(hung.threads) == 4  # half of 8
        assert pool.busy == 4  # the hung calls still hold their threads
        for _ in range(10):  # the other half serves everything else
            assert run("quick").body["result"] == "ok"
        assert pool.busy + pool._idle <= 8  # threads of this budget, busy or idle
    finally:
        hung.release.set()
    deadline = time.monotonic() + 5
    while pool.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.busy == 0  # released calls give their threads back


@pytest.mark.anyio
async def test_a_call_waiting_for_a_thread_is_not_timed_out_before_it_runs():
    # Work outside navai fills anyio's default thread limiter (40 tokens); navai's own
    # threads are a separate budget, so a trivial call still runs and answers 200.
    registry = FunctionRegistry()

    @registry.function(timeout=0.3)
    def trivial() -> str:
        return "ran"

    release = threading.Event()
    limiter = anyio.to_thread.current_default_thread_limiter()
    try:
        async with anyio.create_task_group() as group:
            for _ in range(int(limiter.total_tokens)):
                group.start_soon(anyio.to_thread.run_sync, release.wait, 5)
            await anyio.sleep(0.05)
            assert limiter.available_tokens == 0
            prepared = prepare_call(registry, {"function_name": "trivial"}, CONTEXT)
            reply = await aexecute(prepared)
            release.set()
    finally:
        release.set()
    assert (reply.status, reply.body["result"]) == (200, "ran")


@pytest.mark.parametrize("tail", ["sync", "async"])
def test_the_clock_starts_when_the_function_has_a_thread(tail: str):
    # Two threads, both taken by two other functions for 0.2 s. ``late`` waits about 0.15 s
    # for one, then runs 0.2 s: 0.35 s from its call, yet within its 0.3 s limit, which
    # counts from its start.
    registry = FunctionRegistry()

    @registry.function(timeout=1)
    def holder_a() -> str:
        time.sleep(0.2)
        return "held"

    @registry.function(timeout=1)
    def holder_b() -> str:
        time.sleep(0.2)
        return "held"

    @registry.function(timeout=0.3)
    def late() -> str:
        time.sleep(0.2)
        return "in time"

    pool = FunctionThreads(2)

    def run(name: str):
        prepared = prepare_call(registry, {"function_name": name}, CONTEXT)
        if tail == "sync":
            return execute(prepared, threads=pool)
        return asyncio.run(aexecute(prepared, threads=pool))

    with ThreadPoolExecutor(3) as executor:
        holders = [executor.submit(run, name) for name in ("holder_a", "holder_b")]
        time.sleep(0.05)
        started = time.monotonic()
        reply = executor.submit(run, "late").result(5)
        took = time.monotonic() - started
        assert [h.result(5).status for h in holders] == [200, 200]
    assert (reply.status, reply.body["result"]) == (200, "in time")
    assert took >= 0.3  # it did wait for a thread


def test_waiting_calls_are_bounded_and_withdrawn_cleanly():
    pool = FunctionThreads(2)  # one thread per function, 20 waiting calls at most
    pool.acquire("a", 1)
    with pytest.raises(Busy):
        pool.acquire("a", 0.05)  # its function's share is taken: waits, then Busy
    assert not pool._waiters
    pool.acquire("b", 1)
    waiting = []
    threads = [
        threading.Thread(target=lambda: waiting.append(_try(pool, "c", 0.5))) for _ in range(25)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2)
    assert waiting.count("busy") == 25  # 20 waited, 5 were refused at once; none got one
    assert len(pool._waiters) == 0
    pool._release("a")
    pool.acquire("c", 0.1)  # a freed thread is handed out again
    assert pool.busy == 2


def _try(pool: FunctionThreads, name: str, wait: float) -> str:
    try:
        pool.acquire(name, wait)
    except Busy:
        return "busy"
    return "got"


def test_a_sync_call_that_waits_is_run_by_the_thread_that_frees_up():
    pool = FunctionThreads(2)  # one thread per function
    release = threading.Event()
    threads: list[int] = []

    def first() -> str:
        threads.append(threading.get_ident())
        release.wait(5)
        return "first"

    def second() -> str:
        threads.append(threading.get_ident())
        return "second"

    with ThreadPoolExecutor(2) as executor:
        running = executor.submit(pool.run, "a", first, 5)
        time.sleep(0.05)
        waiting = executor.submit(pool.run, "a", second, 5)
        time.sleep(0.05)
        assert len(pool._waiters) == 1 and not waiting.done()
        release.set()
        assert running.result(5)[0] == "first"
        value, started = waiting.result(5)
    assert value == "second" and started <= time.monotonic()
    assert threads[0] == threads[1]  # the thread that freed up
    assert pool.busy == 0 and not pool._waiters


def test_a_sync_call_that_finds_no_thread_in_time_is_busy_and_withdrawn():
    pool = FunctionThreads(2)
    release = threading.Event()
    with ThreadPoolExecutor(1) as executor:
        holder = executor.submit(pool.run, "a", lambda: release.wait(5), 5)
        time.sleep(0.05)
        with pytest.raises(Busy):
            pool.run("a", lambda: "never", 0.1)
        assert not pool._waiters
        release.set()
        holder.result(5)


@pytest.fixture
def refused_threads(monkeypatch):
    """``threading.Thread.start`` of navai's function threads fails while ``refusals`` > 0
    (as when the system has no thread left to give)."""
    refusals = [0]
    start = threading.Thread.start

    def refusing(thread: threading.Thread) -> None:
        if thread.name == "navai-function" and refusals[0] > 0:
            refusals[0] -= 1
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refusing)
    return refusals


def test_a_thread_the_system_refuses_gives_its_place_back(refused_threads):
    pool = FunctionThreads(2)  # one thread per function
    refused_threads[0] = 1
    with pytest.raises(RuntimeError, match="can't start new thread"):
        pool.run("x", lambda: "never", 1)
    assert pool.busy == 0 and not pool._held
    assert pool.run("x", lambda: "x", 1)[0] == "x"  # the place is there again


def test_a_thread_the_system_refuses_to_a_reserved_call_gives_its_place_back(refused_threads):
    pool = FunctionThreads(2)

    async def reserve_and_start() -> None:  # as the async callers do
        await pool.aacquire("x", 1)
        refused_threads[0] = 1
        pool.astart("x", lambda: "never", asyncio.get_running_loop())

    with pytest.raises(RuntimeError, match="can't start new thread"):
        asyncio.run(reserve_and_start())
    assert pool.busy == 0 and not pool._held


def test_one_functions_share_is_half_unless_given():
    assert FunctionThreads(40).per_function == 20
    assert FunctionThreads(1).per_function == 1
    assert FunctionThreads(16, per_function=16).per_function == 16  # a budget for one name
    assert FunctionThreads(4, per_function=9).per_function == 4  # never more than the budget
