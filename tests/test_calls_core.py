"""The pure parts of server-controlled calls: the call request, its reply, call control,
the sideband's tool loop and the budget arithmetic. No sockets, no mocks."""

from __future__ import annotations

import json

import pytest

from navai_core import FunctionRegistry, NavaiConfig
from navai_core._errors import BadRequest, ConfigurationError, Forbidden, NavaiError, Unauthorized
from navai_core.calls.plans import (
    SDP_REQUIRED,
    CallOptions,
    build_call_request,
    build_hangup_request,
    parse_call_body,
    parse_call_offer,
    parse_call_response,
    plan_call,
    sideband_url,
    valid_call_id,
)
from navai_core.calls.sideband import RunFunction, SendEvent, ToolLoop, add_usage, execute_body
from navai_core.limits.budget import CallBudget, budget_spent
from navai_core.sessions.client_secret import ClientSecretOptions, build_client_secret_request
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
    return NavaiConfig(openai_api_key=KEY, **changes)  # type: ignore[arg-type]


def parts(request_body: bytes, boundary: str) -> dict[str, tuple[str, bytes]]:
    """Parse a multipart body strictly: name -> (content type, bytes)."""
    marker = f"--{boundary}".encode()
    assert request_body.endswith(marker + b"--\r\n")
    found = {}
    for chunk in request_body.split(marker)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, data = chunk[2:-2].partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        name = lines[0].split('name="')[1].rstrip('"')
        found[name] = (lines[1].split(": ")[1], data)
    return found


# ----- the call request ---------------------------------------------------------------------


def test_exact_multipart_request() -> None:
    request = build_call_request(config(), CallOptions(sdp=OFFER), registry(), boundary="b0undary")
    assert request.method == "POST"
    assert request.url == "https://api.openai.com/v1/realtime/calls"
    assert dict(request.headers) == {
        "Authorization": f"Bearer {KEY}",
        "Accept": "application/sdp",
        "Content-Type": "multipart/form-data; boundary=b0undary",
    }
    session = {
        "type": "realtime",
        "model": NavaiConfig().model,
        "instructions": "You are a helpful assistant.",
        # The caller's words, for the call record (CONTRACT section 12).
        "audio": {
            "output": {"voice": "marin"},
            "input": {"transcription": {"model": NavaiConfig().transcription_model}},
        },
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": registry().get("get_weather").parameters,  # type: ignore[union-attr]
            }
        ],
    }
    expected = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="sdp"\r\n'
        b"Content-Type: application/sdp\r\n\r\n" + OFFER.encode() + b"\r\n"
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="session"\r\n'
        b"Content-Type: application/json\r\n\r\n"
        + json.dumps(session, separators=(",", ":")).encode()
        + b"\r\n--b0undary--\r\n"
    )
    assert request.content == expected
    assert request.label == "OpenAI calls"


def test_call_session_is_the_client_secret_session_plus_tools() -> None:
    """One copy of every rule: defaults, instruction lines, template, speech provider."""
    cases = [
        (config(), ClientSecretOptions(language="Spanish", voice_tone="warm")),
        (config(session={"max_output_tokens": 200}), ClientSecretOptions(voice="cedar")),
        (
            config(tts_provider="elevenlabs", elevenlabs_api_key="xi-key-0123456789"),
            ClientSecretOptions(instructions="Be brief.", voice_accent="Irish"),
        ),
    ]
    for cfg, options in cases:
        secret = json.loads(build_client_secret_request(cfg, options).content)["session"]
        request = build_call_request(
            cfg, CallOptions(sdp=OFFER, session=options), None, boundary="b"
        )
        call = json.loads(parts(request.content, "b")["session"][1])
        # The call also asks for input transcription (its record's user turns, section 12).
        heard = call["audio"].pop("input")
        assert heard == {"transcription": {"model": cfg.transcription_model}}
        secret.setdefault("audio", {})
        assert call == secret


def test_tools_only_with_function_routes_and_after_template_tools() -> None:
    mcp = {"type": "mcp", "server_label": "x", "server_url": "https://mcp.example.com"}
    request = build_call_request(
        config(session={"tools": [mcp]}), CallOptions(sdp=OFFER), registry(), boundary="b"
    )
    tools = json.loads(parts(request.content, "b")["session"][1])["tools"]
    assert [t["type"] for t in tools] == ["mcp", "function"]
    off = build_call_request(
        config(functions_enabled=False), CallOptions(sdp=OFFER), registry(), boundary="b"
    )
    assert "tools" not in json.loads(parts(off.content, "b")["session"][1])


@pytest.mark.parametrize("sdp", ["", "   \r\n"])
def test_blank_offer_is_400_before_anything_else(sdp: str) -> None:
    with pytest.raises(BadRequest, match=SDP_REQUIRED):
        build_call_request(NavaiConfig(), CallOptions(sdp=sdp))  # no key configured either


def test_key_policy_and_allow_lists_apply() -> None:
    with pytest.raises(Unauthorized):
        build_call_request(NavaiConfig(), CallOptions(sdp=OFFER))
    with pytest.raises(Forbidden):
        build_call_request(
            NavaiConfig(), CallOptions(sdp=OFFER, session=ClientSecretOptions(api_key="sk-r"))
        )
    allowed = NavaiConfig(allow_api_key_from_request=True)
    plan = plan_call(allowed, CallOptions(sdp=OFFER, session=ClientSecretOptions(api_key=" sk-r ")))
    assert plan.target.key == "sk-r"
    assert ("Authorization", "Bearer sk-r") in plan.request.headers
    with pytest.raises(BadRequest, match='"voice" must be one of'):
        build_call_request(
            config(allowed_voices=("marin",)),
            CallOptions(sdp=OFFER, session=ClientSecretOptions(voice="cedar")),
        )
    with pytest.raises(ConfigurationError):
        build_call_request(config(session={"type": "transcription"}), CallOptions(sdp=OFFER))


def test_call_bodies() -> None:
    options = parse_call_body({"sdp": OFFER, "voice": "cedar", "voiceTone": "calm", "x": 1})
    assert options.sdp == OFFER
    assert options.session == ClientSecretOptions(voice="cedar", voice_tone="calm")
    assert parse_call_body(None).sdp == ""
    with pytest.raises(BadRequest, match='"sdp" must be a string'):
        parse_call_body({"sdp": 5})
    assert parse_call_offer(OFFER.encode()) == CallOptions(sdp=OFFER)
    with pytest.raises(BadRequest):
        parse_call_offer(b"\xff\xfe")


def test_no_key_in_repr() -> None:
    plan = plan_call(config(), CallOptions(sdp=OFFER))
    assert KEY not in repr(plan)
    assert KEY not in repr(plan.target)


# ----- the reply ------------------------------------------------------------------------------


def request():
    return build_call_request(config(), CallOptions(sdp=OFFER))


def test_reply_with_location() -> None:
    answer = parse_call_response(
        request(), 201, b"v=0 answer", {"Location": "/v1/realtime/calls/rtc_abc123"}
    )
    assert (answer.call_id, answer.sdp) == ("rtc_abc123", "v=0 answer")
    absolute = parse_call_response(
        request(), 201, b"x", {"location": "https://api.openai.com/v1/realtime/calls/rtc_9/"}
    )
    assert absolute.call_id == "rtc_9"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Location": ""},
        {"Location": "/v1/realtime/calls/"},
        {"Location": "/v1/other/rtc_1"},
        {"Location": "/v1/realtime/calls/rtc 1"},
        {"Location": "/v1/realtime/calls/../x"},
    ],
)
def test_reply_without_call_id_is_502(headers: dict[str, str]) -> None:
    with pytest.raises(NavaiError) as caught:
        parse_call_response(request(), 201, b"v=0", headers)
    assert caught.value.status_code == 502


def test_upstream_error_passes_status_and_body_without_key() -> None:
    with pytest.raises(NavaiError) as caught:
        parse_call_response(request(), 400, f'{{"error": "bad {KEY}"}}'.encode(), {})
    assert caught.value.status_code == 400
    assert caught.value.message.startswith("OpenAI calls failed: ")
    assert KEY not in caught.value.message


# ----- call control ---------------------------------------------------------------------------


def test_hangup_and_sideband_addresses() -> None:
    target = target_for_key(config(openai_base_url="http://127.0.0.1:9/v1"), KEY)
    hangup = build_hangup_request(target, "rtc_1")
    assert (hangup.method, hangup.url, hangup.content) == (
        "POST",
        "http://127.0.0.1:9/v1/realtime/calls/rtc_1/hangup",
        b"",
    )
    assert ("Authorization", f"Bearer {KEY}") in hangup.headers
    assert sideband_url(target, "rtc_1") == "ws://127.0.0.1:9/v1/realtime?call_id=rtc_1"
    secure = target_for_key(config(), KEY)
    assert sideband_url(secure, "rtc_1") == "wss://api.openai.com/v1/realtime?call_id=rtc_1"
    with pytest.raises(BadRequest):
        build_hangup_request(target, "../secrets")


# ----- the tool loop --------------------------------------------------------------------------


def args_done(call_id: str, name: str = "get_weather", response: str = "resp_1", args: str = "{}"):
    return {
        "type": "response.function_call_arguments.done",
        "response_id": response,
        "call_id": call_id,
        "name": name,
        "arguments": args,
    }


def response_done(response: str, status: str = "completed", calls=(), usage=None):
    output = [{"type": "message", "role": "assistant"}] + [
        {"type": "function_call", "call_id": c, "name": "get_weather", "arguments": "{}"}
        for c in calls
    ]
    body = {"id": response, "status": status, "output": output}
    if usage is not None:
        body["usage"] = usage
    return {"type": "response.done", "response": body}


def creates(actions) -> int:
    return sum(
        1 for a in actions if isinstance(a, SendEvent) and a.event == {"type": "response.create"}
    )


def test_each_call_id_runs_once_and_one_create_after_all_outputs() -> None:
    loop = ToolLoop()
    first = loop.feed(args_done("c1", args='{"city": "Oslo"}'))
    assert first == [RunFunction("c1", "get_weather", '{"city": "Oslo"}', "resp_1")]
    assert loop.feed(args_done("c1")) == []  # duplicate
    assert loop.feed(args_done("c2")) == [RunFunction("c2", "get_weather", "{}", "resp_1")]
    # response.done lists c1, c2 (already running) and c3 (only announced here).
    done = loop.feed(response_done("resp_1", calls=("c1", "c2", "c3")))
    assert done == [RunFunction("c3", "get_weather", "{}", "resp_1")]
    out1 = loop.output_ready("c1", '{"ok":true}')
    assert out1 == [
        SendEvent(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "c1", "output": '{"ok":true}'},
            }
        )
    ]
    assert creates(loop.output_ready("c3", "{}")) == 0
    last = loop.output_ready("c2", "{}")
    assert creates(last) == 1 and isinstance(last[0], SendEvent)
    assert last[0].event["type"] == "conversation.item.create"  # output first, then create
    assert loop.feed(response_done("resp_1", calls=("c1", "c2", "c3"))) == []  # repeated
    assert (loop.function_calls, loop.responses_created, loop.running) == (3, 1, 0)


def test_create_waits_for_response_done() -> None:
    loop = ToolLoop()
    loop.feed(args_done("c1"))
    assert creates(loop.output_ready("c1", "{}")) == 0
    assert creates(loop.feed(response_done("resp_1", calls=("c1",)))) == 1


def test_response_without_function_calls_asks_nothing() -> None:
    loop = ToolLoop()
    assert loop.feed(response_done("resp_1")) == []


@pytest.mark.parametrize("status", ["cancelled", "incomplete", "failed"])
def test_interrupted_response(status: str) -> None:
    loop = ToolLoop()
    assert len(loop.feed(args_done("c1"))) == 1
    # c2 was only listed by the interrupted response: never run, even if announced later.
    assert loop.feed(response_done("resp_1", status, calls=("c1", "c2"))) == []
    assert loop.feed(args_done("c2")) == []
    sent = loop.output_ready("c1", "{}")
    assert len(sent) == 1 and creates(sent) == 0  # the output is still sent
    assert loop.function_calls == 1


def test_responses_are_independent() -> None:
    loop = ToolLoop()
    loop.feed(args_done("a", response="r1"))
    loop.feed(args_done("b", response="r2"))
    loop.feed(response_done("r1", calls=("a",)))
    loop.feed(response_done("r2", "cancelled", calls=("b",)))
    assert creates(loop.output_ready("b", "{}")) == 0
    assert creates(loop.output_ready("a", "{}")) == 1


@pytest.mark.parametrize(
    "event",
    [
        None,
        5,
        "x",
        [],
        {},
        {"type": 3},
        {"type": "session.updated"},
        {"type": "response.function_call_arguments.done"},
        {"type": "response.function_call_arguments.done", "call_id": 1, "name": "x"},
        {"type": "response.function_call_arguments.done", "call_id": "", "name": "x"},
        {"type": "response.done"},
        {"type": "response.done", "response": "x"},
        {"type": "response.done", "response": {"output": "x", "usage": [1]}},
    ],
)
def test_garbage_is_ignored(event: object) -> None:
    loop = ToolLoop()
    assert loop.feed(event) == []
    assert loop.output_ready("unknown", "{}")[0].event["type"] == "conversation.item.create"  # type: ignore[union-attr]


def test_non_string_arguments_become_empty_object() -> None:
    loop = ToolLoop()
    event = {**args_done("c1"), "arguments": {"city": "x"}}
    assert loop.feed(event)[0].arguments == "{}"  # type: ignore[union-attr]


def test_usage_is_summed() -> None:
    loop = ToolLoop()
    loop.feed(
        response_done(
            "r1",
            usage={
                "total_tokens": 10,
                "input_tokens": 4,
                "input_token_details": {"cached_tokens": 1},
            },
        )
    )
    loop.feed(
        response_done(
            "r2",
            usage={
                "total_tokens": 5,
                "input_token_details": {"cached_tokens": 2, "audio_tokens": 3},
                "x": True,
            },
        )
    )
    loop.feed(response_done("r2", usage={"total_tokens": 100}))  # repeated: not counted
    assert loop.usage == {
        "total_tokens": 15,
        "input_tokens": 4,
        "input_token_details": {"cached_tokens": 3, "audio_tokens": 3},
    }
    total: dict = {}
    add_usage(total, {"a": {"b": "text"}})
    assert total == {}


def test_execute_body() -> None:
    assert execute_body("f", '{"city": "Oslo"}') == {
        "function_name": "f",
        "payload": {"city": "Oslo"},
    }
    assert execute_body("f", "") == {"function_name": "f", "payload": {}}
    # The strict rules of a request body hold for a model's arguments too: no number too
    # large for a float (it would reach the function as infinity), no lone surrogate.
    for bad in ("{", "NaN", "[" * 100000, '{"x": 1e999}', '{"x": "\\ud800"}'):
        with pytest.raises(BadRequest) as caught:
            execute_body("f", bad)
        assert caught.value.body()["ok"] is False
        assert caught.value.body()["function_name"] == "f"


# ----- budget ---------------------------------------------------------------------------------


def test_budget_arithmetic() -> None:
    assert CallBudget.parse(None) is None
    assert CallBudget.parse("off") is None
    budget = CallBudget.parse("60/day")
    assert budget is not None
    assert (budget.minutes, budget.seconds, budget.item.get_expiry()) == (60, 3600, 86400)
    assert CallBudget.parse("2 per 1 hour").seconds == 120  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        CallBudget.parse("lots")
    # Charged ahead: a call has paid for the next tick too.
    assert CallBudget.ahead(0.0, 5.0, 0) == 5
    assert CallBudget.ahead(5.01, 5.0, 5) == 6
    assert CallBudget.ahead(0.4, 5.0, 9) == 0
    # Settled at the end: every started second, the rest given back.
    assert CallBudget.settle(10.2, 11) == 0
    assert CallBudget.settle(3.0, 11) == -8
    assert CallBudget.settle(12.5, 11) == 2
    error = budget_spent(reset_time=1000.2, now=990.0)
    assert error.status_code == 429
    assert ("Retry-After", "11") in error.headers
    assert budget_spent(reset_time=1.0, now=5.0).extra["retry_after"] == 1


def test_event_hooks_run_by_the_hook_rules(caplog: pytest.LogCaptureFixture) -> None:
    """``on_call_end`` / ``on_call_event`` run through ``_hooks.anotify``: async awaited, sync
    on one of the owner's hook threads (or inline without one), async ``__call__`` awaited,
    errors logged only."""
    import asyncio
    import threading

    from navai_core._hooks import anotify
    from navai_core.concurrency.owner import Concurrency

    owner = Concurrency()

    seen: list[tuple[str, object]] = []

    def sync_hook(value: object) -> None:
        seen.append((threading.current_thread().name, value))

    async def async_hook(value: object) -> None:
        seen.append(("async", value))

    class Callable:
        async def __call__(self, value: object) -> None:
            seen.append(("object", value))

    def broken(value: object) -> None:
        raise RuntimeError("boom")

    async def main() -> str:
        await anotify(sync_hook, 1, owner=owner)
        await anotify(sync_hook, 2)
        await anotify(async_hook, 3)
        await anotify(Callable(), 4)
        await anotify(broken, 5)
        await anotify(None, 6)
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert seen[0][0] != loop_thread and seen[0][1] == 1
    assert seen[1:] == [(loop_thread, 2), ("async", 3), ("object", 4)]
    assert "the hook broken raised" in caplog.text


@pytest.mark.parametrize("call_id", ["rtc_1\n", "rtc_1\r", "rtc 1", "", "a" * 201, None, 7])
def test_only_plain_call_ids_are_valid(call_id: object) -> None:
    assert not valid_call_id(call_id)  # (a trailing newline once passed)


def test_plain_call_ids_are_valid() -> None:
    assert valid_call_id("rtc_0123-abc_XYZ") and valid_call_id("a" * 200)
