"""The lease store across a Redis that forgets (CONTRACT §13): a restart with no persistence,
a failover or an eviction leaves each held call's entry gone, and its owner writes it again
and goes on holding it; a claimant that lets a call go unattached keeps its charged seconds;
calls that end during an outage cost one queued write, not one each. A real redis-server."""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections.abc import Iterator

import pytest
import redis as redis_client

from navai_core.calls.leases import CALL_PREFIX, LEASES, CallLeases, WriteQueue, key_fingerprint
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow  # a real redis-server

KEY = "sk-restart-0123456789"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(2)


def held_call(call_id: str, charged: int) -> types.SimpleNamespace:
    """What the lease store reads of a held call."""
    return types.SimpleNamespace(
        call_id=call_id,
        key="alice",
        started_at=time.time(),
        transport="webrtc",
        target=types.SimpleNamespace(key=KEY),
        limits=types.SimpleNamespace(charged=charged, started=0.0),
        connection=types.SimpleNamespace(unsent=[]),
        guard=None,
    )


def run(loop: asyncio.AbstractEventLoop, coro: object) -> object:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(10)  # type: ignore[arg-type]


def until(check: object, wait: float = 5.0) -> None:
    deadline = time.monotonic() + wait
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def leases(url: str, loop: asyncio.AbstractEventLoop, owner: str, **kw: object) -> CallLeases:
    return CallLeases(
        url,
        lease_seconds=1,
        max_seconds=600,
        loop=lambda: loop,
        owner=owner,
        **kw,  # type: ignore[arg-type]
    )


def test_a_call_held_across_a_redis_restart_is_written_again_and_kept(tmp_path, loop) -> None:
    server = RedisServer(tmp_path)
    port = server.port
    lost: list[str] = []
    store = leases(server.url, loop, "w1", on_lost=lost.append)
    other = None
    try:
        store.register(held_call("rtc_across", 7), runtime="realtime", model="m", resume=None)
        run(loop, store.flush())
        server.stop()  # a restart of a Redis that keeps nothing (or a failover)
        time.sleep(0.5)
        server = RedisServer(tmp_path, port=port)
        check = redis_client.Redis.from_url(server.url)
        try:
            until(lambda: check.hget(CALL_PREFIX + "rtc_across", "owner") == b"w1")
            time.sleep(1.5)  # past the lease, renewals going on
            assert lost == []
            assert store.held() == ["rtc_across"]
            stored = check.hgetall(CALL_PREFIX + "rtc_across")
            assert b'"call_id":"rtc_across"' in stored[b"entry"]
            assert stored[b"fp"] == key_fingerprint(KEY).encode()
            assert check.zscore(LEASES, "rtc_across") is not None
            assert check.ttl(CALL_PREFIX + "rtc_across") > 500
            other = leases(server.url, loop, "w2")
            assert run(loop, other.claim("rtc_across", key_fingerprint(KEY))) is None
        finally:
            check.close()
    finally:
        run(loop, store.aclose())
        if other is not None:
            run(loop, other.aclose())
        server.stop()


def test_a_taken_over_call_is_written_again_from_its_resumed_entry(tmp_path, loop) -> None:
    server = RedisServer(tmp_path)
    first = leases(server.url, loop, "w1")
    second = leases(server.url, loop, "w2")
    check = redis_client.Redis.from_url(server.url)
    try:
        first.register(held_call("rtc_moved", 0), runtime="realtime", model="m", resume=None)
        run(loop, first.flush())
        run(loop, first.aclose())  # the first owner dies
        time.sleep(1.2)  # its lease lapses
        resume = run(loop, second.claim("rtc_moved", key_fingerprint(KEY)))
        assert resume is not None
        second.register(held_call("rtc_moved", 0), runtime="realtime", model="m", resume=resume)  # type: ignore[arg-type]
        run(loop, second.flush())
        check.flushall()  # the entry is gone (an eviction, a restart)
        until(lambda: check.hget(CALL_PREFIX + "rtc_moved", "owner") == b"w2")
        assert check.hget(CALL_PREFIX + "rtc_moved", "workers") == b"2"
        assert second.held() == ["rtc_moved"]
    finally:
        check.close()
        run(loop, second.aclose())
        server.stop()


def test_a_claim_let_go_unattached_keeps_the_charged_seconds(tmp_path, loop) -> None:
    server = RedisServer(tmp_path)
    a, b, c = (leases(server.url, loop, owner) for owner in "ABC")
    check = redis_client.Redis.from_url(server.url)
    try:
        a.register(held_call("rtc_x", 30), runtime="realtime", model="m", resume=None)
        until(lambda: check.hget(CALL_PREFIX + "rtc_x", "charged") == b"30")  # a renewal
        run(loop, a.aclose())  # A dies
        time.sleep(1.2)  # its lease lapses
        resume = run(loop, b.claim("rtc_x", key_fingerprint(KEY)))
        assert resume is not None and resume.charged == 30  # type: ignore[attr-defined]
        b.release("rtc_x")  # its attach failed: handed on, never held here
        run(loop, b.flush())
        resume = run(loop, c.claim("rtc_x", key_fingerprint(KEY)))
        assert resume is not None
        assert resume.charged == 30  # type: ignore[attr-defined]
    finally:
        check.close()
        for store in (b, c):
            run(loop, store.aclose())
        server.stop()


def test_calls_ended_in_an_outage_cost_one_queued_write(loop) -> None:
    up = True
    forgotten: list[str] = []

    async def send(op: object) -> None:
        if not up:
            raise ConnectionError("the store is down")
        await op(None)  # type: ignore[operator]

    def forget(ids: list[str]) -> object:
        async def op(redis: object) -> None:
            forgotten.extend(ids)

        return op

    async def nothing(redis: object) -> None:
        return None

    queue = WriteQueue(lambda: loop, send, lambda exc: None, forget)  # type: ignore[arg-type]
    for i in range(1000):  # registered while the store answered
        queue.start(f"rtc_{i}", nothing)
    until(lambda: queue.idle)
    up = False
    for i in range(1000):  # all end during the outage
        queue.end(f"rtc_{i}")
    assert len(queue) <= 1  # one write, however many calls ended
    up = True
    until(lambda: queue.idle, wait=10)
    assert sorted(forgotten) == sorted(f"rtc_{i}" for i in range(1000))
