"""The HTTP contract of CONTRACT.md, each test written once and run four ways: in-process
ASGI and WSGI, and against real ``navai serve`` / ``navai serve --wsgi`` servers over
loopback sockets, all talking to the same recording fake OpenAI upstream.

Fixtures (conftest.py): ``client`` (backend key, defaults), ``alt_client`` (request keys,
configured defaults, function routes off, origin list, 256-byte body limit),
``speech_client`` (ElevenLabs, CORS ``*``), ``misconfigured_client`` (TTL 5),
``fresh_client`` (README's first command: example functions, no key).
"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from conftest import (
    BROKEN_WARNING,
    REQUEST_KEY,
    SERVER_KEY,
    TOOL_NAMES,
    Target,
    records,
    validate_upstream_reply,
    validate_upstream_request,
)
from fakes import EXPIRES_AT, FakeOpenAI

SECRET = "/navai/realtime/client-secret"
LIST = "/navai/functions"
EXECUTE = "/navai/functions/execute"
MIB = 1024 * 1024

MISSING_KEY = "Missing API key. Configure openaiApiKey or send apiKey in request."
KEY_DISABLED = (
    "Passing apiKey from request is disabled. Set allowApiKeyFromRequest=true to enable it."
)
DEFAULT_SESSION = {
    "type": "realtime",
    "model": "gpt-realtime-2.1",
    "instructions": "You are a helpful assistant.",
    "audio": {"output": {"voice": "marin"}},
}

_NO_PAYLOAD = object()


def mint(target: Target, body: Any = None, **kwargs: Any) -> httpx2.Response:
    return target.http.post(SECRET, json={} if body is None else body, **kwargs)


def call(target: Target, name: Any, payload: Any = _NO_PAYLOAD, **kwargs: Any) -> httpx2.Response:
    body: dict[str, Any] = {"function_name": name}
    if payload is not _NO_PAYLOAD:
        body["payload"] = payload
    return target.http.post(EXECUTE, json=body, **kwargs)


def result(response: httpx2.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    return body["result"]


def json_error(response: httpx2.Response, status: int) -> dict[str, Any]:
    """Assert a JSON error answer with ``status``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body, dict)
    assert isinstance(body["error"], str)
    assert "Traceback" not in response.text
    return body


def upstream_body(fake: FakeOpenAI) -> Any:
    [request] = fake.requests
    body = request.json()
    validate_upstream_request(body)
    return body


# ----- 1. routes ------------------------------------------------------------------------------


def test_every_route_answers(client: Target):
    assert mint(client).status_code == 200
    assert client.http.get(LIST).status_code == 200
    assert result(call(client, "no_args")) == "nothing"
    health = client.http.get("/health")
    assert (health.status_code, health.json()) == (200, {"ok": True})


def test_an_unknown_path_is_a_json_404(client: Target):
    json_error(client.http.get("/navai/nope"), 404)
    # (not "/": navai serve on loopback serves the playground page there)
    json_error(client.http.post("/nope", content=b"{}"), 404)


def test_a_trailing_slash_reaches_the_route(client: Target):
    assert client.http.get(LIST + "/").status_code == 200


def test_the_function_routes_can_be_switched_off(alt_client: Target):
    json_error(alt_client.http.get(LIST), 404)
    json_error(call(alt_client, "add", {"a": 1, "b": 2}), 404)
    assert mint(alt_client, {"apiKey": REQUEST_KEY}).status_code == 200


# ----- 2. client secret -----------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"{}", b"  \n"])
def test_mint_with_an_empty_body_uses_the_defaults(
    client: Target, fake_upstream: FakeOpenAI, content: bytes
):
    response = client.http.post(
        SECRET, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "value": "ek_fake_1",
        "expires_at": EXPIRES_AT,
        "speech": {"provider": "openai"},
    }
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"

    [request] = fake_upstream.requests
    assert (request.method, request.path) == ("POST", "/v1/realtime/client_secrets")
    assert request.headers["authorization"] == f"Bearer {SERVER_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert upstream_body(fake_upstream) == {
        "expires_after": {"anchor": "created_at", "seconds": 600},
        "session": DEFAULT_SESSION,
    }


def test_the_fake_upstream_answers_like_openai(fake_upstream: FakeOpenAI):
    fake_upstream.reset()
    with httpx2.Client() as http:
        reply = http.post(
            f"{fake_upstream.base_url}/realtime/client_secrets",
            json={"session": {"type": "realtime", "model": "gpt-realtime"}},
        )
    validate_upstream_reply(reply.json())


def test_request_values_win_and_build_the_instructions(client: Target, fake_upstream: FakeOpenAI):
    response = mint(
        client,
        {
            "model": "gpt-realtime-2025-08-28",
            "voice": "cedar",
            "instructions": "  Be brief.  ",
            "language": " French ",
            "voiceAccent": "Parisian",
            "voiceTone": "calm",
            "apiKey": REQUEST_KEY,
        },
    )
    assert response.status_code == 200, response.text
    [request] = fake_upstream.requests
    assert request.headers["authorization"] == f"Bearer {SERVER_KEY}"  # the backend key wins
    assert REQUEST_KEY.encode() not in request.body
    assert upstream_body(fake_upstream)["session"] == {
        "type": "realtime",
        "model": "gpt-realtime-2025-08-28",
        "instructions": "Be brief.\n"
        "Always reply in French.\n"
        "Use a Parisian accent while speaking.\n"
        "Use a calm tone while speaking.",
        "audio": {"output": {"voice": "cedar"}},
    }


def test_blank_request_values_add_no_instruction_line(client: Target, fake_upstream):
    response = mint(client, {"language": "   ", "voiceAccent": "", "voiceTone": " "})
    assert response.status_code == 200, response.text
    assert upstream_body(fake_upstream)["session"] == DEFAULT_SESSION


def test_configured_defaults_and_a_request_key(alt_client: Target, fake_upstream):
    response = mint(alt_client, {"apiKey": f"  {REQUEST_KEY}  "})
    assert response.status_code == 200, response.text
    [request] = fake_upstream.requests
    assert request.headers["authorization"] == f"Bearer {REQUEST_KEY}"  # trimmed
    assert upstream_body(fake_upstream) == {
        "expires_after": {"anchor": "created_at", "seconds": 120},
        "session": {
            "type": "realtime",
            "model": "gpt-realtime-mini",
            "instructions": "You are a travel agent.\n"
            "Always reply in Spanish.\n"
            "Use a Colombian accent while speaking.\n"
            "Use a warm tone while speaking.",
            "audio": {"output": {"voice": "cedar"}},
        },
    }


def test_request_values_win_over_configured_defaults(alt_client: Target, fake_upstream):
    body = {"apiKey": REQUEST_KEY, "voice": "marin", "language": "English", "model": "m2"}
    assert mint(alt_client, body).status_code == 200
    session = upstream_body(fake_upstream)["session"]
    assert session["model"] == "m2"
    assert session["audio"] == {"output": {"voice": "marin"}}
    assert "Always reply in English." in session["instructions"].split("\n")


@pytest.mark.parametrize("body", [{}, {"apiKey": "   "}, {"apiKey": ""}])
def test_no_key_anywhere_is_401(alt_client: Target, fake_upstream: FakeOpenAI, body):
    assert json_error(mint(alt_client, body), 401) == {"error": MISSING_KEY}
    assert fake_upstream.requests == []


def test_without_any_key_the_server_answers_401_then_403(
    fresh_client: Target, fake_upstream: FakeOpenAI
):
    assert json_error(mint(fresh_client), 401) == {"error": MISSING_KEY}
    refused = mint(fresh_client, {"apiKey": REQUEST_KEY})
    assert json_error(refused, 403) == {"error": KEY_DISABLED}
    assert REQUEST_KEY not in refused.text
    assert fake_upstream.requests == []


def test_an_upstream_error_is_passed_on(client: Target, fake_upstream: FakeOpenAI):
    upstream_error = {
        "error": {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    fake_upstream.behave(status=401, body=upstream_error)
    body = json_error(mint(client), 401)
    assert body["error"] == f"OpenAI client_secrets failed: {json.dumps(upstream_error)}"
    assert len(fake_upstream.requests) == 1


def test_an_upstream_server_error_keeps_its_status(client: Target, fake_upstream):
    fake_upstream.behave(status=503, body="upstream is down")
    body = json_error(mint(client), 503)
    assert body["error"] == "OpenAI client_secrets failed: upstream is down"


def test_a_bad_ttl_answers_400_and_the_function_routes_keep_working(
    misconfigured_client: Target, fake_upstream: FakeOpenAI
):
    expected = {"error": "clientSecretTtlSeconds must be between 10 and 7200. Received: 5"}
    assert json_error(mint(misconfigured_client), 400) == expected
    assert fake_upstream.requests == []
    assert misconfigured_client.http.get(LIST).status_code == 200
    assert result(call(misconfigured_client, "add", {"a": 1, "b": 1})) == 2


# ----- 3. / 7. speech provider -----------------------------------------------------------------


def test_elevenlabs_makes_the_session_text_only(speech_client: Target, fake_upstream):
    response = mint(speech_client, {"voice": "cedar"})
    assert response.status_code == 200, response.text
    assert response.json()["speech"] == {"provider": "elevenlabs"}
    assert upstream_body(fake_upstream)["session"] == {
        "type": "realtime",
        "model": "gpt-realtime-2.1",
        "instructions": "You are a helpful assistant.",
        "output_modalities": ["text"],
    }


SPEECH = "/navai/speech/synthesize"
AUDIO = bytes(range(256)) * 4  # not UTF-8: must arrive intact


def test_speech_synthesis(speech_client: Target, fake_upstream: FakeOpenAI):
    fake_upstream.behave(200, AUDIO, headers={"Content-Type": "audio/mpeg"})
    response = speech_client.http.post(
        SPEECH,
        json={"text": "Hola", "modelId": "eleven_turbo_v2", "voiceSettings": {"stability": 0.5}},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "provider": "elevenlabs",
        "mimeType": "audio/mpeg",
        "audioBase64": base64.b64encode(AUDIO).decode(),
    }
    [request] = fake_upstream.requests
    assert request.method == "POST"
    assert request.path == "/v1/text-to-speech/voice%201%2F%C3%A9?output_format=mp3_44100_128"
    assert request.headers["xi-api-key"] == "xi-test-key"
    assert request.headers["accept"] == "audio/mpeg"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "text": "Hola",
        "model_id": "eleven_turbo_v2",
        "voice_settings": {"stability": 0.5},
    }


def test_speech_errors(speech_client: Target, fake_upstream: FakeOpenAI):
    blank = speech_client.http.post(SPEECH, json={"text": "   "})
    assert json_error(blank, 400) == {"error": "text is required."}
    assert fake_upstream.requests == []
    fake_upstream.behave(429, "quota exceeded")
    body = json_error(speech_client.http.post(SPEECH, json={"text": "Hola"}), 429)
    assert body["error"] == "ElevenLabs synthesize failed: quota exceeded"


def test_speech_needs_the_elevenlabs_provider(client: Target, fake_upstream: FakeOpenAI):
    body = json_error(client.http.post(SPEECH, json={"text": "Hola"}), 400)
    assert body["error"] == (
        'Speech synthesis is only available when NAVAI_TTS_PROVIDER is set to "elevenlabs".'
    )
    assert fake_upstream.requests == []


# ----- 4. list and execute --------------------------------------------------------------------


def test_list_functions(client: Target):
    response = client.http.get(LIST)
    assert response.status_code == 200
    body = response.json()
    items = {item["name"]: item for item in body["items"]}
    assert set(items) == TOOL_NAMES
    for item in body["items"]:
        assert all(isinstance(item[key], str) for key in ("name", "description", "source"))
    assert items["add"]["description"] == "Add two integers."
    assert items["add"]["source"] == "functions/tools.py#add"
    assert items["no_args"]["description"] == "Call exported function no_args."
    assert items["text_tools_upper"]["source"] == "functions/tools.py#text_tools.upper"
    assert [w for w in body["warnings"] if w.startswith(BROKEN_WARNING)]


def test_execute_success(client: Target):
    response = call(client, "add", {"a": 2, "b": 3})
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "function_name": "add",
        "source": "functions/tools.py#add",
        "result": 5,
    }


def test_the_function_name_is_trimmed_and_lower_cased(client: Target):
    response = call(client, "  ADD  ", {"a": 1, "b": 2})
    assert response.json()["function_name"] == "add"
    assert result(response) == 3


@pytest.mark.parametrize("payload", [_NO_PAYLOAD, None, "text", [1, 2], 5, {}])
def test_a_payload_that_is_not_an_object_counts_as_empty(client: Target, payload):
    assert result(call(client, "no_args", payload)) == "nothing"


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("add", {"args": [2, 3]}, 5),
        ("add", {"arguments": [4, 4]}, 8),
        ("echo", {"value": 7}, 7),
        ("add", {"a": 1, "b": 2}, 3),
        ("echo", {"x": 1, "y": 2}, {"x": 1, "y": 2}),
        ("greeter_greet", {"name": "Ana"}, "Hello, Ana!"),
        ("greeter_greet", {"constructorArgs": ["Hi"], "methodArgs": ["Ana"]}, "Hi, Ana!"),
        ("text_tools_upper", {"value": "abc"}, "ABC"),
        ("async_add", {"a": 20, "b": 22}, 42),
    ],
)
def test_arguments_reach_the_function(client: Target, name, payload, expected):
    assert result(call(client, name, payload)) == expected


def test_results_are_converted_to_json(client: Target):
    value = result(call(client, "when"))
    assert value["pair"] == [1, 2]
    assert value["at"].startswith("2024-01-02T03:04:05")


def test_a_result_that_is_not_json_is_a_clear_error(client: Target):
    body = json_error(call(client, "unconvertible"), 500)
    assert body["ok"] is False
    assert body["function_name"] == "unconvertible"
    assert "JSON" in body["details"]


def test_the_function_receives_the_request_context(client: Target):
    response = client.http.post(
        EXECUTE + "?trace=1",
        json={"function_name": "whoami"},
        headers={"User-Agent": "contract-test/1.0"},
    )
    assert result(response) == {
        "method": "POST",
        "path": EXECUTE,
        "client": client.client_host,
        "agent": "contract-test/1.0",
        "query": "trace=1",
    }


@pytest.mark.parametrize("body", [{}, {"function_name": "   "}, {"function_name": 5}])
def test_a_missing_function_name_is_400(client: Target, body):
    response = client.http.post(EXECUTE, json=body)
    assert json_error(response, 400) == {"error": "function_name is required."}


@pytest.mark.parametrize("name", ["nope", "getcwd", "_private", "Greeter", "RECORDS"])
def test_only_registered_functions_run(client: Target, name):
    body = json_error(call(client, name), 404)
    assert body["error"] == "Unknown or disallowed function."
    assert set(body["available_functions"]) == TOOL_NAMES


def test_a_function_that_raises_is_a_json_500_and_is_logged_once(client: Target):
    mark = client.log_mark()
    response = call(client, "explode")
    assert json_error(response, 500) == {
        "ok": False,
        "function_name": "explode",
        "error": "Function execution failed.",
        "details": "The function raised an error.",
    }
    assert "secret internals" not in response.text
    logged = client.logs_since(mark)
    assert logged.count("RuntimeError: secret internals 42") == 1
    assert "Traceback" in logged


def test_a_function_error_message_reaches_the_client(client: Target):
    body = json_error(call(client, "city", {"name": "Atlantis"}), 500)
    assert (body["ok"], body["details"]) == (False, "City not found")
    assert result(call(client, "city", {"name": "Bogota"})) == "Bogota"


# ----- 6. errors of the request itself ---------------------------------------------------------


@pytest.mark.parametrize("path", [SECRET, EXECUTE])
@pytest.mark.parametrize("content", [b"{not json", b'{"a": 1,}', b"\xff\xfe", b"NaN"])
def test_a_body_that_is_not_json_is_400(
    client: Target, fake_upstream, functions_dir, path, content
):
    before = records(functions_dir)
    response = client.http.post(path, content=content, headers={"Content-Type": "application/json"})
    assert json_error(response, 400) == {"error": "Request body is not valid JSON."}
    assert fake_upstream.requests == []
    assert records(functions_dir) == before


@pytest.mark.parametrize("path", [SECRET, EXECUTE])
@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"5", b"null", b"true"])
def test_json_that_is_not_an_object_is_400(client: Target, fake_upstream, path, content):
    response = client.http.post(path, content=content, headers={"Content-Type": "application/json"})
    assert json_error(response, 400) == {"error": "Request body must be a JSON object."}
    assert fake_upstream.requests == []


@pytest.mark.parametrize("field", ["model", "voice", "instructions", "language", "apiKey"])
@pytest.mark.parametrize("value", [5, ["a"], {"a": 1}, True])
def test_a_field_of_the_wrong_type_is_400_naming_it(client: Target, fake_upstream, field, value):
    body = json_error(mint(client, {field: value}), 400)
    assert f'"{field}"' in body["error"]
    assert fake_upstream.requests == []


def test_a_body_that_is_not_declared_json_is_415(client: Target, fake_upstream):
    response = client.http.post(SECRET, content=b"{}", headers={"Content-Type": "text/plain"})
    json_error(response, 415)
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", SECRET, "OPTIONS, POST"),
        ("PUT", SECRET, "OPTIONS, POST"),
        ("DELETE", LIST, "GET, OPTIONS"),
        ("POST", LIST, "GET, OPTIONS"),
        ("GET", EXECUTE, "OPTIONS, POST"),
        ("PATCH", "/health", "GET, OPTIONS"),
    ],
)
def test_a_wrong_method_is_405_with_allow(client: Target, fake_upstream, method, path, allow):
    response = client.http.request(method, path, content=b"{}")
    json_error(response, 405)
    assert response.headers["allow"] == allow
    assert fake_upstream.requests == []


def _padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON padded with spaces to exactly ``size`` bytes."""
    content = json.dumps(body).encode()
    return content + b" " * (size - len(content))


def test_a_body_of_exactly_the_limit_is_accepted(client: Target, fake_upstream):
    content = _padded({"model": "gpt-realtime"}, MIB)
    response = client.http.post(
        SECRET, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert len(fake_upstream.requests) == 1


@pytest.mark.parametrize("path", [SECRET, EXECUTE])
def test_a_body_over_the_limit_is_413(client: Target, fake_upstream, functions_dir, path):
    before = records(functions_dir)
    body = {"function_name": "record", "payload": {"note": "too big"}, "model": "gpt-realtime"}
    content = _padded(body, MIB + 1)
    response = client.http.post(path, content=content, headers={"Content-Type": "application/json"})
    json_error(response, 413)
    assert fake_upstream.requests == []
    assert records(functions_dir) == before


def test_the_body_limit_is_configurable(alt_client: Target, fake_upstream):
    small = _padded({"apiKey": REQUEST_KEY}, 256)
    headers = {"Content-Type": "application/json"}
    assert alt_client.http.post(SECRET, content=small, headers=headers).status_code == 200
    fake_upstream.reset()
    too_big = _padded({"apiKey": REQUEST_KEY}, 257)
    json_error(alt_client.http.post(SECRET, content=too_big, headers=headers), 413)
    assert fake_upstream.requests == []


def test_a_request_error_never_reaches_a_function(client: Target, functions_dir):
    before = records(functions_dir)
    bad = [
        client.http.post(
            EXECUTE,
            content=b'{"function_name": "record"',
            headers={"Content-Type": "application/json"},
        ),
        client.http.get(EXECUTE),
        client.http.post(
            EXECUTE,
            content=b'{"function_name": "record", "payload": {"note": "x"}}',
            headers={"Content-Type": "text/plain"},
        ),
    ]
    assert [r.status_code for r in bad] == [400, 405, 415]
    assert records(functions_dir) == before
    assert result(call(client, "record", {"note": "counted"})) == "recorded"
    assert records(functions_dir) == [*before, "counted"]


# ----- CORS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:5173", "http://127.0.0.1:8080", "https://localhost", "http://localhost"],
)
def test_local_origins_are_allowed_by_default(client: Target, origin):
    response = mint(client, headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "Origin" in response.headers["vary"]


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://localhost.evil.example", "null", "http://10.0.0.1:3000"],
)
def test_other_origins_get_no_cors_headers_by_default(client: Target, origin):
    response = client.http.get(LIST, headers={"Origin": origin})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_error_answers_carry_cors_headers_too(client: Target):
    response = client.http.post(
        SECRET,
        content=b"{oops",
        headers={"Origin": "http://localhost:5173", "Content-Type": "application/json"},
    )
    json_error(response, 400)
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


@pytest.mark.parametrize(("path", "methods"), [(SECRET, "POST, OPTIONS"), (LIST, "GET, OPTIONS")])
def test_preflight(client: Target, fake_upstream, path, methods):
    response = client.http.options(
        path,
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert response.headers["access-control-allow-methods"] == methods
    assert response.headers["access-control-allow-headers"] == "content-type"
    assert response.headers["access-control-max-age"] == "600"
    assert fake_upstream.requests == []


def test_preflight_from_a_foreign_origin_is_refused(client: Target):
    response = client.http.options(
        SECRET, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    json_error(response, 403)
    assert "access-control-allow-origin" not in response.headers


def test_options_without_an_origin_lists_the_methods(client: Target):
    response = client.http.options(SECRET)
    assert response.status_code == 204
    assert response.headers["allow"] == "POST, OPTIONS"


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://admin.example.com"])
def test_a_configured_origin_list(alt_client: Target, origin):
    response = alt_client.http.options(
        SECRET, headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == origin
    other = mint(alt_client, {"apiKey": REQUEST_KEY}, headers={"Origin": "http://localhost:5173"})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


def test_any_origin_with_a_star(speech_client: Target):
    response = speech_client.http.get(LIST, headers={"Origin": "https://anywhere.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    preflight = speech_client.http.options(
        EXECUTE,
        headers={"Origin": "https://anywhere.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"


# ----- concurrency ---------------------------------------------------------------------------


def test_a_sleeping_sync_function_does_not_block_other_requests(client: Target, functions_dir):
    note = f"sleeping-{client.kind}-{time.monotonic()}"
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(call, client, "slow", {"seconds": 1.0, "note": note})
        deadline = time.monotonic() + 5
        while note not in records(functions_dir):  # the function is sleeping now
            assert time.monotonic() < deadline and not slow.done()
            time.sleep(0.01)
        for _ in range(5):
            assert client.http.get("/health").status_code == 200
            assert result(call(client, "add", {"a": 1, "b": 1})) == 2
        assert not slow.done(), "the quick requests waited for the sleeping function"
        assert result(slow.result(timeout=10)) == "slept"


def test_async_functions_share_one_loop_and_leak_no_threads(client: Target):
    first = result(call(client, "loop_identity"))
    later = [result(call(client, "loop_identity")) for _ in range(20)]
    assert {(r["loop"], r["thread"]) for r in later} == {(first["loop"], first["thread"])}
    assert max(r["threads"] for r in later) <= first["threads"]
