"""Upstream faults against a real scripted server on loopback, sync and async.

Every case answers with the right status and JSON, and within the configured total deadline.
Retries wait a short backoff here (the backoff's lengths are test_core_retry's), and the cases
that wait a deadline out use a short one.
"""

from __future__ import annotations

import json
import time

import anyio
import attrs
import pytest
from conftest import in_process
from fakes import Answer, FakeOpenAI, refused_port

from navai_core import Navai, NavaiConfig, RequestContext

KEY = "sk-fault-test-key"
OK = {"value": "ek_fault_ok", "expires_at": 1730000000}
PATH = "/navai/realtime/client-secret"
JSON = {"Content-Type": "application/json"}
DEADLINE = 1.2  # room for the answers that must arrive, retries included
CUT_OFF = 0.6  # the deadline of the cases that wait it out (a hang, a trickle)
SLACK = 0.6
BACKOFF = 0.05  # instead of the default 0.5 s before the first retry


@pytest.fixture
def upstream():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(params=["sync", "async", "asgi", "wsgi"])
def mint(request):
    """Mint through Navai.handle, Navai.ahandle, or the ASGI / WSGI app in-process;
    returns (status, JSON body, seconds the request took). The seconds are the request's
    own, from the call that sends it to its answer: not the app's start-up (a TestClient's
    portal and lifespan take 0.1 to 0.3 s on a loaded machine) nor its close."""

    def run(base_url, **config):
        config = {
            "openai_api_key": KEY,
            "openai_base_url": base_url,
            "upstream_timeout_seconds": DEADLINE,
            "functions_enabled": False,
            "rate_limit_client_secret": "off",
            **config,
        }
        navai = Navai(NavaiConfig(**config))
        navai.retry_policy = attrs.evolve(navai.retry_policy, initial_delay=BACKOFF)
        return MINTERS[request.param](navai)

    return run


def _sync(navai):
    with navai:
        start = time.monotonic()
        reply = navai.handle(RequestContext("POST", PATH, JSON), b"{}")
        took = time.monotonic() - start
    return reply.status, reply.body, took


def _async(navai):
    async def go():
        async with navai:
            start = time.monotonic()
            reply = await navai.ahandle(RequestContext("POST", PATH, JSON), b"{}")
            return reply, time.monotonic() - start

    reply, took = anyio.run(go)
    return reply.status, reply.body, took


def _served(kind):
    def mint(navai):
        with in_process(navai, kind, "http://127.0.0.1") as http:
            start = time.monotonic()
            response = http.post(PATH, json={})
            took = time.monotonic() - start
        navai.close()
        return response.status_code, response.json(), took

    return mint


_asgi, _wsgi = _served("asgi"), _served("wsgi")


MINTERS = {"sync": _sync, "async": _async, "asgi": _asgi, "wsgi": _wsgi}


def test_refused_connection_is_502(mint):
    status, body, took = mint(f"http://127.0.0.1:{refused_port()}/v1")
    assert status == 502
    assert body["error"].startswith("OpenAI client_secrets could not be reached")
    assert took < DEADLINE + SLACK


def test_hang_longer_than_deadline_is_504_within_deadline(mint, upstream):
    upstream.answer(Answer.json(200, OK, delay=30), Answer.json(200, OK, delay=30))
    status, body, took = mint(upstream.base_url, upstream_timeout_seconds=CUT_OFF)
    assert (status, body) == (504, {"error": "OpenAI client_secrets timed out."})
    assert took < CUT_OFF + SLACK


def test_slow_trickle_is_cut_off_at_the_deadline(mint, upstream):
    body = json.dumps({**OK, "padding": "x" * 200}).encode()
    upstream.answer(Answer(200, body, {"Content-Type": "application/json"}, trickle=0.05))
    status, body, took = mint(
        upstream.base_url, upstream_max_retries=0, upstream_timeout_seconds=CUT_OFF
    )
    assert status == 504
    assert took < CUT_OFF + SLACK


def test_429_with_retry_after_is_retried_after_the_wait(mint, upstream):
    upstream.answer(
        Answer.json(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"})
    )
    upstream.answer(Answer.json(200, OK))
    status, body, took = mint(upstream.base_url)
    assert status == 200
    assert body["value"] == OK["value"]
    assert len(upstream.received) == 2
    assert took >= 0.3


def test_retry_after_ms_is_honoured(mint, upstream):
    upstream.answer(Answer.json(503, {}, headers={"retry-after-ms": "50"}), Answer.json(200, OK))
    status, _, _ = mint(upstream.base_url)
    assert status == 200
    assert len(upstream.received) == 2


def test_retry_after_beyond_the_deadline_is_not_waited_for(mint, upstream):
    upstream.answer(
        Answer.json(429, {"error": {"message": "later"}}, headers={"Retry-After": "30"})
    )
    status, _, took = mint(upstream.base_url)
    assert status == 429
    assert len(upstream.received) == 1
    assert took < DEADLINE + SLACK


def test_500_then_200_returns_one_secret(mint, upstream):
    upstream.answer(Answer.json(500, {"error": {"message": "oops"}}), Answer.json(200, OK))
    status, body, _ = mint(upstream.base_url)
    assert status == 200
    assert body == {**OK, "speech": {"provider": "openai"}}
    assert len(upstream.received) == 2
    first, second = upstream.received
    assert first.body == second.body


def test_dropped_connection_then_200_is_retried(mint, upstream):
    upstream.answer(Answer(drop=True), Answer.json(200, OK))
    status, _, _ = mint(upstream.base_url)
    assert status == 200
    assert len(upstream.received) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_not_retried(mint, upstream, status):
    upstream.answer(
        Answer.json(
            status,
            {"error": {"message": "no", "type": "invalid_request_error"}},
            headers={"x-request-id": "req_abc"},
        )
    )
    status, body, _ = mint(upstream.base_url)
    assert status == status
    assert len(upstream.received) == 1
    assert body["request_id"] == "req_abc"
    assert body["upstream_error"] == {"message": "no", "type": "invalid_request_error"}
    assert body["error"].startswith("OpenAI client_secrets failed: ")


def test_retries_stop_after_max_retries(mint, upstream):
    upstream.answer(*[Answer.json(500, {}) for _ in range(5)])
    status, _, _ = mint(upstream.base_url, upstream_max_retries=1)
    assert status == 500
    assert len(upstream.received) == 2


def test_invalid_json_reply_is_502(mint, upstream):
    upstream.answer(Answer(200, b"<html>not json</html>", {"Content-Type": "text/html"}))
    status, body, _ = mint(upstream.base_url)
    assert status == 502
    assert body == {"error": "OpenAI client_secrets returned a reply that is not JSON."}
    assert len(upstream.received) == 1


def test_reply_missing_value_is_502(mint, upstream):
    upstream.answer(Answer.json(200, {"expires_at": 1}))
    status, body, _ = mint(upstream.base_url)
    assert status == 502
    assert body == {"error": 'OpenAI client_secrets reply has no "value".'}
