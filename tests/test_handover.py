"""What a call handed over (``CallManager.hand_over``: another worker goes on with it) gives
back in this process, and what a refused attach leaves behind: its place under
``NAVAI_CALL_MAX_LIVE``, its record events and their watchers, the supervisor's held-calls
file. In process, on the fake; no shared store is needed to hand a call over."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAI

from navai_core._errors import CallsFull
from navai_core.calls.registry import FileCallRegistry, read_held

KEY = "sk-handover-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=KEY) as server:
        yield server


def wait(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def held_then_handed_over(navai: Any, fake: FakeOpenAI) -> str:
    """A call attached, its sideband open, then handed over and no longer held here."""
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=KEY, rate_key="alice")
    call.wait_for(lambda c: c._outbox is not None)
    navai.calls.hand_over(call.call_id)
    wait(lambda: call.call_id not in navai.calls)
    return str(call.call_id)


def test_handed_over_calls_give_their_places_back(fake: FakeOpenAI, make_navai) -> None:
    navai = make_navai(fake, call_max_live=2)
    for _ in range(2):
        held_then_handed_over(navai, fake)
    assert navai.calls.places.held == 0
    third = fake.open_call()
    navai.calls.attach(third.call_id, api_key=KEY, rate_key="alice")  # not CallsFull
    assert third.call_id in navai.calls


def test_a_handed_over_call_closes_its_watchers_and_writes_no_record(
    fake: FakeOpenAI, make_navai, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "calls.jsonl"
    ended: list[Any] = []
    navai = make_navai(fake, call_log=str(log), on_call_end=ended.append)
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=KEY, rate_key="alice")
    call.wait_for(lambda c: c._outbox is not None)
    events = navai.recorder.calls[call.call_id]

    async def watch() -> list[bytes]:
        return [chunk async for chunk in events.stream()]

    watched = asyncio.run_coroutine_threadsafe(watch(), events.loop)
    wait(lambda: bool(events.watchers))
    with caplog.at_level(logging.INFO, logger="navai"):
        navai.calls.hand_over(call.call_id)
        chunks = watched.result(5)  # the stream closes
        wait(lambda: call.call_id not in navai.calls)
    assert call.call_id not in navai.recorder.calls
    assert not any(chunk.startswith(b"event: end") for chunk in chunks)
    # A watcher that comes after the handover is closed at once too.
    late = asyncio.run_coroutine_threadsafe(watch(), events.loop).result(5)
    assert not any(chunk.startswith(b"event: ") for chunk in late)
    time.sleep(0.2)  # what would run after the end (hook, log line) has had its chance
    assert ended == []
    assert not (log.exists() and log.read_text())
    assert not any(" ended (" in record.getMessage() for record in caplog.records)
    assert call.hangups == 0


def test_a_handed_over_call_leaves_the_held_calls_file(
    fake: FakeOpenAI, make_navai, tmp_path: Path
) -> None:
    navai = make_navai(fake)
    path = str(tmp_path / "held")
    navai.calls.held_calls = FileCallRegistry(path)
    call_id = held_then_handed_over(navai, fake)
    assert call_id not in [held.call_id for held in read_held(path)]
    assert read_held(path) == []


def test_refused_attaches_leave_no_events_behind(fake: FakeOpenAI, make_navai) -> None:
    navai = make_navai(fake, call_max_live=1)
    first = fake.open_call()
    navai.calls.attach(first.call_id, api_key=KEY, rate_key="alice")
    events = navai.recorder.calls[first.call_id]
    for _ in range(3):
        refused = fake.open_call()
        with pytest.raises(CallsFull):
            navai.calls.attach(refused.call_id, api_key=KEY, rate_key="alice")
    assert list(navai.recorder.calls) == [first.call_id]
    with pytest.raises(ValueError, match="already held"):
        navai.calls.attach(first.call_id, api_key=KEY, rate_key="alice")
    assert navai.recorder.calls[first.call_id] is events
    assert navai.calls.places.held == 1


def handing_over(navai: Any, call_id: str, then: Any) -> Any:
    """On the loop that holds ``call_id``: start handing it over (as ``hand_over`` does), then,
    before the call has ended, await ``then()``."""
    call = navai.calls._calls[call_id]

    async def scenario() -> Any:
        call.end("handed_over")
        assert call_id in navai.calls  # still handing over
        return await then()

    return asyncio.run_coroutine_threadsafe(scenario(), call.loop).result(10)


def test_a_hangup_while_handing_over_a_call_still_held_here_hangs_it_up(
    fake: FakeOpenAI, make_navai
) -> None:
    """This worker still holds the call's lease (a shutdown handing calls over): the hangup
    wins; the call is hung up and its record written here."""
    ended: list[Any] = []
    navai = make_navai(fake, on_call_end=ended.append)
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=KEY, rate_key="alice")
    call.wait_for(lambda c: c._outbox is not None)
    assert handing_over(navai, call.call_id, lambda: navai.calls.ahangup(call.call_id)) is True
    call.wait_for(lambda c: c.hangups == 1)
    wait(lambda: len(ended) == 1)
    assert ended[0].end_reason == "hangup"


class LostLeases:
    """A shared store whose lease of every call another worker has taken (what
    ``CallLeases`` says once its renewal learns it lost a call)."""

    def register(self, call: Any, *, runtime: str, model: str, resume: Any) -> None:
        return None

    def track(self, call_id: str, dispatch: Any) -> Any:
        return dispatch

    def forget(self, call_id: str) -> int:
        return 0

    def release(self, call_id: str) -> None:
        return None

    def held(self) -> list[str]:
        return []


def test_a_hangup_while_handing_over_a_lost_call_hangs_it_up_through_openai(
    fake: FakeOpenAI, make_navai
) -> None:
    """Another worker holds the call now: the hangup goes to OpenAI (the new owner sees its
    sideband close and writes the record); nothing is recorded here."""
    ended: list[Any] = []
    navai = make_navai(fake, on_call_end=ended.append)
    navai.calls.leases = LostLeases()
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=KEY, rate_key="alice")
    call.wait_for(lambda c: c._outbox is not None)
    assert handing_over(navai, call.call_id, lambda: navai.calls.ahangup(call.call_id)) is True
    assert call.hangups == 1
    wait(lambda: call.call_id not in navai.calls)
    time.sleep(0.2)
    assert ended == []


def test_a_handed_over_call_gives_back_the_budget_seconds_it_paid_ahead(
    fake: FakeOpenAI, make_navai
) -> None:
    navai = make_navai(fake, call_budget="1/hour")
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=KEY, rate_key="alice")
    held = navai.calls._calls[call.call_id]
    wait(lambda: held.limits.charged >= 5)  # 5 s (and more) paid ahead
    navai.calls.hand_over(call.call_id)
    wait(lambda: call.call_id not in navai.calls)
    budgets = navai.calls.budgets
    stats = budgets._limiter._fixed_window().get_window_stats(
        budgets.budget.item, budgets.BUCKET, "alice"
    )
    assert 60 - stats.remaining == 1  # the second begun here, not the seconds paid ahead
