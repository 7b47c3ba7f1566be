"""The client-secret operation: pure build/parse rules, then the sync and async senders."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx2
import jsonschema
import pytest
from conftest import navai_for

from navai_core import (
    BadRequest,
    ClientSecretOptions,
    ConfigurationError,
    Forbidden,
    Navai,
    NavaiConfig,
    NavaiError,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    build_client_secret_request,
    build_instructions,
    parse_client_secret_body,
    parse_client_secret_response,
    resolve_api_key,
    validate_ttl,
)
from tests.conftest import SCHEMA

BASE = "https://api.openai.com/v1"
URL = f"{BASE}/realtime/client_secrets"
SERVER_KEY = "sk-server-key-0123456789"
REQUEST_KEY = "sk-request-key-9876543210"
MINTED = "ek_minted_secret_abcdef"


def _body(request):
    return json.loads(request.content)


def _validate_request(body):
    jsonschema.validate(body, SCHEMA)


def _validate_reply(body):
    jsonschema.validate(
        body, {"$ref": "#/$defs/RealtimeCreateClientSecretResponse", "$defs": SCHEMA["$defs"]}
    )


@pytest.fixture
def anyio_backend():
    return "asyncio"


# ----- instructions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "accent", "tone", "expected"),
    [
        (None, None, None, "Base."),
        ("Spanish", None, None, "Base.\nAlways reply in Spanish."),
        (None, "Irish", None, "Base.\nUse a Irish accent while speaking."),
        (None, None, "calm", "Base.\nUse a calm tone while speaking."),
        (
            " Spanish ",
            " Colombian ",
            " friendly ",
            "Base.\nAlways reply in Spanish.\nUse a Colombian accent while speaking.\n"
            "Use a friendly tone while speaking.",
        ),
        (
            "French",
            None,
            "formal",
            "Base.\nAlways reply in French.\nUse a formal tone while speaking.",
        ),
        ("  ", "\t", "", "Base."),
    ],
)
def test_instruction_lines(language, accent, tone, expected):
    assert build_instructions("  Base.  ", language, accent, tone) == expected


def test_request_values_override_configured_defaults_which_override_builtins():
    config = NavaiConfig(
        openai_api_key=SERVER_KEY, instructions="Server base.", language="German", voice="cedar"
    )
    options = ClientSecretOptions(instructions="Client base.", voice_tone="cheerful")
    body = _body(build_client_secret_request(config, options))
    assert body["session"]["instructions"] == (
        "Client base.\nAlways reply in German.\nUse a cheerful tone while speaking."
    )
    assert body["session"]["audio"] == {"output": {"voice": "cedar"}}
    assert body["session"]["model"] == "gpt-realtime-2.1"


# ----- TTL --------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [10, 600, 7200])
def test_ttl_in_range(ttl):
    assert validate_ttl(NavaiConfig(client_secret_ttl_seconds=ttl)) == ttl


@pytest.mark.parametrize("ttl", [5, 9, 7201, 0, -1])
def test_ttl_out_of_range_is_400_with_exact_text(ttl):
    with pytest.raises(ConfigurationError) as info:
        validate_ttl(NavaiConfig(client_secret_ttl_seconds=ttl))
    reply = info.value.to_reply()
    assert reply.status == 400
    assert reply.body == {
        "error": f"clientSecretTtlSeconds must be between 10 and 7200. Received: {ttl}"
    }


def test_non_integer_ttl_from_env_stops_the_configuration():
    # Out of range is answered per request (above); text that is no integer is never read.
    with pytest.raises(ConfigurationError) as info:
        NavaiConfig.from_env({"OPENAI_REALTIME_CLIENT_SECRET_TTL": "soon"})
    assert "OPENAI_REALTIME_CLIENT_SECRET_TTL='soon': expected an integer" in info.value.message


# ----- API key policy ------------------------------------------------------------------


@pytest.mark.parametrize("allow", [True, False])
@pytest.mark.parametrize("request_key", [None, REQUEST_KEY])
def test_backend_key_always_wins(allow, request_key):
    assert resolve_api_key(f"  {SERVER_KEY} ", request_key, allow) == SERVER_KEY


def test_request_key_used_when_allowed_and_no_backend_key():
    assert resolve_api_key(None, f" {REQUEST_KEY} ", True) == REQUEST_KEY
    assert resolve_api_key("   ", REQUEST_KEY, True) == REQUEST_KEY


def test_request_key_refused_when_not_allowed():
    with pytest.raises(Forbidden) as info:
        resolve_api_key(None, REQUEST_KEY, False)
    assert info.value.to_reply().status == 403
    assert info.value.to_reply().body == {
        "error": "Passing apiKey from request is disabled. "
        "Set allowApiKeyFromRequest=true to enable it."
    }


@pytest.mark.parametrize("allow", [True, False])
@pytest.mark.parametrize("request_key", [None, "", "   "])
def test_no_key_anywhere_is_401(allow, request_key):
    with pytest.raises(Unauthorized) as info:
        resolve_api_key("  ", request_key, allow)
    assert info.value.to_reply().status == 401
    assert info.value.to_reply().body == {
        "error": "Missing API key. Configure openaiApiKey or send apiKey in request."
    }


def test_bad_ttl_is_reported_before_a_missing_key():
    with pytest.raises(ConfigurationError):
        build_client_secret_request(NavaiConfig(client_secret_ttl_seconds=5), ClientSecretOptions())


# ----- request body validation -----------------------------------------------------------


def test_empty_body_and_empty_object_are_valid():
    assert parse_client_secret_body(None) == ClientSecretOptions()
    assert parse_client_secret_body({}) == ClientSecretOptions()


def test_body_fields_are_read_and_unknown_keys_ignored():
    options = parse_client_secret_body(
        {"model": "m", "voiceAccent": "a", "voiceTone": "t", "apiKey": "k", "other": 5}
    )
    assert options == ClientSecretOptions(model="m", voice_accent="a", voice_tone="t", api_key="k")


@pytest.mark.parametrize("body", [[], "x", 5, True])
def test_body_that_is_not_an_object_is_400(body):
    with pytest.raises(BadRequest) as info:
        parse_client_secret_body(body)
    assert info.value.to_reply().body == {"error": "Request body must be a JSON object."}


@pytest.mark.parametrize(
    "field", ["model", "voice", "instructions", "language", "voiceAccent", "voiceTone", "apiKey"]
)
@pytest.mark.parametrize("value", [5, True, [], {}])
def test_field_of_the_wrong_type_is_400_naming_it(field, value):
    with pytest.raises(BadRequest) as info:
        parse_client_secret_body({field: value})
    assert info.value.status_code == 400
    assert info.value.message == f'Field "{field}" must be a string.'


# ----- the upstream request -------------------------------------------------------------


def test_upstream_request_byte_for_byte():
    config = NavaiConfig(openai_api_key=SERVER_KEY)
    request = build_client_secret_request(config, ClientSecretOptions())
    assert request.method == "POST"
    assert request.url == URL
    assert request.content == (
        b'{"expires_after":{"anchor":"created_at","seconds":600},'
        b'"session":{"type":"realtime","model":"gpt-realtime-2.1",'
        b'"instructions":"You are a helpful assistant.","audio":{"output":{"voice":"marin"}}}}'
    )
    assert dict(request.headers) == {
        "Authorization": f"Bearer {SERVER_KEY}",
        "Content-Type": "application/json",
    }
    _validate_request(json.loads(request.content))
    assert SERVER_KEY not in repr(request)


def test_upstream_request_with_every_option_matches_openai_schema():
    config = NavaiConfig(
        openai_api_key=SERVER_KEY,
        client_secret_ttl_seconds=7200,
        openai_base_url="http://127.0.0.1:8/custom/v1/",
        openai_organization="org-9",
        openai_project="proj-9",
    )
    options = ClientSecretOptions(
        model="gpt-realtime-mini",
        voice="verse",
        instructions="Hi.",
        language="Spanish",
        voice_accent="Mexican",
        voice_tone="calm",
    )
    request = build_client_secret_request(config, options)
    body = json.loads(request.content)
    _validate_request(body)
    assert request.url == "http://127.0.0.1:8/custom/v1/realtime/client_secrets"
    assert body == {
        "expires_after": {"anchor": "created_at", "seconds": 7200},
        "session": {
            "type": "realtime",
            "model": "gpt-realtime-mini",
            "instructions": "Hi.\nAlways reply in Spanish.\n"
            "Use a Mexican accent while speaking.\nUse a calm tone while speaking.",
            "audio": {"output": {"voice": "verse"}},
        },
    }
    headers = dict(request.headers)
    assert headers["OpenAI-Organization"] == "org-9"
    assert headers["OpenAI-Project"] == "proj-9"


def test_schema_check_is_able_to_fail():
    with pytest.raises(jsonschema.ValidationError):
        _validate_request({"expires_after": {"anchor": "created_at", "seconds": "600"}})


# ----- the upstream reply ---------------------------------------------------------------


OK_REPLY = {
    "value": MINTED,
    "expires_at": 1730000000,
    "session": {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_1",
        "model": "gpt-realtime-2.1",
        "instructions": "You are a helpful assistant.",
        "audio": {"output": {"voice": "marin"}},
    },
}


def _request():
    return build_client_secret_request(
        NavaiConfig(openai_api_key=SERVER_KEY), ClientSecretOptions()
    )


def test_parse_success_keeps_only_value_and_expires_at():
    reply = OK_REPLY
    _validate_reply(reply)
    secret = parse_client_secret_response(_request(), 200, json.dumps(reply).encode())
    assert secret.to_body() == {
        "value": MINTED,
        "expires_at": 1730000000,
        "speech": {"provider": "openai"},
    }
    assert MINTED not in repr(secret)


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_upstream_non_2xx_passes_status_and_body(status):
    body = b'{"error":{"message":"nope","type":"invalid_request_error"}}'
    with pytest.raises(UpstreamError) as info:
        parse_client_secret_response(_request(), status, body)
    reply = info.value.to_reply()
    assert reply.status == status
    assert reply.body == {
        "error": "OpenAI client_secrets failed: " + body.decode(),
        "upstream_error": {"message": "nope", "type": "invalid_request_error"},
    }


def test_upstream_request_id_and_error_fields_are_kept():
    body = b'{"error":{"message":"bad voice","type":"invalid_request_error","code":"x","p":1}}'
    with pytest.raises(UpstreamError) as info:
        parse_client_secret_response(_request(), 400, body, {"X-Request-Id": "req_123"})
    assert info.value.to_reply().body == {
        "error": "OpenAI client_secrets failed: " + body.decode(),
        "request_id": "req_123",
        "upstream_error": {"message": "bad voice", "type": "invalid_request_error", "code": "x"},
    }


def test_upstream_error_body_never_echoes_the_key():
    body = f'{{"error":{{"message":"Incorrect API key provided: {SERVER_KEY}"}}}}'.encode()
    with pytest.raises(UpstreamError) as info:
        parse_client_secret_response(_request(), 401, body)
    assert SERVER_KEY not in info.value.message
    assert "[redacted]" in info.value.message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"expires_at": 1}', '"value"'),
        (b'{"value": "", "expires_at": 1}', '"value"'),
        (b'{"value": "ek_1"}', '"expires_at"'),
        (b'{"value": "ek_1", "expires_at": "soon"}', '"expires_at"'),
    ],
)
def test_bad_success_reply_is_502_with_clear_message(content, fragment):
    with pytest.raises(UpstreamError) as info:
        parse_client_secret_response(_request(), 200, content)
    assert info.value.status_code == 502
    assert fragment in info.value.message
    assert info.value.message.startswith("OpenAI client_secrets")


def test_non_error_status_is_a_bad_gateway():
    with pytest.raises(UpstreamError) as info:
        parse_client_secret_response(_request(), 302, b"")
    assert info.value.status_code == 502


# ----- sending: sync and async, through a mocked upstream -----------------------------------

SENDER = {"openai_api_key": SERVER_KEY, "upstream_max_retries": 0}


def test_sync_mint_sends_the_request_and_returns_the_secret(upstream_mock):
    route = upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK_REPLY))
    with navai_for(**SENDER) as navai:
        secret = navai.create_client_secret({"voice": "ash"})
    assert (secret.value, secret.expires_at) == (MINTED, 1730000000)
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {SERVER_KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert _body(sent)["session"]["audio"]["output"]["voice"] == "ash"
    _validate_request(_body(sent))


@pytest.mark.anyio
async def test_async_mint_sends_the_same_request(upstream_mock):
    route = upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK_REPLY))
    async with navai_for(**SENDER) as navai:
        secret = await navai.acreate_client_secret({"voice": "ash"})
    assert secret.value == MINTED
    sync_request = build_client_secret_request(
        NavaiConfig(openai_api_key=SERVER_KEY), ClientSecretOptions(voice="ash")
    )
    assert route.calls.last.request.content == sync_request.content


def test_request_key_is_sent_only_when_allowed(upstream_mock):
    route = upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK_REPLY))
    with navai_for(**SENDER | dict(openai_api_key=None, allow_api_key_from_request=True)) as navai:
        navai.create_client_secret({"apiKey": REQUEST_KEY})
    assert route.calls.last.request.headers["authorization"] == f"Bearer {REQUEST_KEY}"
    with navai_for(**SENDER | dict(openai_api_key=None)) as navai, pytest.raises(Forbidden):
        navai.create_client_secret({"apiKey": REQUEST_KEY})
    assert route.call_count == 1


def test_client_is_reused_across_calls(upstream_mock):
    upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK_REPLY))
    with navai_for(**SENDER) as navai:
        navai.create_client_secret()
        first = navai.http_client()
        navai.create_client_secret()
        assert navai.http_client() is first
    assert first.is_closed


def test_a_client_passed_in_is_used_and_left_open():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx2.Response(200, json=OK_REPLY)

    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    config = NavaiConfig(openai_api_key=SERVER_KEY)
    with Navai(config, http_client=client) as navai:
        navai.create_client_secret()
    assert len(seen) == 1
    assert not client.is_closed
    client.close()


def test_a_client_of_another_type_is_refused_naming_the_type_needed():
    import requests

    # A stand-in for httpx's client (httpx is not installed beside httpx2): a class whose
    # module and name are httpx's, unrelated to httpx2's classes.
    legacy = type("Client", (), {"__module__": "httpx"})()
    sync, session = httpx2.Client(), requests.Session()
    aclient = httpx2.AsyncClient()
    cases = [
        ({"http_client": legacy}, "http_client must be an httpx2.Client, not httpx.Client:"),
        ({"http_client": aclient}, "http_client must be an httpx2.Client, not httpx2.AsyncClient:"),
        ({"async_http_client": sync}, "async_http_client must be an httpx2.AsyncClient, not "),
        ({"async_http_client": session}, "not requests.sessions.Session: navai runs on httpx2"),
    ]
    for clients, message in cases:
        with pytest.raises(TypeError) as info:
            Navai(NavaiConfig(openai_api_key=SERVER_KEY), **clients)
        assert message in str(info.value)
    with Navai(NavaiConfig(), http_client=sync, async_http_client=aclient) as navai:
        assert navai.http_client() is sync
        assert navai.async_http_client() is aclient
    sync.close()
    session.close()
    asyncio.run(aclient.aclose())


def test_timeout_setting_reaches_httpx(upstream_mock):
    route = upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK_REPLY))
    with navai_for(
        **SENDER | dict(upstream_timeout_seconds=3.5, upstream_connect_timeout_seconds=1.5)
    ) as navai:
        navai.create_client_secret()
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout["connect"] == 1.5
    # The rest is what is left of the total deadline for this attempt.
    assert 3.0 < timeout["read"] <= 3.5
    assert 3.0 < timeout["pool"] <= 3.5


def test_upstream_timeout_is_504(upstream_mock):
    upstream_mock.post(URL).mock(side_effect=httpx2.ReadTimeout("slow"))
    with (
        navai_for(**SENDER | dict(upstream_timeout_seconds=2)) as navai,
        pytest.raises(UpstreamTimeout) as info,
    ):
        navai.create_client_secret()
    assert info.value.to_reply().status == 504
    assert info.value.message == "OpenAI client_secrets timed out."


@pytest.mark.anyio
async def test_upstream_unreachable_is_502_async(upstream_mock):
    upstream_mock.post(URL).mock(side_effect=httpx2.ConnectError("refused"))
    async with navai_for(**SENDER) as navai:
        with pytest.raises(UpstreamUnavailable) as info:
            await navai.acreate_client_secret()
    assert info.value.to_reply().status == 502
    assert "could not be reached" in info.value.message
    assert "ConnectError" in info.value.message


@pytest.mark.anyio
async def test_upstream_5xx_passthrough_async(upstream_mock):
    upstream_mock.post(URL).mock(return_value=httpx2.Response(503, text="overloaded"))
    async with navai_for(**SENDER) as navai:
        with pytest.raises(UpstreamError) as info:
            await navai.acreate_client_secret()
    assert info.value.to_reply().status == 503
    assert info.value.message == "OpenAI client_secrets failed: overloaded"


# ----- no key in any error text or log record ----------------------------------------------


def test_keys_never_appear_in_errors_or_logs(caplog, upstream_mock):
    """Every failure path, with the upstream echoing whatever keys it was sent."""
    caplog.set_level(logging.DEBUG)
    texts = []

    def echoing(make):
        def respond(request):
            return make(f"bad key {request.headers['authorization']} / {REQUEST_KEY}")

        return respond

    def raising(exc_type):
        def fail(text):
            raise exc_type(text)

        return fail

    outcomes = [
        echoing(lambda text: httpx2.Response(401, text=text)),
        echoing(lambda text: httpx2.Response(500, text=text)),
        echoing(lambda text: httpx2.Response(200, text=f"not json {text}")),
        echoing(lambda text: httpx2.Response(200, json={"expires_at": text})),
        echoing(raising(httpx2.ConnectError)),
        echoing(raising(httpx2.ReadTimeout)),
    ]
    configs = [
        {"openai_api_key": SERVER_KEY},
        {"openai_api_key": SERVER_KEY, "allow_api_key_from_request": True},
        {"openai_api_key": None, "allow_api_key_from_request": True},
        {"openai_api_key": None},
        {"openai_api_key": SERVER_KEY, "client_secret_ttl_seconds": 1},
    ]
    for outcome in outcomes:
        upstream_mock.post(URL).mock(side_effect=outcome)
        for config in configs:
            with navai_for(**SENDER | config) as navai:
                try:
                    navai.create_client_secret({"apiKey": REQUEST_KEY})
                except NavaiError as exc:
                    texts += [str(exc), repr(exc), json.dumps(exc.to_reply().body)]
    texts += [r.getMessage() for r in caplog.records]
    assert len(texts) >= 60
    for text in texts:
        assert SERVER_KEY not in text
        assert REQUEST_KEY not in text
