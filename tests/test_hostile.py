"""Hostile clients and faulty upstreams: each test is a defect found from outside, run over
both adapters (and real ``navai serve`` servers) through the ``client`` fixtures."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import Setup, Target, records, start_server
from fake_upstream import FakeUpstream

SECRET = "/navai/realtime/client-secret"
TRANSCRIPTION = "/navai/realtime/transcription-secret"
EXECUTE = "/navai/functions/execute"
JSON = {"Content-Type": "application/json"}


def json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str)
    return body


# ----- invalid Unicode ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SECRET, TRANSCRIPTION, EXECUTE])
@pytest.mark.parametrize(
    "content",
    [
        b'{"model": "\\ud800"}',
        b'{"language": "x\\udfff"}',
        b'{"function_name": "echo", "payload": {"data": "\\udc00\\ud800"}}',
        b'{"function_name": "echo", "payload": {"\\ud83d": 1}}',
        b'{"voice": "\xed\xa0\x80"}',  # a surrogate encoded in UTF-8: not UTF-8
    ],
)
def test_lone_surrogates_are_400(client: Target, fake_upstream, functions_dir, path, content):
    before = records(functions_dir)
    response = client.http.post(path, content=content, headers=JSON)
    assert json_error(response, 400) == {"error": "Request body is not valid JSON."}
    assert fake_upstream.requests == []
    assert records(functions_dir) == before


def test_a_surrogate_pair_is_one_character(client: Target):
    response = client.http.post(
        EXECUTE,
        content=b'{"function_name": "echo", "payload": {"data": "\\ud83d\\ude00"}}',
        headers=JSON,
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "\U0001f600"


# ----- secret-bearing routes are never cached --------------------------------------------------


@pytest.mark.parametrize("path", [SECRET, TRANSCRIPTION])
@pytest.mark.parametrize(
    ("method", "content", "headers", "status"),
    [
        ("POST", b"{}", JSON, 200),
        ("POST", b"{not json", JSON, 400),
        ("POST", b"[]", JSON, 400),
        ("POST", b'{"model": 5, "prompt": 5}', JSON, 400),
        ("POST", b"{}", {"Content-Type": "text/plain"}, 415),
        ("POST", b" " * (1024 * 1024 + 1), JSON, 413),
        ("GET", b"", {}, 405),
        ("OPTIONS", b"", {"Origin": "http://localhost:5173"}, 204),
        ("OPTIONS", b"", {"Origin": "https://evil.example"}, 403),
    ],
)
def test_every_answer_of_a_secret_route_is_no_store(
    client: Target, path, method, content, headers, status
):
    response = client.http.request(method, path, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers.get("cache-control") == "no-store"


def test_an_upstream_error_of_a_mint_is_no_store(client: Target, fake_upstream: FakeUpstream):
    fake_upstream.behave(status=401, body={"error": {"message": "bad key"}})
    response = client.http.post(SECRET, json={})
    assert response.status_code == 401
    assert response.headers.get("cache-control") == "no-store"


# ----- exposure -------------------------------------------------------------------------------


def test_a_dict_exposes_its_private_functions_not_imported_ones(client: Target):
    items = {item["name"]: item for item in client.http.get("/navai/functions").json()["items"]}
    assert items["loud_shout"]["source"] == "functions/tools.py#loud.shout"
    assert items["loud_shout"]["description"] == "Say it loudly."
    assert "loud_cwd" not in items
    response = client.http.post(
        EXECUTE, json={"function_name": "loud_shout", "payload": {"text": "hi"}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "HI!"


# ----- messages a Python user reads ------------------------------------------------------------


def test_logs_have_one_navai_prefix(client: Target):
    mark = client.log_mark()
    client.http.post(EXECUTE, json={"function_name": "explode"})
    logged = client.logs_since(mark)
    assert "navai: function explode" in logged
    assert "navai: navai:" not in logged


@pytest.mark.parametrize("wsgi_server", [False, True], ids=["asgi-server", "wsgi-server"])
def test_start_up_warnings_name_the_python_settings(tmp_path, fake_upstream, wsgi_server):
    env = {
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": fake_upstream.base_url,
        "OPENAI_REALTIME_CLIENT_SECRET_TTL": "5",
        "NAVAI_CORS_ORIGIN": "app.example.com, https://ok.example.com",
        "NAVAI_FUNCTIONS_BASE_DIR": str(tmp_path),
    }
    server = start_server(Setup("messages", env, cwd=tmp_path), wsgi_server, tmp_path)
    try:
        url = server.wait_ready()
        # On the wire the contract's texts stay.
        minted = httpx.post(url + SECRET, json={}, timeout=10)
        assert minted.json()["error"].startswith("clientSecretTtlSeconds must be between 10")
        for _ in range(3):
            refused = httpx.options(
                url + SECRET,
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
                timeout=10,
            )
            assert refused.status_code == 403
    finally:
        server.stop()
    logged = server.stderr() + server.stdout()
    assert "navai: navai:" not in logged
    assert "clientSecretTtlSeconds" not in logged
    assert "OPENAI_REALTIME_CLIENT_SECRET_TTL must be between 10 and 7200. Received: 5" in logged
    assert "OPENAI_API_KEY is not set" in logged
    assert 'NAVAI_CORS_ORIGIN entry "app.example.com" has no scheme' in logged
    assert "set NAVAI_FUNCTIONS_FOLDERS" in logged
    # a refused origin is logged, once however often it knocks
    assert logged.count("https://evil.example") == 1, logged


# ----- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"args": list(range(150_000))},  # ~1 MB of surplus positional arguments
        {"a": 1, "b": 2, **{f"k{i}": 0 for i in range(60_000)}},  # ~1 MB of unknown keywords
    ],
)
def test_the_details_of_invalid_arguments_are_capped(client: Target, payload):
    response = client.http.post(EXECUTE, json={"function_name": "add", "payload": payload})
    body = json_error(response, 400)
    assert len(response.content) < 8_000, len(response.content)
    assert 1 <= len(body["details"]) <= 21
    assert body["error"] == "Invalid arguments."
