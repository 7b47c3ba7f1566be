"""Secret scan: run every error path of both adapters with a known server key, a known request
key and a known minted value, capture every answer and every log record (tracebacks
included), and find none of the keys anywhere, and the minted value only in 200 mint answers."""

from __future__ import annotations

import io
import json
import logging

import attrs
import pytest
from conftest import in_process
from fakes import Answer, FakeOpenAI, refused_port

from navai_core import FunctionRegistry, Navai, NavaiConfig

SERVER_KEY = "sk-scan-server-key-5f1e2d3c4b5a"
REQUEST_KEY = "sk-scan-request-key-a9b8c7d6e5f4"
MINTED = "ek_scan_minted_value_0a1b2c3d"
SECRET_PATH = "/navai/realtime/client-secret"


def tools():
    registry = FunctionRegistry()

    @registry.function
    def leaky(note: str = "") -> str:
        """Raises an error whose message holds the server key."""
        raise RuntimeError(f"db password is {SERVER_KEY} and token {REQUEST_KEY}")

    @registry.function
    def fine() -> dict:
        return {"ok": True}

    return registry


@pytest.fixture
def upstream():
    server = FakeOpenAI().start()
    server.default = Answer.json(
        200, {"value": MINTED, "expires_at": 1730000000, "session": {"type": "realtime"}}
    )
    yield server
    server.stop()


@pytest.fixture
def logs():
    """Every record of every logger, formatted with tracebacks, as the operator would see it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def make_client(kind, navai):
    return in_process(navai, kind, "http://127.0.0.1")


def echo(status, *keys):
    """An upstream error that echoes the keys it was sent (as some APIs do)."""
    keys = keys or (SERVER_KEY, REQUEST_KEY)
    return Answer.json(status, {"error": {"message": f"Incorrect API key: {' / '.join(keys)}"}})


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_no_key_or_minted_value_leaks(kind, upstream, logs):
    answers = []  # (is_successful_mint, status, headers, body text)

    def run(config, calls):
        navai = Navai(
            NavaiConfig(
                openai_base_url=upstream.base_url,
                upstream_timeout_seconds=1.0,
                upstream_max_retries=1,
                # the 2 MiB body is refused by its Content-Length, before the limit counts
                rate_limit_client_secret="8/minute",
                **config,
            ),
            functions=tools(),
        )
        navai.retry_policy = attrs.evolve(navai.retry_policy, initial_delay=0.05)  # short waits
        with make_client(kind, navai) as client:
            for method, path, kwargs, script in calls:
                upstream.answer(*script)
                response = client.request(method, path, **kwargs)
                mint_ok = path == SECRET_PATH and response.status_code == 200
                answers.append((mint_ok, response.status_code, response.headers, response.text))

    js = {"headers": {"content-type": "application/json"}}
    body = {"apiKey": REQUEST_KEY, "model": "gpt-realtime"}
    server_key = {"openai_api_key": SERVER_KEY, "functions_base_dir": "/nonexistent-scan"}
    run(
        server_key,
        [
            ("POST", SECRET_PATH, {"json": body}, []),  # success
            ("POST", SECRET_PATH, {"content": b"x" * (2 * 1024 * 1024), **js}, []),
            ("POST", SECRET_PATH, {"json": body}, [echo(401)]),
            ("POST", SECRET_PATH, {"json": body}, [echo(500), echo(503)]),
            ("POST", SECRET_PATH, {"json": body}, [Answer(200, f"<{SERVER_KEY}>".encode())]),
            ("POST", SECRET_PATH, {"json": body}, [Answer.json(200, {"value": 5})]),
            # one hang: the 1 s deadline is the whole call's, so no retry follows it (a second
            # queued hang would be the next run's first answer)
            ("POST", SECRET_PATH, {"json": body}, [Answer(delay=5)]),
            ("POST", SECRET_PATH, {"content": b"{bad json " + REQUEST_KEY.encode(), **js}, []),
            ("POST", SECRET_PATH, {"json": {"apiKey": 5}}, []),
            ("POST", SECRET_PATH, {"json": body}, []),  # 429 from here on
            ("GET", SECRET_PATH, {}, []),
            ("POST", "/navai/functions/execute", {"json": {"function_name": "leaky"}}, []),
            ("POST", "/navai/functions/execute", {"json": {"function_name": "fine"}}, []),
            ("POST", "/navai/functions/execute", {"json": {"function_name": "nope"}}, []),
            ("GET", "/navai/functions", {}, []),
            ("POST", "/elsewhere", {"json": body}, []),
        ],
    )
    run(
        {"allow_api_key_from_request": True, "functions_base_dir": "/nonexistent-scan"},
        [
            ("POST", SECRET_PATH, {"json": body}, []),
            ("POST", SECRET_PATH, {"json": body}, [echo(403, REQUEST_KEY)]),
        ],
    )
    run({"functions_base_dir": "/nonexistent-scan"}, [("POST", SECRET_PATH, {"json": body}, [])])
    run(
        {
            "openai_api_key": SERVER_KEY,
            "client_secret_ttl_seconds": 3,
            "functions_base_dir": "/nonexistent-scan",
        },
        [("POST", SECRET_PATH, {"json": body}, [])],
    )
    refused = f"http://127.0.0.1:{refused_port()}/v1"
    navai = Navai(
        NavaiConfig(openai_api_key=SERVER_KEY, openai_base_url=refused, upstream_max_retries=0)
    )
    with make_client(kind, navai) as client:
        response = client.post(SECRET_PATH, json=body)
        answers.append((False, response.status_code, response.headers, response.text))

    statuses = {status for _, status, _, _ in answers}
    # every kind of path was really exercised
    assert {200, 400, 401, 403, 404, 405, 413, 429, 500, 502, 504} <= statuses
    assert any(ok for ok, *_ in answers)
    log_text = logs.getvalue()
    assert "Traceback" in log_text  # the leaky function's trace was logged
    assert "[redacted]" in log_text
    for mint_ok, status, headers, text in answers:
        everything = text + json.dumps(dict(headers))
        assert SERVER_KEY not in everything, (status, text)
        assert REQUEST_KEY not in everything, (status, text)
        if mint_ok:
            assert MINTED in text
            assert headers["cache-control"] == "no-store"
        else:
            assert MINTED not in everything, (status, text)
    assert SERVER_KEY not in log_text
    assert MINTED not in log_text
