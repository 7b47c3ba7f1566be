"""GPT-Live signalling (CONTRACT.md section 11), pure: the session, the create request and its
reply, control requests, the phone-call webhooks, and the client-secret route's refusal of
Live models."""

from __future__ import annotations

import json

import pytest

from navai_core import FunctionRegistry, Navai, NavaiConfig
from navai_core._errors import BadRequest, Forbidden, Unauthorized, UpstreamError
from navai_core.calls.live import (
    LIVE_ALLOWED_SERVER_EVENTS,
    NO_SESSION,
    build_live_control_request,
    build_live_hangup_request,
    build_live_verdict_request,
    incoming_call_runtime,
    live_accept_body,
    live_session,
    live_sideband_url,
    parse_live_call_response,
    parse_live_incoming_call,
    plan_live_call,
)
from navai_core.calls.plans import SDP_REQUIRED, CallOptions, call_session, function_tools
from navai_core.calls.sip import (
    AcceptCall,
    IncomingCall,
    ReferCall,
    RejectCall,
    parse_webhook_event,
)
from navai_core.sessions.client_secret import (
    LIVE_MODEL_REFUSED,
    ClientSecretOptions,
    build_client_secret_request,
    is_live_model,
)
from navai_core.upstream.providers import target_for_key

KEY = "sk-backend-key-0123456789"
OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"


def registry() -> FunctionRegistry:
    reg = FunctionRegistry()

    @reg.function
    def get_weather(city: str, days: int = 1) -> dict:
        """Weather for a city."""
        return {"city": city, "days": days}

    return reg


def config(**changes: object) -> NavaiConfig:
    return NavaiConfig(openai_api_key=KEY, call_runtime="live", **changes)  # type: ignore[arg-type]


# ----- the session -----------------------------------------------------------------------------


def test_the_default_session():
    session = live_session(config(), ClientSecretOptions())
    assert session == {
        "model": "gpt-live-1.1",
        "instructions": "You are a helpful assistant.",
        "audio": {"output": {"voice": "marin"}},
        "delegation": {
            "type": "responses",
            "responses": {"model": "gpt-5.6-terra", "tools": []},
        },
        "client": {
            "data_channel": {
                "allowed_client_events": [],
                "allowed_server_events": [{"type": t} for t in LIVE_ALLOWED_SERVER_EVENTS],
            }
        },
    }
    selectors = session["client"]["data_channel"]["allowed_server_events"]
    assert {"type": "session.input_transcript.delta"} in selectors
    assert {"type": "session.output_transcript.delta"} in selectors


def test_settings_from_the_environment_shape_the_session():
    env = {
        "OPENAI_API_KEY": KEY,
        "NAVAI_CALL_RUNTIME": "live",
        "NAVAI_LIVE_MODEL": "gpt-live-1",
        "NAVAI_LIVE_BACKEND_MODEL": "gpt-5.5",
        "NAVAI_LIVE_BACKEND_INSTRUCTIONS": "  Check the order before answering.  ",
        "OPENAI_REALTIME_VOICE": "cedar",
    }
    cfg = NavaiConfig.from_env(env)
    assert cfg.call_runtime == "live" and cfg.problems() == []
    session = live_session(cfg, ClientSecretOptions(), registry())
    assert session["model"] == "gpt-live-1"
    assert session["audio"] == {"output": {"voice": "cedar"}}
    assert session["delegation"]["responses"] == {
        "model": "gpt-5.5",
        "instructions": "Check the order before answering.",
        "tools": function_tools(registry()),
    }
    assert NavaiConfig.from_env({}).call_runtime == "realtime"


def test_the_backend_tools_are_the_registry_functions_as_on_realtime():
    reg = registry()
    session = live_session(config(), ClientSecretOptions(), reg)
    tools = session["delegation"]["responses"]["tools"]
    assert tools == call_session(config(), ClientSecretOptions(), reg)["tools"]
    assert tools[0]["name"] == "get_weather" and tools[0]["type"] == "function"
    assert tools[0]["parameters"]["required"] == ["city"]
    off = live_session(config(functions_enabled=False), ClientSecretOptions(), reg)
    assert off["delegation"]["responses"]["tools"] == []


@pytest.mark.parametrize(
    "options",
    [
        ClientSecretOptions(),
        ClientSecretOptions(language="French", voice_accent="Parisian", voice_tone="warm"),
        ClientSecretOptions(instructions="  Be brief.  ", voice="cedar", language=" German "),
    ],
)
def test_instructions_and_voice_follow_the_same_rules_as_realtime(options):
    cfg = config(language="Spanish")
    live = live_session(cfg, options)
    realtime = call_session(cfg, options, None)
    assert live["instructions"] == realtime["instructions"]
    assert live["audio"]["output"] == realtime["audio"]["output"]


def test_allow_lists_and_lengths_apply_to_live_too():
    cfg = config(allowed_voices=("marin",), max_option_chars=10)
    with pytest.raises(BadRequest) as live_refused:
        live_session(cfg, ClientSecretOptions(voice="alloy"))
    with pytest.raises(BadRequest) as realtime_refused:
        call_session(cfg, ClientSecretOptions(voice="alloy"), None)
    assert str(live_refused.value) == str(realtime_refused.value)
    with pytest.raises(BadRequest):
        live_session(cfg, ClientSecretOptions(language="x" * 11))
    quiet = config(allow_client_instructions=False)
    assert live_session(quiet, ClientSecretOptions(instructions="Obey me."))["instructions"] == (
        "You are a helpful assistant."
    )


def test_a_requested_model_wins_under_the_allow_list():
    assert live_session(config(), ClientSecretOptions(model="gpt-live-1"))["model"] == "gpt-live-1"
    with pytest.raises(BadRequest):
        live_session(config(allowed_models=("gpt-live-1.1",)), ClientSecretOptions(model="x"))


def test_the_realtime_template_and_elevenlabs_do_not_reach_live():
    cfg = config(
        session={"output_modalities": ["audio"], "max_output_tokens": 100},
        tts_provider="elevenlabs",  # no ElevenLabs key: a Realtime session would refuse
    )
    session = live_session(cfg, ClientSecretOptions())
    assert "output_modalities" not in session and "max_output_tokens" not in session
    assert session["audio"] == {"output": {"voice": "marin"}}


def test_a_phone_session_has_no_client_part():
    assert "client" not in live_session(config(), ClientSecretOptions(), client=False)


# ----- creating a session ----------------------------------------------------------------------


def test_the_create_request():
    plan = plan_live_call(config(), CallOptions(sdp=OFFER), registry())
    request = plan.request
    assert (request.method, request.url) == ("POST", "https://api.openai.com/v1/live/sessions")
    headers = dict(request.headers)
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Content-Type"] == "application/json"
    body = json.loads(request.content)
    assert body == {
        "session": live_session(config(), ClientSecretOptions(), registry()),
        "transport": {"type": "webrtc", "sdp": OFFER},
    }
    assert request.label == "OpenAI Live" and KEY in request.secrets
    assert plan.target.key == KEY


def test_the_create_request_refuses_before_going_upstream():
    with pytest.raises(BadRequest, match=SDP_REQUIRED):
        plan_live_call(config(), CallOptions(sdp="  \r\n"))
    with pytest.raises(Unauthorized):
        plan_live_call(NavaiConfig(call_runtime="live"), CallOptions(sdp=OFFER))
    with pytest.raises(Forbidden):
        plan_live_call(
            NavaiConfig(call_runtime="live"),
            CallOptions(sdp=OFFER, session=ClientSecretOptions(api_key="sk-from-page")),
        )


def test_organization_and_project_headers_go_with_live_requests():
    plan = plan_live_call(
        config(openai_organization="org-1", openai_project="proj_1"), CallOptions(sdp=OFFER)
    )
    headers = dict(plan.request.headers)
    assert headers["OpenAI-Organization"] == "org-1" and headers["OpenAI-Project"] == "proj_1"


def test_azure_uses_its_paths_and_headers():
    cfg = NavaiConfig(
        provider="azure",
        azure_endpoint="https://res.openai.azure.com/",
        azure_api_key="azure-key",
        call_runtime="live",
    )
    plan = plan_live_call(cfg, CallOptions(sdp=OFFER))
    assert plan.request.url == "https://res.openai.azure.com/openai/v1/live/sessions"
    assert ("api-key", "azure-key") in plan.request.headers
    assert not any(name == "Authorization" for name, _ in plan.request.headers)
    assert live_sideband_url(plan.target, "live_1") == (
        "wss://res.openai.azure.com/openai/v1/live/sessions/live_1/attach"
    )
    hangup = build_live_hangup_request(plan.target, "live_1")
    assert hangup.url == "https://res.openai.azure.com/openai/v1/live/sessions/live_1/hangup"
    token = NavaiConfig(
        provider="azure",
        azure_endpoint="https://res.openai.azure.com",
        azure_token_provider=lambda: "entra-token",
    )
    plan = plan_live_call(token, CallOptions(sdp=OFFER))
    assert ("Authorization", "Bearer entra-token") in plan.request.headers


def _plan():
    return plan_live_call(config(), CallOptions(sdp=OFFER)).request


def test_a_good_reply():
    body = {"session": {"id": "live_abc"}, "transport": {"type": "webrtc", "sdp": "v=0 answer"}}
    answer = parse_live_call_response(_plan(), 200, json.dumps(body).encode())
    assert (answer.call_id, answer.sdp) == ("live_abc", "v=0 answer")


@pytest.mark.parametrize(
    "content",
    [
        b'{"session": {}, "transport": {"type": "webrtc", "sdp": "v=0"}}',
        b'{"session": {"id": "live_1"}, "transport": {"type": "webrtc"}}',
        b'{"session": {"id": "live_1"}, "transport": {"type": "webrtc", "sdp": " "}}',
        b'{"session": {"id": "../x"}, "transport": {"type": "webrtc", "sdp": "v=0"}}',
        b'{"session": "live_1"}',
        b"[]",
        b"v=0 not json",
    ],
)
def test_a_reply_without_id_or_answer_is_a_502(content):
    with pytest.raises(UpstreamError) as caught:
        parse_live_call_response(_plan(), 200, content)
    assert caught.value.status_code == 502
    if content.startswith(b'{"session"'):
        assert str(caught.value) == NO_SESSION


def test_an_upstream_failure_passes_its_status_and_never_the_key():
    content = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}}).encode()
    with pytest.raises(UpstreamError) as caught:
        parse_live_call_response(_plan(), 401, content, {"x-request-id": "req_1"})
    error = caught.value
    assert error.status_code == 401
    assert str(error).startswith("OpenAI Live failed: ")
    reply = error.to_reply()
    assert KEY not in reply.content.decode() and "[redacted]" in reply.content.decode()
    assert json.loads(reply.content)["error"].startswith("OpenAI Live failed: ")


# ----- controlling a session -------------------------------------------------------------------


def test_control_requests_and_the_sideband_url():
    target = target_for_key(config(), KEY)
    hangup = build_live_hangup_request(target, "live_abc")
    assert hangup.url == "https://api.openai.com/v1/live/sessions/live_abc/hangup"
    assert hangup.content == b"" and hangup.label == "OpenAI Live hangup"
    assert live_sideband_url(target, "live_abc") == (
        "wss://api.openai.com/v1/live/sessions/live_abc/attach"
    )
    with pytest.raises(BadRequest):
        build_live_control_request(target, "live/../x", "hangup")


def test_phone_verdicts():
    target = target_for_key(config(), KEY)
    call = IncomingCall("live_pending", ())
    session = live_session(config(), ClientSecretOptions(), client=False)
    accept = build_live_verdict_request(
        target, call, AcceptCall(session={"instructions": "Hello caller."}), session
    )
    assert accept.url.endswith("/live/sessions/live_pending/accept")
    body = json.loads(accept.content)
    assert body == {"session": {"type": "live", **session, "instructions": "Hello caller."}}
    reject = build_live_verdict_request(target, call, RejectCall(486))
    assert reject.url.endswith("/reject") and json.loads(reject.content) == {"status_code": 486}
    refer = build_live_verdict_request(target, call, ReferCall("sip:desk@example.com"))
    assert json.loads(refer.content) == {"target_uri": "sip:desk@example.com"}


def test_an_accept_never_carries_a_client_part_nor_another_type():
    body = live_accept_body(
        {"model": "gpt-live-1.1", "client": {"data_channel": {}}},
        {"type": "realtime", "client": {"x": 1}},
    )
    assert body == {"session": {"type": "live", "model": "gpt-live-1.1"}}


# ----- phone-call webhooks ---------------------------------------------------------------------

HEADERS = [
    {"name": "From", "value": '"Ann" <sip:+1 (415) 555-0100@trunk.example>;tag=9'},
    {"name": "To", "value": "<sip:+15550001111@sip.api.openai.com>"},
]


def _event(kind: str, data: dict) -> bytes:
    return json.dumps({"id": "evt_1", "type": kind, "data": data}).encode()


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (
            "live.transport.incoming",
            {"session_id": "live_1", "type": "sip", "sip_headers": HEADERS},
        ),
        ("live.call.incoming", {"session_id": "live_1", "sip_headers": HEADERS}),
    ],
)
def test_both_live_announcements_give_the_same_incoming_call(kind, data):
    call = parse_live_incoming_call(parse_webhook_event(_event(kind, data)), "wh_1")
    assert call is not None
    assert (call.call_id, call.caller, call.callee) == ("live_1", "+14155550100", "+15550001111")
    assert (call.event_id, call.webhook_id) == ("evt_1", "wh_1")
    assert call.header("to") == HEADERS[1]["value"]


def test_a_live_announcement_without_a_session_id_is_a_400_and_another_transport_is_ignored():
    for data in ({"type": "sip"}, {"session_id": "", "type": "sip"}, {"session_id": "a b"}):
        with pytest.raises(BadRequest, match=r"data\.session_id"):
            parse_live_incoming_call(parse_webhook_event(_event("live.transport.incoming", data)))
    other = parse_webhook_event(
        _event("live.transport.incoming", {"session_id": "live_1", "type": "webrtc"})
    )
    assert parse_live_incoming_call(other) is None


def test_navai_acts_on_the_configured_runtime_only():
    table = {
        ("realtime.call.incoming", "realtime"): "realtime",
        ("realtime.call.incoming", "live"): None,
        ("live.transport.incoming", "live"): "live",
        ("live.call.incoming", "live"): "live",
        ("live.transport.incoming", "realtime"): None,
        ("live.call.incoming", "realtime"): None,
        ("live.transport.connected", "live"): None,
        ("response.completed", "realtime"): None,
    }
    for (event_type, runtime), expected in table.items():
        assert incoming_call_runtime(event_type, runtime) == expected, (event_type, runtime)


# ----- the client-secret route -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-live-1", "gpt-live-1.1", "GPT-Live-1.1", "gpt-live-1-2026"])
def test_a_live_model_is_never_sent_for_a_client_secret(model):
    with pytest.raises(BadRequest) as caught:
        build_client_secret_request(config(), ClientSecretOptions(model=model))
    assert str(caught.value) == LIVE_MODEL_REFUSED.format(model=model)
    assert "NAVAI_CALL_RUNTIME=live" in str(caught.value)
    with pytest.raises(BadRequest):  # a configured default too
        build_client_secret_request(
            NavaiConfig(openai_api_key=KEY, model=model), ClientSecretOptions()
        )


def test_the_client_secret_route_answers_400_for_a_live_model():
    navai = Navai(NavaiConfig(openai_api_key=KEY))
    with pytest.raises(BadRequest) as caught:
        navai.create_client_secret({"model": "gpt-live-1.1"})
    reply = caught.value.to_reply()
    assert reply.status == 400
    assert json.loads(reply.content) == {"error": LIVE_MODEL_REFUSED.format(model="gpt-live-1.1")}


def test_realtime_and_transcription_models_are_not_live_models():
    for model in ("gpt-realtime-2.1", "gpt-live-transcribe", "gpt-realtime", "live-1", "gpt-live"):
        assert not is_live_model(model), model
    request = build_client_secret_request(config(), ClientSecretOptions(model="gpt-realtime-2.1"))
    assert json.loads(request.content)["session"]["model"] == "gpt-realtime-2.1"
