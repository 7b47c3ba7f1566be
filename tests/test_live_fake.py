"""The fake OpenAI's GPT-Live surface (tests/fakes/live.py) speaks OpenAI's shapes:
openai-python's own Live client drives it, and every event and webhook body it builds
validates against openai-python's strict types. navai's requests are checked against what
openai-python sends for the same operation."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from fakes import Answer, FakeOpenAI
from fakes.live import (
    ANSWER_SDP,
    function_call,
    live_call_incoming,
    live_transport_incoming,
    response_completed,
    response_created,
    response_ended,
    session_closed,
    transcript_delta,
    usage,
    usage_updated,
)
from openai import NotFoundError, OpenAI
from openai.types.live import ConnectClientEvent, ServerEvent
from openai.types.responses import ResponseStreamEvent
from openai.types.webhooks import (
    LiveCallIncomingWebhookEvent,
    LiveTransportIncomingWebhookEvent,
)
from pydantic import TypeAdapter

from navai_core import NavaiConfig
from navai_core.calls.live import (
    build_live_hangup_request,
    build_live_verdict_request,
    live_session,
    live_sideband_url,
    parse_live_call_response,
    plan_live_call,
)
from navai_core.calls.live_sideband import LiveToolLoop, output_event
from navai_core.calls.plans import CallOptions
from navai_core.calls.sideband import RunFunction, SendEvent
from navai_core.calls.sip import AcceptCall, IncomingCall, ReferCall, RejectCall
from navai_core.calls.webhooks import webhook_headers
from navai_core.sessions.client_secret import ClientSecretOptions
from navai_core.upstream.providers import target_for_key

KEY = "sk-live-fake-key"
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=offer\r\n"
SECRET = "whsec_" + "c2VjcmV0LWZvci1saXZlLXRlc3Rz"

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(ServerEvent)
CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(ConnectClientEvent)
NESTED_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
def fake():
    with FakeOpenAI(key=KEY) as server:
        yield server


def _client(fake: FakeOpenAI) -> OpenAI:
    return OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)


def _config(fake: FakeOpenAI) -> NavaiConfig:
    return NavaiConfig(openai_api_key=KEY, openai_base_url=fake.base_url, call_runtime="live")


def test_every_server_event_the_fake_builds_validates_strictly():
    events = [
        function_call("call_1", "lookup", {"q": "x"}),
        response_created("resp_1"),
        response_completed("resp_1"),
        response_ended("resp_2", "failed"),
        response_ended("resp_3", "incomplete", tokens=usage()),
        usage_updated(12),
        session_closed("live_1", "remote_hangup", 30),
        transcript_delta("Hello", "output"),
        transcript_delta("Hi", "input"),
    ]
    for event in events:
        SERVER_EVENT.validate_python(event, strict=True)
        if event["type"] == "response.event":
            NESTED_EVENT.validate_python(event["event"], strict=True)


def test_the_client_events_navai_sends_are_openai_client_events():
    assert CLIENT_EVENT.validate_python(output_event("call_1", '{"ok": true}')).type == (
        "response.item.create"
    )
    loop = LiveToolLoop()
    loop.feed(function_call("call_1", "lookup", {}))
    loop.feed(response_completed("resp_1"))
    [_, create] = loop.output_ready("call_1", "{}")
    assert CLIENT_EVENT.validate_python(create.event).type == "response.create"  # type: ignore[union-attr]


def test_webhook_bodies_validate_and_unwrap_with_openai_python():
    for build, model in (
        (live_transport_incoming, LiveTransportIncomingWebhookEvent),
        (live_call_incoming, LiveCallIncomingWebhookEvent),
    ):
        body = build("live_abc")
        model.model_validate(body, strict=True)
        raw = json.dumps(body).encode()
        headers = webhook_headers(SECRET, "wh_1", raw)
        unwrapped = OpenAI(api_key=KEY, webhook_secret=SECRET).webhooks.unwrap(raw, headers)
        assert isinstance(unwrapped, model)
        assert unwrapped.data.session_id == "live_abc"
    assert "type" not in live_call_incoming("live_abc")["data"]  # the deprecated twin has none


def test_openai_python_creates_a_session_and_navai_sends_the_same_request(fake):
    session = {
        "model": "gpt-live-1.1",
        "instructions": "Hi.",
        "audio": {"output": {"voice": "marin"}},
    }
    created = _client(fake).live.create(session=session, transport={"type": "webrtc", "sdp": OFFER})
    assert created.session.id.startswith("live_") and created.transport.sdp == ANSWER_SDP
    sdk = fake.requests[-1]
    assert fake.call(created.session.id).session == session

    config = _config(fake)
    plan = plan_live_call(config, CallOptions(sdp=OFFER))
    reply = httpx2.post(
        plan.request.url, content=plan.request.content, headers=plan.request.headers
    )
    ours = fake.requests[-1]
    assert ours.path == sdk.path == "/v1/live/sessions"
    assert set(ours.json()) == set(sdk.json()) == {"session", "transport"}
    assert ours.json()["transport"] == sdk.json()["transport"]
    assert ours.headers["authorization"] == sdk.headers["authorization"] == f"Bearer {KEY}"
    answer = parse_live_call_response(plan.request, reply.status_code, reply.content, reply.headers)
    assert answer.sdp == ANSWER_SDP
    live = fake.call(answer.call_id)
    assert live.session == live_session(config, ClientSecretOptions())
    assert live.sdp == OFFER


def test_control_requests_match_openai_python(fake):
    target = target_for_key(_config(fake), KEY)
    sdk = _client(fake).live.sessions
    accepted = {"type": "live", "model": "gpt-live-1.1", "instructions": "Hi."}
    cases = [
        (
            lambda sid: sdk.accept(sid, session=accepted),  # type: ignore[arg-type]
            lambda sid: build_live_verdict_request(
                target,
                IncomingCall(sid, ()),
                AcceptCall(),
                {"model": "gpt-live-1.1", "instructions": "Hi.", "client": {}},
            ),
        ),
        (
            lambda sid: sdk.refer(sid, target_uri="tel:+14155550123"),
            lambda sid: build_live_verdict_request(
                target, IncomingCall(sid, ()), ReferCall("tel:+14155550123")
            ),
        ),
        (
            lambda sid: sdk.reject(sid, status_code=486),
            lambda sid: build_live_verdict_request(target, IncomingCall(sid, ()), RejectCall(486)),
        ),
        (lambda sid: sdk.hangup(sid), lambda sid: build_live_hangup_request(target, sid)),
    ]
    for by_sdk, by_navai in cases:
        first, second = fake.pending_call(), fake.pending_call()
        by_sdk(first.call_id)
        sdk_request = fake.requests[-1]
        request = by_navai(second.call_id)
        reply = httpx2.post(request.url, content=request.content, headers=request.headers)
        assert reply.status_code == 200, reply.text
        ours = fake.requests[-1]
        assert ours.path == sdk_request.path.replace(first.call_id, second.call_id)
        assert ours.json() == sdk_request.json()
    assert first.hangups == second.hangups == 1 and second.ended


def test_scripted_replies_and_unknown_sessions(fake):
    client = _client(fake)
    with pytest.raises(NotFoundError):
        client.live.sessions.hangup("live_nobody")
    fake.answer(Answer.json(500, {"error": {"message": "boom"}}))
    plan = plan_live_call(_config(fake), CallOptions(sdp=OFFER))
    reply = httpx2.post(
        plan.request.url, content=plan.request.content, headers=plan.request.headers
    )
    assert reply.status_code == 500
    with pytest.raises(Exception, match="OpenAI Live failed") as caught:
        parse_live_call_response(plan.request, reply.status_code, reply.content, reply.headers)
    assert KEY not in str(caught.value)


def test_openai_python_sideband_attaches_where_navai_does_and_plays_the_script(fake):
    created = _client(fake).live.create(
        session={"model": "gpt-live-1.1"}, transport={"type": "webrtc", "sdp": OFFER}
    )
    live = fake.call(created.session.id)
    target = target_for_key(_config(fake), KEY)
    url = live_sideband_url(target, live.call_id)
    assert url == f"ws://127.0.0.1:{fake.port}/v1/live/sessions/{live.call_id}/attach"
    live.send(
        transcript_delta("Let me check."),
        function_call("call_1", "lookup", {"q": "x"}),
        response_completed("resp_1"),
        usage_updated(3),
    )
    loop = LiveToolLoop()
    seen = []
    with _client(fake).live.sideband.connect(session_id=live.call_id) as connection:
        for _ in range(4):
            event = connection.recv()
            seen.append(event.type)
            steps = loop.feed(event.to_dict())
            while steps:
                action = steps.pop(0)
                if isinstance(action, RunFunction):
                    assert (action.call_id, action.name) == ("call_1", "lookup")
                    steps += loop.output_ready(action.call_id, '{"ok": true}')
                elif isinstance(action, SendEvent):
                    connection.send(action.event)  # type: ignore[arg-type]
        live.wait_for(lambda s: len(s.received) == 2)
        live.close("remote_hangup", 7)
        closed = connection.recv()
        assert closed.type == "session.closed"
        loop.feed(closed.to_dict())
    assert seen == [
        "session.output_transcript.delta",
        "response.event",
        "response.event",
        "session.usage.updated",
    ]
    assert [e["type"] for e in live.received] == ["response.item.create", "response.create"]
    assert live.sideband_authorization == [f"Bearer {KEY}"]
    assert (loop.close_reason, loop.seconds, loop.usage["total_tokens"]) == (
        "remote_hangup",
        7.0,
        15,
    )
