"""The lease store while Redis is unreachable (CONTRACT §13): its queued writes stay bounded
(the newest state of each call, not every update), and once Redis answers again the store
holds what the worker holds now. A real redis-server, stopped and started on the same port."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis as redis_client

from navai_core._http import Reply
from navai_core.calls.leases import CALL_PREFIX, LEASES, CallLeases
from navai_core.calls.sideband import RunFunction
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow  # a real redis-server

KEY = "sk-outage-0123456789"


class Held:
    """What the lease store reads of a held call."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.key = "alice"
        self.started_at = time.time()
        self.transport = "webrtc"
        self.target = type("T", (), {"key": KEY})()
        self.limits = type("L", (), {"charged": 0})()


def queued(store: CallLeases) -> int:
    """Writes waiting for the store."""
    return len(store._ops)


async def answer(live: object, action: RunFunction) -> Reply:
    return Reply(200, {"ok": True})


def test_queued_writes_stay_bounded_in_an_outage_and_catch_up_after(tmp_path) -> None:
    server = RedisServer(tmp_path)
    port = server.port

    async def scenario() -> None:
        nonlocal server
        loop = asyncio.get_running_loop()
        store = CallLeases(
            server.url, lease_seconds=5, max_seconds=60, loop=lambda: loop, owner="w1"
        )
        before = Held("rtc_before")  # held before the outage, ends during it
        store.register(before, runtime="realtime", model="m", resume=None)
        await store.flush()
        server.stop()  # the outage
        kept = Held("rtc_kept")  # held from the outage on
        store.register(kept, runtime="realtime", model="m", resume=None)
        tracked = store.track(kept.call_id, answer)
        most = 0
        for i in range(3000):  # thousands of function calls started and answered
            await tracked(None, RunFunction(f"fc_{i}", "add", "{}"))
            if i % 100 == 0:
                await asyncio.sleep(0)  # the queue's sender runs (and fails)
            most = max(most, queued(store))
        for i in range(500):  # calls that began and ended during the outage
            brief = Held(f"rtc_brief{i}")
            store.register(brief, runtime="realtime", model="m", resume=None)
            store.forget(brief.call_id)
            most = max(most, queued(store))
        store.forget(before.call_id)
        gate = asyncio.Event()

        async def unanswered(live: object, action: RunFunction) -> Reply:
            await gate.wait()
            return Reply(200, {"ok": True})

        running = store.track(kept.call_id, unanswered)
        open_call = asyncio.ensure_future(running(None, RunFunction("fc_open", "add", "{}")))
        await asyncio.sleep(0.5)
        assert most <= 4, most  # the newest state of each call, not each update
        assert queued(store) <= 3
        server = RedisServer(tmp_path, port=port)  # Redis is back
        deadline = time.monotonic() + 10
        while queued(store) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await store.flush()
        check = redis_client.Redis.from_url(server.url)
        try:
            found = check.hgetall(CALL_PREFIX + "rtc_kept").items()
            stored = {k.decode(): v.decode() for k, v in found}
            assert stored["owner"] == "w1"
            assert [k for k in stored if k.startswith("fc:")] == ["fc:fc_open"]
            assert check.zscore(LEASES, "rtc_kept") is not None
            assert not check.exists(CALL_PREFIX + "rtc_before")
            assert check.keys(CALL_PREFIX + "rtc_brief*") == []
        finally:
            check.close()
        gate.set()
        await open_call
        await store.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
