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
