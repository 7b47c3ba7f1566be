"""Calls that outlive a worker (CONTRACT §13), in one process: two ``Navai`` instances on one
real redis-server stand for two workers (the kill -9 cases, with real processes, are in
test_takeover_workers.py). Without a shared store nothing of it runs."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fakes import FakeOpenAI, fn_call

from navai_core import FunctionRegistry, RequestContext
from navai_core.calls.leases import CallLeases, Resume
from tests.redis_server import RedisServer

KEY = "sk-takeover-0123456789"


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def fake():
    with FakeOpenAI(key=KEY) as server:
        yield server


def registry() -> FunctionRegistry:
    functions = FunctionRegistry()
    functions.add(lambda a, b: a + b, name="add")
    return functions


def wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def answered(call, fc_id: str) -> bool:
    return any(o["call_id"] == fc_id for o in call.outputs())


def test_without_a_store_nothing_talks_to_redis(fake, make_navai, monkeypatch):
    import redis
    import redis.asyncio

    touched: list[str] = []

    def refuse(*args, **kwargs):
        touched.append("redis")
        raise AssertionError("no Redis without a shared store")

    monkeypatch.setattr(redis.asyncio.Redis, "from_url", refuse)
    monkeypatch.setattr(redis.Redis, "from_url", refuse)
    ended = []
    navai = make_navai(fake, functions=registry(), on_call_end=ended.append)
    assert navai.leases is None and navai.takeover is None and navai.calls.leases is None
    navai.log_startup(load_functions=False)
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=KEY, rate_key="alice")
    call.wait_for(lambda c: c._outbox is not None)
    call.send(fn_call("fc1", "add", {"a": 1, "b": 2}))
    call.wait_for(lambda c: answered(c, "fc1"))
    navai.close()  # as today: the call is hung up
    assert call.hangups == 1
    assert ended and ended[0].end_reason == "shutdown" and ended[0].workers == 1
    assert touched == []


@pytest.mark.slow  # a real redis-server
def test_a_handed_over_call_goes_on_and_its_one_record_counts_two_workers(fake, redis, make_navai):
    ended_a, ended_b = [], []
    a = make_navai(
        fake, functions=registry(), rate_limit_storage=redis.url, on_call_end=ended_a.append
    )
    b = make_navai(
        fake, functions=registry(), rate_limit_storage=redis.url, on_call_end=ended_b.append
    )
    call = fake.open_call()
    a.calls.attach(call.call_id, api_key=KEY, rate_key="alice", model="gpt-realtime")
    call.wait_for(lambda c: c._outbox is not None)
    assert b.leases is not None and b.takeover is not None
    a.close()  # a store: handed over, not hung up
    assert call.hangups == 0 and not call.ended and ended_a == []
    taken = b.leases.on_loop_sync(b.takeover.scan)
    assert taken == 1 and call.call_id in b.calls
    call.wait_for(lambda c: c.connections == 2 and c._outbox is not None)
    call.send(fn_call("fc1", "add", {"a": 2, "b": 3}))
    call.wait_for(lambda c: answered(c, "fc1"))
    assert call.output_of("fc1")["result"] == 5
    call.end()
    wait(lambda: len(ended_b) == 1)
    summary = ended_b[0]
    assert summary.workers == 2 and summary.end_reason == "ended"
    assert summary.key == "alice"
    assert ended_a == []


@pytest.mark.slow
def test_hangup_on_another_worker_needs_the_key_that_created_the_call(fake, redis, make_navai):
    a = make_navai(fake, functions=registry(), rate_limit_storage=redis.url)
    b = make_navai(fake, functions=registry(), rate_limit_storage=redis.url)
    call = fake.open_call()
    a.calls.attach(call.call_id, api_key=KEY, rate_key="alice")
    call.wait_for(lambda c: c._outbox is not None)
    path = f"/navai/realtime/calls/{call.call_id}/hangup"
    wait(lambda: b.leases.on_loop_sync(lambda: b.leases.entry(call.call_id)) is not None)
    json = {"content-type": "application/json"}  # (the hangup route reads a JSON body)
    assert b.handle(RequestContext("POST", path, json, client="bob")).status == 404
    assert call.hangups == 0
    reply = b.handle(RequestContext("POST", path, json, client="alice"))
    assert reply.status == 200 and reply.body == {"ok": True, "call_id": call.call_id}
    assert call.hangups == 1
    wait(lambda: call.call_id not in a.calls)


@pytest.mark.slow
def test_exactly_one_claimant_and_a_worker_that_lost_a_call_lets_it_go(redis):
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        lost: list[str] = []

        def leases(owner: str) -> CallLeases:
            return CallLeases(
                redis.url,
                lease_seconds=1,
                max_seconds=60,
                loop=lambda: loop,
                owner=owner,
                on_lost=lost.append,
            )

        first = leases("first")

        class Held:  # what register reads of a held call
            call_id = "rtc_claimed"
            key = "alice"
            started_at = time.time()
            transport = "webrtc"
            target = type("T", (), {"key": KEY})()
            limits = type("L", (), {"charged": 7})()

        first.register(Held(), runtime="realtime", model="m", resume=None)
        await first.flush()
        assert (await first.claimable(_fingerprint(), 10))[0] == []
        assert await first.claim("rtc_claimed", _fingerprint()) is None  # alive
        first._renewer.cancel()  # the owner stops renewing (as if frozen)
        await asyncio.sleep(0.3)
        first._renewer = None
        await asyncio.sleep(1.2)
        assert (await first.claimable(_fingerprint(), 10))[0] == ["rtc_claimed"]
        others = [leases(f"other{i}") for i in range(6)]
        wrong_key = await others[0].claim("rtc_claimed", "0" * 16)
        assert wrong_key is None  # made with another backend key: not this worker's
        won = await asyncio.gather(*(o.claim("rtc_claimed", _fingerprint()) for o in others))
        winners = [r for r in won if r is not None]
        assert len(winners) == 1
        resume = winners[0]
        assert isinstance(resume, Resume)
        assert resume.workers == 2 and resume.entry.key == "alice"
        assert resume.entry.deadline == pytest.approx(Held.started_at + 60)
        first._start_renewing()  # the frozen owner wakes up: its renewal says it lost
        await asyncio.sleep(0.6)
        assert lost == ["rtc_claimed"]
        assert first.held() == []
        for store in (first, *others):
            await store.aclose()

    asyncio.run(scenario())


def _fingerprint() -> str:
    from navai_core.calls.leases import key_fingerprint

    return key_fingerprint(KEY)


def test_the_first_events_of_a_taken_over_call_answer_the_interrupted_tools():
    from navai_core.calls.leases import CallEntry

    entry = CallEntry("rtc_1", "realtime", "alice", "m", 0.0, 60.0, "webrtc", "f")
    events = Resume(entry, {"fc_a": "slow", "fc_b": "add"}).events()
    assert [e["type"] for e in events] == [
        "conversation.item.create",
        "conversation.item.create",
        "response.create",
    ]
    output = json.loads(events[0]["item"]["output"])
    assert events[0]["item"]["call_id"] == "fc_a"
    assert output["ok"] is False and output["function_name"] == "slow"
    assert "interrupted" in output["details"]
    assert Resume(entry, {}).events() == []  # nothing was pending: no response.create


def test_a_taken_over_live_call_gets_its_outputs_the_live_way():
    """GPT-Live takes a function's output as ``response.item.create`` (CONTRACT §11), not
    Realtime's ``conversation.item.create``."""
    from navai_core.calls.leases import CallEntry

    entry = CallEntry("live_1", "live", "alice", "gpt-live-1.1", 0.0, 60.0, "webrtc", "f")
    events = Resume(entry, {"fc_a": "slow"}).events()
    assert [e["type"] for e in events] == ["response.item.create", "response.create"]
    assert events[0]["item"]["type"] == "function_call_output"
