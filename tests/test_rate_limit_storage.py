"""Redis down or hung: rate-limited routes answer 503 with Retry-After within a bounded wait
(or let requests through with NAVAI_RATE_LIMIT_FAIL_OPEN), the outage is logged once, and
navai recovers by itself when Redis is back. Both adapters, against a real redis-server."""

from __future__ import annotations

import logging
import signal
import time

import pytest
from test_adapters_common import Make, make  # noqa: F401  (the both-adapters fixture)

from navai_core import FunctionRegistry, Navai, NavaiConfig
from navai_core.limits import rate as _protect
from tests.redis_server import RedisServer

LIST = "/navai/functions"


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.process.send_signal(signal.SIGCONT)
    server.stop()


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch):
    monkeypatch.setattr(_protect, "STORAGE_RETRY_SECONDS", 0.5)


def navai_on(redis: RedisServer, tmp_path, **settings) -> Navai:
    registry = FunctionRegistry()
    registry.add(lambda: "pong", name="ping")
    config = NavaiConfig(
        functions_base_dir=str(tmp_path),
        functions_folders="none",
        rate_limit_functions="1000/minute",
        rate_limit_storage=redis.url,
        **settings,
    )
    return Navai(config, functions=registry)


def timed_get(client):
    started = time.monotonic()
    response = client.get(LIST)
    return response, time.monotonic() - started


def outage_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rate-limit storage" in r.getMessage()]


@pytest.mark.slow  # starts real processes
def test_hung_redis_answers_503_quickly_logs_once_and_recovers(
    make: Make,  # noqa: F811
    redis: RedisServer,
    tmp_path,
    caplog,
):
    client = make(navai_on(redis, tmp_path))
    assert client.get(LIST).status_code == 200
    caplog.set_level(logging.INFO, logger="navai")
    redis.process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        first, took = timed_get(client)
        assert first.status_code == 503, first.text
        assert took < 1.2  # the store's timeout (0.5 s), not the client library's default
        seconds = int(first.headers["retry-after"])
        assert 1 <= seconds <= 5
        assert first.json() == {
            "error": f"Rate limiting is unavailable. Try again in {seconds} seconds.",
            "retry_after": seconds,
        }
        for _ in range(5):  # answered at once while the store is left alone
            again, took = timed_get(client)
            assert again.status_code == 503
            assert took < 0.3
        assert "Traceback" not in caplog.text
    finally:
        redis.process.send_signal(signal.SIGCONT)
    lines = outage_lines(caplog)
    assert len(lines) == 1, lines
    assert "answering 503" in lines[0] and "NAVAI_RATE_LIMIT_FAIL_OPEN" in lines[0]
    deadline = time.monotonic() + 5
    while client.get(LIST).status_code != 200:
        assert time.monotonic() < deadline, "navai did not recover by itself"
        time.sleep(0.1)
    lines = outage_lines(caplog)
    assert len(lines) == 2 and "answers again" in lines[1], lines


@pytest.mark.slow  # starts real processes
def test_redis_down_answers_503_at_once(make: Make, redis: RedisServer, tmp_path):  # noqa: F811
    client = make(navai_on(redis, tmp_path))
    assert client.get(LIST).status_code == 200
    redis.stop()
    for _ in range(3):
        response, took = timed_get(client)
        assert response.status_code == 503
        assert "retry-after" in response.headers
        assert took < 1.2


@pytest.mark.slow  # starts real processes
def test_fail_open_lets_requests_through_while_redis_is_hung(
    make: Make,  # noqa: F811
    redis: RedisServer,
    tmp_path,
    caplog,
):
    client = make(navai_on(redis, tmp_path, rate_limit_fail_open=True))
    assert client.get(LIST).status_code == 200
    caplog.set_level(logging.INFO, logger="navai")
    redis.process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(4):
            response, took = timed_get(client)
            assert response.status_code == 200
            assert took < 1.2
    finally:
        redis.process.send_signal(signal.SIGCONT)
    [line] = outage_lines(caplog)
    assert "letting requests through" in line


def test_the_setting_is_read_from_the_environment():
    assert NavaiConfig.from_env({}).rate_limit_fail_open is False
    assert NavaiConfig.from_env({"NAVAI_RATE_LIMIT_FAIL_OPEN": "true"}).rate_limit_fail_open


CALLS = "/navai/realtime/calls"
OFFER = "v=0\r\no=- 77 2 IN IP4 127.0.0.1\r\ns=browser offer\r\n"


@pytest.fixture(scope="module")
def fake_realtime():
    from fakes import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


def call_navai(redis: RedisServer, fake, **settings) -> Navai:
    config = NavaiConfig(
        openai_api_key="sk-test-budget-0123456789",
        openai_base_url=fake.base_url,
        functions_enabled=False,
        call_budget="60/day",
        rate_limit_storage=redis.url,
        **settings,
    )
    return Navai(config)


def post_offer(client):
    return client.post(CALLS, content=OFFER, headers={"Content-Type": "application/sdp"})


@pytest.mark.slow  # starts real processes
def test_call_budget_with_redis_down_answers_503(
    make: Make,  # noqa: F811
    redis: RedisServer,
    fake_realtime,
    caplog,
):
    """The budget guard follows the storage-outage rule: 503 with Retry-After, no traceback,
    nothing sent upstream (the calls' own rate limit is off: the budget is the only check)."""
    client = make(call_navai(redis, fake_realtime, rate_limit_calls="off", call_sideband=False))
    assert post_offer(client).status_code == 201
    redis.stop()
    fake_realtime.reset()
    caplog.set_level(logging.INFO, logger="navai")
    response = post_offer(client)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json()["error"].startswith("Rate limiting is unavailable.")
    assert fake_realtime.requests == []
    assert "Traceback" not in caplog.text and str(redis.port) not in caplog.text


@pytest.mark.slow  # starts real processes
def test_call_budget_fails_open_and_charges_quietly_while_redis_is_down(
    make: Make,  # noqa: F811
    redis: RedisServer,
    fake_realtime,
    caplog,
):
    """With NAVAI_RATE_LIMIT_FAIL_OPEN a call starts while Redis is down, and its running
    charges fail without ending it, logging the failure's class only (never the store's
    address, which may carry a password)."""
    navai = call_navai(redis, fake_realtime, rate_limit_fail_open=True)
    navai.calls.budget_tick_seconds = 0.05
    client = make(navai)
    redis.stop()
    fake_realtime.reset()
    caplog.set_level(logging.INFO, logger="navai")
    response = post_offer(client)
    assert response.status_code == 201, response.text
    call_id = response.headers["location"].rsplit("/", 1)[1]
    fake_realtime.call(call_id).wait_for(lambda c: c.connections == 1)
    time.sleep(1.2)  # past the first second of call time: charged (and failed) at least once
    assert [live.call_id for live in navai.calls.live()] == [call_id]
    assert "Traceback" not in caplog.text
    assert str(redis.port) not in caplog.text
    assert client.post(f"{CALLS}/{call_id}/hangup", json={}).status_code == 200
