"""Navai.handle / Navai.ahandle: the framework-neutral HTTP layer every adapter maps onto."""

from __future__ import annotations

import json
import logging

import httpx2
import pytest

from navai_core import Navai, NavaiConfig, RequestContext

URL = "https://api.openai.com/v1/realtime/client_secrets"
SECRET_PATH = "/navai/realtime/client-secret"
KEY = "sk-http-test-key"
OK = {"value": "ek_http", "expires_at": 1730000000}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["sync", "async"])
def call(request):
    """Call ``navai.handle`` or ``await navai.ahandle`` with the same arguments."""
    import anyio

    def sync(navai, context, body=b""):
        return navai.handle(context, body)

    def asynchronous(navai, context, body=b""):
        return anyio.run(navai.ahandle, context, body)

    return sync if request.param == "sync" else asynchronous


def ctx(method="POST", path=SECRET_PATH, **headers):
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    headers.setdefault("content-type", "application/json")
    return RequestContext(method, path, headers, "127.0.0.1")


def navai(**config):
    config.setdefault("openai_api_key", KEY)
    config.setdefault("functions_enabled", False)
    config.setdefault("upstream_max_retries", 0)
    return Navai(NavaiConfig(**config))


def test_mint_success_has_no_store_and_speech(call, upstream_mock):
    upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json={**OK, "session": {}}))
    reply = call(navai(), ctx(content_type="application/json"), b'{"voice": "ash"}')
    assert reply.status == 200
    assert reply.body == {**OK, "speech": {"provider": "openai"}}
    assert ("Cache-Control", "no-store") in reply.headers
    assert json.loads(reply.content) == reply.body


@pytest.mark.parametrize("body", [b"", b"{}", b"  \n"])
def test_empty_body_is_valid(call, body, upstream_mock):
    upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK))
    assert call(navai(), ctx(), body).status == 200


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{", 400, "Request body is not valid JSON."),
        (b"\xff\xfe", 400, "Request body is not valid JSON."),
        (b'{"a": NaN}', 400, "Request body is not valid JSON."),
        (b"[" * 100000 + b"]" * 100000, 400, "Request body is not valid JSON."),
        (b"[]", 400, "Request body must be a JSON object."),
        (b'"text"', 400, "Request body must be a JSON object."),
        (b"null", 400, "Request body must be a JSON object."),
        (b'{"model": 5}', 400, 'Field "model" must be a string.'),
        (b'{"voiceTone": {"a": 1}}', 400, 'Field "voiceTone" must be a string.'),
    ],
)
def test_bad_bodies_are_400_and_never_reach_upstream(call, body, status, error, upstream_mock):
    route = upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK))
    reply = call(navai(), ctx(), body)
    assert (reply.status, reply.body) == (status, {"error": error})
    assert route.call_count == 0


def test_oversized_body_is_413(call, upstream_mock):
    route = upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK))
    reply = call(navai(max_body_bytes=100), ctx(), b'{"instructions": "' + b"x" * 200 + b'"}')
    assert reply.status == 413
    assert "100 bytes" in reply.body["error"]
    assert route.call_count == 0


def test_non_json_content_type_is_415(call, upstream_mock):
    route = upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK))
    reply = call(navai(), ctx(content_type="text/plain"), b"{}")
    assert reply.status == 415
    assert reply.body == {"error": "Content-Type must be application/json."}
    assert route.call_count == 0
    ok = call(navai(), ctx(content_type="application/json; charset=utf-8"), b"{}")
    assert ok.status == 200


def test_wrong_method_is_405_with_allow(call):
    reply = call(navai(), ctx("GET"))
    assert reply.status == 405
    assert ("Allow", "OPTIONS, POST") in reply.headers
    assert reply.body == {"error": "Method not allowed. Allowed: OPTIONS, POST."}


def test_unknown_path_is_404_json(call):
    reply = call(navai(), ctx("GET", "/nope"))
    assert (reply.status, reply.body) == (404, {"error": "Not found."})


def test_function_routes_can_be_switched_off(call):
    n = navai(functions_enabled=False)
    assert "list_functions" not in [r.name for r in n.routes]
    assert "execute" not in [r.name for r in n.routes]
    assert call(n, ctx("GET", "/navai/functions")).status == 404
    assert call(n, ctx("POST", "/navai/functions/execute"), b"{}").status == 404


def test_custom_paths_and_trailing_slash(call, upstream_mock):
    upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK))
    n = navai(client_secret_path="/voice/token", health_path="/health")
    assert call(n, ctx(path="/voice/token/")).status == 200
    assert call(n, ctx(path=SECRET_PATH)).status == 404
    health = call(n, ctx("GET", "/health"))
    assert (health.status, health.body) == (200, {"ok": True})


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("Missing API key. Configure openaiApiKey or send apiKey in request.", 401),
    ],
)
def test_missing_key_is_401(call, message, status):
    reply = call(navai(openai_api_key=None), ctx(), b"{}")
    assert (reply.status, reply.body) == (status, {"error": message})


# ----- CORS ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origins", "origin", "allowed"),
    [
        (None, "http://localhost:5173", True),
        (None, "https://127.0.0.1", True),
        (None, "http://localhost.evil.com", False),
        (None, "https://app.example", False),
        (("https://app.example",), "https://app.example", True),
        (("https://app.example",), "https://other.example", False),
        (("*",), "https://anything.example", True),
    ],
)
def test_cors_on_answers(call, origins, origin, allowed, upstream_mock):
    upstream_mock.post(URL).mock(return_value=httpx2.Response(200, json=OK))
    reply = call(navai(cors_origins=origins), ctx(origin=origin), b"{}")
    assert reply.status == 200
    headers = dict(reply.headers)
    if not allowed:
        assert "Access-Control-Allow-Origin" not in headers
    elif origins == ("*",):
        assert headers["Access-Control-Allow-Origin"] == "*"
    else:
        assert headers["Access-Control-Allow-Origin"] == origin
        assert headers["Vary"] == "Origin"


def test_cors_headers_also_on_errors(call):
    reply = call(navai(openai_api_key=None), ctx(origin="http://localhost:3000"), b"{}")
    assert reply.status == 401
    assert dict(reply.headers)["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_preflight_allowed(call):
    reply = call(
        navai(),
        ctx(
            "OPTIONS",
            origin="http://localhost:5173",
            access_control_request_method="POST",
            access_control_request_headers="content-type",
        ),
    )
    headers = dict(reply.headers)
    assert reply.status == 204
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "content-type"
    assert headers["Access-Control-Max-Age"] == "600"


def test_preflight_from_a_foreign_origin_is_refused(call):
    reply = call(navai(), ctx("OPTIONS", origin="https://evil.example"))
    assert reply.status == 403
    assert not any(name.startswith("Access-Control") for name, _ in reply.headers)


def test_options_without_origin_lists_methods(call):
    reply = call(navai(), ctx("OPTIONS"))
    assert reply.status == 204
    assert ("Allow", "POST, OPTIONS") in reply.headers


# ----- unexpected failures -------------------------------------------------------------------


def test_unexpected_exception_is_generic_500_logged_once(call, caplog, upstream_mock):
    upstream_mock.post(URL).mock(side_effect=RuntimeError("boom with sk-http-test-key inside"))
    with caplog.at_level(logging.ERROR, logger="navai"):
        reply = call(navai(), ctx(), b"{}")
    assert (reply.status, reply.body) == (500, {"error": "Internal server error."})
    records = [r for r in caplog.records if r.name == "navai"]
    assert len(records) == 1
    assert records[0].exc_info is not None
