"""``navai serve --wsgi`` stopped by SIGTERM ends its calls within its grace, as the ASGI
server does: each call is hung up and summarised (``on_call_end``: the call log), even when
OpenAI is slow to answer the hangup."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SERVER_KEY
from fakes import Answer, FakeOpenAI
from serve_helpers import serve, start_call, summaries


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=SERVER_KEY) as fake:
        yield fake


@pytest.mark.parametrize(
    ("wsgi", "workers", "slow_hangup"),
    [
        (True, 1, 0.0),
        (True, 1, 60.0),
        (True, 2, 0.0),
        (False, 1, 60.0),
        (False, 2, 0.0),
    ],
    ids=["wsgi", "wsgi-hung-hangup", "wsgi-workers", "asgi-hung-hangup", "asgi-workers"],
)
def test_sigterm_hangs_up_and_summarises_every_call(
    tmp_path: Path, fake: FakeOpenAI, wsgi: bool, slow_hangup: float, workers: int
) -> None:
    # (The retries of a hangup that times out, as configured by default.)
    env = {"NAVAI_UPSTREAM_MAX_RETRIES": "2", "NAVAI_UPSTREAM_TIMEOUT": "4"}
    args = ["--workers", str(workers), *(["--wsgi"] * wsgi)]
    process = serve(tmp_path, fake, *args, env=env)
    try:
        url = process.wait_ready()
        ids = [start_call(url) for _ in range(2)]
        for call_id in ids:
            fake.call(call_id).wait_for(lambda c: c.connections == 1)
        if slow_hangup:
            fake.answer(*[Answer(status=None, delay=slow_hangup)] * 6)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.process.wait(30)
        took = time.monotonic() - started
    finally:
        process.stop()
    assert code == 0, process.describe()
    assert took < 12, f"stopping took {took:.1f} s\n{process.describe()}"
    records = {r["call_id"]: r for r in summaries(tmp_path)}
    assert sorted(records) == sorted(ids), process.describe()
    assert {r["end_reason"] for r in records.values()} == {"shutdown"}
    hangups = [r.path for r in fake.requests if r.path.endswith("/hangup")]
    assert sorted(hangups) == sorted(f"/v1/realtime/calls/{i}/hangup" for i in ids)


@pytest.mark.parametrize("wsgi", [True, False], ids=["wsgi", "asgi"])
def test_a_second_sigterm_while_stopping_does_not_cut_the_hangups_short(
    tmp_path: Path, fake: FakeOpenAI, wsgi: bool
) -> None:
    """A process manager (or a worker whose parent is gone) may send SIGTERM again while the
    server ends its calls: the calls are still hung up and summarised."""
    process = serve(tmp_path, fake, *(["--wsgi"] * wsgi))
    try:
        url = process.wait_ready()
        ids = [start_call(url) for _ in range(2)]
        for call_id in ids:
            fake.call(call_id).wait_for(lambda c: c.connections == 1)
        fake.answer(*[Answer(status=None, delay=1.5)] * 2)  # the hangups take a while
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while len(hangups_of(fake)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)  # while the hangups are answered
        code = process.process.wait(30)
    finally:
        process.stop()
    assert code == 0, process.describe()
    records = {r["call_id"]: r for r in summaries(tmp_path)}
    assert sorted(records) == sorted(ids), process.describe()
    assert {r["end_reason"] for r in records.values()} == {"shutdown"}


def hangups_of(fake: FakeOpenAI) -> list[str]:
    return [r.path for r in fake.requests if r.path.endswith("/hangup")]
