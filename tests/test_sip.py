"""Phone calls, the pure part: the incoming-call event, the hook's verdicts, the caller's
number and the exact /accept, /reject and /refer requests."""

from __future__ import annotations

import json

import pytest

from navai_core import NavaiConfig
from navai_core._errors import BadRequest
from navai_core.calls.sip import (
    BAD_INCOMING_CALL,
    MAX_SIP_HEADERS,
    NOT_AN_EVENT,
    UNKNOWN_CALLER,
    AcceptCall,
    IncomingCall,
    ReferCall,
    RejectCall,
    accept_body,
    budget_key,
    build_verdict_request,
    check_verdict,
    parse_incoming_call,
    parse_webhook_event,
    sip_user,
)
from navai_core.upstream.providers import realtime_target

# The shape OpenAI documents for the event (openai-python's RealtimeCallIncomingWebhookEvent).
EVENT = {
    "object": "event",
    "id": "evt_685343a1381c819085d44c354e1b330e",
    "type": "realtime.call.incoming",
    "created_at": 1750287018,
    "data": {
        "call_id": "rtc_479a275623b54bdb9b6fbae2f7cbd408",
        "sip_headers": [
            {"name": "Max-Forwards", "value": "63"},
            {"name": "CSeq", "value": "851287 INVITE"},
            {"name": "Content-Type", "value": "application/sdp"},
            {"name": "To", "value": "<sip:+142555512112@sip.example.com>"},
            {"name": "From", "value": '"Alice" <sip:+14155550100@sip.example.com>;tag=64eg'},
            {"name": "Call-ID", "value": "call_id_123"},
        ],
    },
}


def incoming(event=EVENT) -> IncomingCall:
    return parse_incoming_call(parse_webhook_event(json.dumps(event).encode()), "wh_1")


def test_parse_incoming_call():
    call = incoming()
    assert call.call_id == "rtc_479a275623b54bdb9b6fbae2f7cbd408"
    assert call.event_id == "evt_685343a1381c819085d44c354e1b330e"
    assert call.webhook_id == "wh_1"
    assert call.sip_headers[0] == ("Max-Forwards", "63")
    assert call.header("from") == '"Alice" <sip:+14155550100@sip.example.com>;tag=64eg'
    assert call.header("X-Missing") is None
    assert call.caller == "+14155550100"
    assert call.callee == "+142555512112"


def test_repeated_headers_and_order_are_kept():
    headers = [{"name": "Via", "value": "a"}, {"name": "via", "value": "b"}]
    call = incoming({**EVENT, "data": {**EVENT["data"], "sip_headers": headers}})
    assert call.header("VIA") == "a"
    assert call.header_values("Via") == ["a", "b"]


def test_untrusted_headers_are_bounded_and_malformed_ones_skipped():
    headers = [
        "not an object",
        {"name": 1, "value": "x"},
        {"name": "", "value": "x"},
        {"name": "X-Long", "value": "v" * 100_000},
        *({"name": f"X-{i}", "value": "1"} for i in range(MAX_SIP_HEADERS * 2)),
    ]
    call = incoming({**EVENT, "data": {**EVENT["data"], "sip_headers": headers}})
    assert len(call.sip_headers) == MAX_SIP_HEADERS
    assert call.sip_headers[0] == ("X-Long", "v" * 4096)
    assert call.caller is None
    no_headers = incoming({**EVENT, "data": {"call_id": "rtc_1"}})
    assert no_headers.sip_headers == ()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"data": {}}',
        b'{"type": 5}',
        b'{"type": "x", "data": NaN',
        b'{"type": "x", "data": NaN}',
        b'{"type": "\\ud800"}',
    ],
)
def test_not_an_event(body):
    with pytest.raises(BadRequest, match=NOT_AN_EVENT):
        parse_webhook_event(body)


@pytest.mark.parametrize(
    "data",
    [{}, {"call_id": ""}, {"call_id": 7}, {"call_id": "rtc_1/../hangup"}, {"call_id": "a b"}],
)
def test_incoming_call_needs_a_safe_call_id(data):
    event = parse_webhook_event(
        json.dumps({"type": "realtime.call.incoming", "data": data}).encode()
    )
    with pytest.raises(BadRequest, match=BAD_INCOMING_CALL):
        parse_incoming_call(event)


def test_other_events_parse():
    event = parse_webhook_event(b'{"type": "batch.completed", "id": "evt_1", "data": 3}')
    assert (event.type, event.event_id, dict(event.data)) == ("batch.completed", "evt_1", {})


@pytest.mark.parametrize(
    ("value", "user"),
    [
        ('"Alice" <sip:+14155550100@sip.example.com>;tag=64eg', "+14155550100"),
        ("<sip:+1 (415) 555-0100@trunk.example;user=phone>;tag=9", "+14155550100"),
        ("<tel:+1-415-555-0100;phone-context=example.com>", "+14155550100"),
        ("tel:+14155550100;tag=1", "+14155550100"),
        ("sip:0044207946000@10.0.0.1:5060;tag=abc", "0044207946000"),
        ("<sips:alice@example.com>", "alice"),
        ("<sip:alice:secret@example.com>", "alice"),
        ("<sip:%2B14155550100@example.com>", "+14155550100"),
        ('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1', "anonymous"),
        ("<http://example.com>", None),
        ("<sip:@example.com>", None),
        ("<sip:a;b=c d@example.com>", "a"),
        ("<sip:" + "1" * 100 + "@example.com>", None),
        ("<sip:al/ice@example.com>", None),
        ("", None),
        (None, None),
    ],
)
def test_sip_user(value, user):
    assert sip_user(value) == user


def test_compact_from_header():
    call = IncomingCall("rtc_1", (("f", "<sip:+15550001111@x>"), ("t", "<sip:100@x>")))
    assert (call.caller, call.callee) == ("+15550001111", "100")


def test_budget_key():
    call = incoming()
    assert budget_key(call, AcceptCall()) == "+14155550100"
    assert budget_key(call, AcceptCall(budget_key="user-42")) == "user-42"
    assert budget_key(IncomingCall("rtc_1", ()), AcceptCall()) == UNKNOWN_CALLER


def test_check_verdict_defaults_and_accepts_valid_verdicts():
    assert check_verdict(None) == AcceptCall()
    for verdict in (
        AcceptCall(session={"instructions": "Hi"}, budget_key="k"),
        RejectCall(),
        RejectCall(486),
        ReferCall("tel:+14155550123"),
        ReferCall("sip:support@example.com"),
    ):
        assert check_verdict(verdict) is verdict
    assert RejectCall().status_code == 603


@pytest.mark.parametrize(
    "verdict",
    [
        True,
        "accept",
        {"accept": True},
        RejectCall(200),
        RejectCall(700),
        RejectCall(True),  # type: ignore[arg-type]
        ReferCall("https://example.com"),
        ReferCall("tel:+1 415"),
        ReferCall("sip:" + "a" * 3000),
        AcceptCall(session={"x": object()}),
        AcceptCall(session={"x": float("nan")}),
        AcceptCall(session={"x": "\ud800"}),  # a lone surrogate: never encodable
        AcceptCall(session=["instructions"]),  # type: ignore[arg-type]
        AcceptCall(budget_key=" "),
        AcceptCall(budget_key="k" * 201),
    ],
)
def test_check_verdict_refuses_bad_values(verdict):
    with pytest.raises(ValueError):
        check_verdict(verdict)


# ----- the upstream requests ------------------------------------------------------------------

CONFIG = NavaiConfig(
    openai_api_key="sk-test-sip", openai_base_url="https://api.example.test/v1", openai_project="p1"
)
SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You are a helpful assistant.",
    "audio": {"output": {"voice": "marin"}},
    "tools": [{"type": "function", "name": "f", "description": "", "parameters": {}}],
}


def test_accept_request_sends_the_session_fields_at_the_top_level():
    request = build_verdict_request(realtime_target(CONFIG), incoming(), AcceptCall(), SESSION)
    assert request.method == "POST"
    assert request.url == (
        "https://api.example.test/v1/realtime/calls/rtc_479a275623b54bdb9b6fbae2f7cbd408/accept"
    )
    headers = dict(request.headers)
    assert headers["Authorization"] == "Bearer sk-test-sip"
    assert headers["OpenAI-Project"] == "p1"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == SESSION
    assert "sk-test-sip" in request.secrets
    assert "sk-test-sip" not in repr(request)


def test_accept_overrides_merge_over_the_session():
    verdict = AcceptCall(
        session={"instructions": "Phone agent.", "audio": {"output": {"speed": 1.1}}, "type": "x"}
    )
    body = accept_body(SESSION, verdict.session)
    assert body["instructions"] == "Phone agent."
    assert body["audio"] == {"output": {"voice": "marin", "speed": 1.1}}
    assert body["type"] == "realtime"
    assert body["tools"] == SESSION["tools"]
    assert SESSION["audio"] == {"output": {"voice": "marin"}}  # not modified


def test_reject_and_refer_requests():
    target = realtime_target(CONFIG)
    reject = build_verdict_request(target, incoming(), RejectCall())
    assert reject.url.endswith("/realtime/calls/rtc_479a275623b54bdb9b6fbae2f7cbd408/reject")
    assert json.loads(reject.content) == {"status_code": 603}
    busy = build_verdict_request(target, incoming(), RejectCall(486))
    assert json.loads(busy.content) == {"status_code": 486}
    refer = build_verdict_request(target, incoming(), ReferCall("tel:+14155550123"))
    assert refer.url.endswith("/refer")
    assert json.loads(refer.content) == {"target_uri": "tel:+14155550123"}
