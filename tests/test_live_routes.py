"""GPT-Live calls (NAVAI_CALL_RUNTIME=live) through both adapters and real ``navai serve``
processes, against the fake OpenAI's Live surface: the exact create request, the browser's
201, the tools run once with exactly one ``response.create`` after the nested response
completed, hang-ups, max length, budget, phone calls on the right runtime only, the summary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    BROWSER_OFFER,
    KINDS,
    SERVER_KEY,
    TOOL_NAMES,
    Setup,
    Target,
    Targets,
    in_process,
    start_call,
    wait_log,
)
from fakes import FakeOpenAI
from fakes.live import (
    ANSWER_SDP,
    function_call,
    live_call_incoming,
    live_transport_incoming,
    response_completed,
    response_ended,
    transcript_delta,
    usage,
    usage_updated,
)

from navai_core import Navai, NavaiConfig, RequestContext
from navai_core.calls.events import CallSummary
from navai_core.calls.webhooks import webhook_headers

OFFER = BROWSER_OFFER
WEBHOOK_SECRET = "whsec_bmF2YWktdGVzdC13ZWJob29rLXNlY3JldC0zMmJ5dGU="


@pytest.fixture(scope="module")
def fake_live() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=SERVER_KEY) as fake:
        yield fake


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="navai")


def live_env(base: Path, fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "NAVAI_CALL_RUNTIME": "live",
        "NAVAI_UPSTREAM_MAX_RETRIES": "0",
        "NAVAI_UPSTREAM_TIMEOUT": "5",
        "NAVAI_RATE_LIMIT_CALLS": "off",
        "NAVAI_FUNCTIONS_BASE_DIR": str(base),
        "NAVAI_FUNCTIONS_FOLDERS": "functions",
        "NAVAI_BROWSER_EXECUTE": "false",
    }


@pytest.fixture(scope="module")
def live_targets(
    functions_dir: Path,
    fake_upstream: FakeOpenAI,
    fake_live: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Targets]:
    found = Targets(functions_dir, fake_upstream, tmp_path_factory.mktemp("live-servers"))
    env = live_env(functions_dir, fake_live)
    key = {"OPENAI_API_KEY": SERVER_KEY}
    found.setups = {
        "live": Setup("live", env, key),
        "live_short": Setup("live_short", {**env, "NAVAI_CALL_MAX_SECONDS": "0.3"}, key),
    }
    yield found
    found.close()


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, live_targets: Targets, fake_live) -> Target:
    fake_live.reset()
    return live_targets.get("live", request.param)


@pytest.fixture(params=KINDS)
def short_target(request: pytest.FixtureRequest, live_targets: Targets, fake_live) -> Target:
    fake_live.reset()
    return live_targets.get("live_short", request.param)


def test_a_live_call_runs_tools_once_and_asks_for_one_response(
    target: Target, fake_live: FakeOpenAI
) -> None:
    mark = target.log_mark()
    call_id, answer = start_call(
        target, headers={"Content-Type": "application/sdp", "Origin": "http://localhost:5173"}
    )
    # The browser's answer is exactly the Realtime one (section 8).
    assert answer.headers["content-type"].startswith("application/sdp")
    assert answer.text == ANSWER_SDP
    assert call_id.startswith("live_")
    assert answer.headers["location"] == f"/navai/realtime/calls/{call_id}"
    assert answer.headers["access-control-expose-headers"] == "Location"
    # The exact upstream request.
    created = fake_live.requests[0]
    assert (created.method, created.path) == ("POST", "/v1/live/sessions")
    assert created.headers["authorization"] == f"Bearer {SERVER_KEY}"
    body = created.json()
    assert body["transport"] == {"type": "webrtc", "sdp": OFFER}
    session = body["session"]
    assert session["model"] == "gpt-live-1.1" and "tools" not in session
    assert session["client"]["data_channel"]["allowed_client_events"] == []
    backend = session["delegation"]["responses"]
    assert {t["name"] for t in backend["tools"]} == TOOL_NAMES
    # The sideband: /attach with the key, no session.start.
    call = fake_live.call(call_id)
    call.wait_for(lambda c: c.connections == 1)
    assert call.sideband_authorization == [f"Bearer {SERVER_KEY}"]
    call.send(
        function_call("c1", "add", {"a": 2, "b": 40}),
        function_call("c1", "add", {"a": 2, "b": 40}),
        function_call("c2", "async_add", {"a": 1, "b": 1}),
        "garbage {",
    )
    call.wait_for(lambda c: len(c.outputs()) == 2)
    time.sleep(0.2)  # every output is in, the nested response has not completed: no create
    assert call.of_type("response.create") == []
    call.send(response_completed("resp_1", tokens=usage(30, 12)), usage_updated(4))
    call.wait_for(lambda c: len(c.of_type("response.create")) == 1)
    assert call.output_of("c1")["result"] == 42 and call.output_of("c2")["result"] == 2
    assert [e["type"] for e in call.received] == [
        "response.item.create",
        "response.item.create",
        "response.create",
    ]
    # Hang up through navai: Live's /hangup.
    hung = target.http.post(f"/navai/realtime/calls/{call_id}/hangup", json={})
    assert (hung.status_code, hung.json()) == (200, {"ok": True, "call_id": call_id})
    assert call.hangups == 1
    assert fake_live.requests[-1].path == f"/v1/live/sessions/{call_id}/hangup"
    logs = wait_log(target, mark, f"call {call_id} ended (hangup)")
    assert "2 function call(s), 42 tokens" in logs
    again = target.http.post(f"/navai/realtime/calls/{call_id}/hangup", json={})
    assert again.status_code == 404
    assert SERVER_KEY not in logs


def test_a_nested_response_that_fails_gets_no_create(target: Target, fake_live: FakeOpenAI) -> None:
    call_id, _ = start_call(target)
    call = fake_live.call(call_id)
    call.wait_for(lambda c: c.connections == 1)
    call.send(function_call("c1", "add", {"a": 1, "b": 2}), response_ended("resp_1", "failed"))
    call.wait_for(lambda c: len(c.outputs()) == 1)
    time.sleep(0.2)
    assert call.of_type("response.create") == []
    call.end()


def test_openai_closing_the_session_ends_the_call(target: Target, fake_live: FakeOpenAI) -> None:
    mark = target.log_mark()
    call_id, _ = start_call(target, json={"sdp": OFFER, "voice": "cedar"})
    assert fake_live.requests[0].json()["session"]["audio"] == {"output": {"voice": "cedar"}}
    call = fake_live.call(call_id)
    call.wait_for(lambda c: c.connections == 1)
    call.close("remote_hangup", 12)
    wait_log(target, mark, f"call {call_id} ended (ended)")
    assert call.hangups == 0  # OpenAI ended it: navai does not hang up again
    assert target.http.post(f"/navai/realtime/calls/{call_id}/hangup", json={}).status_code == 404


def test_live_errors(target: Target, fake_live: FakeOpenAI) -> None:
    blank = target.http.post("/navai/realtime/calls", json={"sdp": " "})
    assert (blank.status_code, blank.json()) == (400, {"error": "sdp is required."})
    assert fake_live.requests == []
    fake_live.create_status = 400
    fake_live.create_body = b'{"error": {"message": "bad offer"}}'
    failed = target.http.post("/navai/realtime/calls", json={"sdp": OFFER})
    assert failed.status_code == 400
    assert failed.json()["error"] == 'OpenAI Live failed: {"error": {"message": "bad offer"}}'
    fake_live.create_status, fake_live.create_body = 200, b'{"session": {}}'
    missing = target.http.post("/navai/realtime/calls", json={"sdp": OFFER})
    assert missing.status_code == 502 and "session id" in missing.json()["error"]


def test_live_max_seconds(short_target: Target, fake_live: FakeOpenAI) -> None:
    mark = short_target.log_mark()
    call_id, _ = start_call(short_target)
    call = fake_live.call(call_id)
    call.wait_for(lambda c: c.hangups == 1, timeout=10)
    assert f"/v1/live/sessions/{call_id}/hangup" in [r.path for r in fake_live.requests]
    wait_log(short_target, mark, f"call {call_id} ended (max_seconds)")


# ----- in process: summary, budget, phone calls ---------------------------------------------


def live_navai(fake: FakeOpenAI, base: Path, **changes) -> Navai:
    env = {**live_env(base, fake), "OPENAI_API_KEY": SERVER_KEY}
    return Navai(NavaiConfig.from_env(env, **changes))


def start_context(client: str | None = None) -> RequestContext:
    return RequestContext(
        "POST", "/navai/realtime/calls", {"content-type": "application/sdp"}, client=client
    )


def test_the_summary_carries_runtime_close_reason_billed_seconds_and_backend_tokens(
    fake_live: FakeOpenAI, functions_dir: Path
) -> None:
    fake_live.reset()
    summaries: list[CallSummary] = []
    # A price for the backend model (navai ships none for it): USD per 1M tokens.
    prices = functions_dir.parent / "prices.json"
    backend = {"text_input": 1.0, "cached_text_input": 0.1, "text_output": 2.0}
    sources = {"source": "test", "date": "2026-12-07"}
    zeros = {"audio_input": 0.0, "cached_audio_input": 0.0, "audio_output": 0.0}
    prices.write_text(json.dumps({"gpt-5.6-terra": {**backend, **zeros, **sources}}))
    navai = live_navai(
        fake_live, functions_dir, on_call_end=summaries.append, prices_file=str(prices)
    )
    try:
        reply = navai.handle(start_context("10.0.0.9"), OFFER.encode())
        assert reply.status == 201
        call = fake_live.call()
        call.wait_for(lambda c: c.connections == 1)
        call.send(
            transcript_delta("What is one ", "input", 1000),
            transcript_delta("plus two?", "input", 1400),
            function_call("c1", "add", {"a": 1, "b": 2}),
            response_completed("resp_1", tokens=usage(100, 20)),
            transcript_delta("It is three.", "output", 4000),
            usage_updated(30),
        )
        call.wait_for(lambda c: len(c.of_type("response.create")) == 1)
        call.close("remote_hangup", 31.5)
        deadline = time.monotonic() + 10
        while not summaries and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        navai.close()
    [summary] = summaries
    assert summary.call_id == call.call_id and summary.key == "10.0.0.9"
    assert (summary.runtime, summary.end_reason, summary.close_reason) == (
        "live",
        "ended",
        "remote_hangup",
    )
    assert summary.billed_seconds == 31.5
    assert summary.usage["total_tokens"] == 120 and summary.usage["input_tokens"] == 100
    assert summary.function_calls == 1 and summary.session_restored == 0
    # The call record (CONTRACT §12) through the Live runtime: its transcript fragments
    # joined into turns, the tool run, and the cost (per minute plus the backend's tokens,
    # or null with one warning while the backend model has no price).
    assert summary.model == "gpt-live-1.1"
    assert [(t["role"], t["text"]) for t in summary.transcript] == [
        ("user", "What is one plus two?"),
        ("assistant", "It is three."),
    ]
    [tool] = summary.tools
    assert (tool["call_id"], tool["name"], tool["ok"], tool["error"]) == ("c1", "add", True, None)
    # The cost: the billed minutes of the Live model plus the backend model's tokens.
    assert summary.cost_usd is not None and summary.cost_usd > 100 / 1e6 * 1.0 + 20 / 1e6 * 2.0


def test_a_spent_budget_refuses_a_live_call_and_hangs_up_a_running_one(
    fake_live: FakeOpenAI, functions_dir: Path
) -> None:
    fake_live.reset()
    navai = live_navai(fake_live, functions_dir, call_budget="1/hour")
    navai.calls.budget_tick_seconds = 0.05
    try:
        asyncio.run(navai.calls.budgets.acharge("10.0.0.1", 60))
        refused = navai.handle(start_context("10.0.0.1"), OFFER.encode())
        assert refused.status == 429 and fake_live.requests == []
        assert navai.handle(start_context("10.0.0.2"), OFFER.encode()).status == 201
        call = fake_live.call()
        call.wait_for(lambda c: c.connections == 1)
        asyncio.run(navai.calls.budgets.acharge("10.0.0.2", 60))
        call.wait_for(lambda c: c.hangups == 1)
        assert fake_live.requests[-1].path == f"/v1/live/sessions/{call.call_id}/hangup"
    finally:
        navai.close()


def realtime_incoming(call_id: str) -> dict:
    return {
        "object": "event",
        "id": "evt_" + uuid.uuid4().hex,
        "type": "realtime.call.incoming",
        "created_at": int(time.time()),
        "data": {"call_id": call_id, "sip_headers": [{"name": "From", "value": "<sip:+1@x>"}]},
    }


def deliver(http, event: dict):
    body = json.dumps(event).encode()
    signed = webhook_headers(WEBHOOK_SECRET, "wh_" + uuid.uuid4().hex, body)
    return http.post(
        "/navai/realtime/webhook",
        content=body,
        headers={**signed, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("kind", KINDS[:2])
def test_a_phone_call_is_accepted_once_on_live_and_the_realtime_event_is_left_alone(
    kind: str, fake_live: FakeOpenAI, functions_dir: Path
) -> None:
    fake_live.reset()
    navai = live_navai(fake_live, functions_dir, openai_webhook_secret=WEBHOOK_SECRET)
    pending = fake_live.pending_call()
    with in_process(navai, kind) as http:
        # OpenAI announces the pending call on both runtimes, the Live one twice.
        for event in (
            realtime_incoming(pending.call_id),
            live_transport_incoming(pending.call_id),
            live_call_incoming(pending.call_id),
        ):
            assert deliver(http, event).status_code == 200
        pending.wait_for(lambda c: c.connections == 1)
        time.sleep(0.2)
        paths = [r.path for r in fake_live.requests]
        assert paths == [f"/v1/live/sessions/{pending.call_id}/accept"]
        [accepted] = pending.accepted
        session = accepted["session"]
        assert session["type"] == "live" and "client" not in session
        assert {t["name"] for t in session["delegation"]["responses"]["tools"]} == TOOL_NAMES
        pending.send(function_call("c1", "add", {"a": 20, "b": 22}), response_completed("r1"))
        pending.wait_for(lambda c: len(c.of_type("response.create")) == 1)
        assert pending.output_of("c1")["result"] == 42
        pending.end()
    navai.close()


@pytest.mark.parametrize("kind", KINDS[:2])
def test_on_realtime_the_live_announcements_are_left_alone(
    kind: str, fake_live: FakeOpenAI, functions_dir: Path
) -> None:
    fake_live.reset()
    navai = live_navai(
        fake_live, functions_dir, openai_webhook_secret=WEBHOOK_SECRET, call_runtime="realtime"
    )
    pending = fake_live.open_call(call_id="rtc_phone_" + uuid.uuid4().hex[:8])
    with in_process(navai, kind) as http:
        for event in (
            live_transport_incoming(pending.call_id),
            live_call_incoming(pending.call_id),
        ):
            assert deliver(http, event).status_code == 200
        assert deliver(http, realtime_incoming(pending.call_id)).status_code == 200
        pending.wait_for(lambda c: c.connections == 1)
        time.sleep(0.2)
        paths = [r.path for r in fake_live.requests]
        assert paths == [f"/v1/realtime/calls/{pending.call_id}/accept"]
        pending.end()
    navai.close()
