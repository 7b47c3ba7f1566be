"""`navai serve --app`, authorisation and Redis rate limits over real sockets, and
schemathesis against a real `navai serve` driven by the OpenAPI document it serves."""

from __future__ import annotations

import textwrap

import httpx2
import pytest
import schemathesis
from conftest import NavaiProcess, hermetic_env
from fakes import Answer, FakeOpenAI
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.redis_server import RedisServer

APP = '''
from navai_core import FunctionRegistry, Navai, NavaiConfig, Unauthorized

tools = FunctionRegistry()


@tools.function
def greet(name: str) -> str:
    """Greets someone."""
    return f"Hello, {name}!"


@tools.function
async def add(a: int, b: int = 0) -> int:
    """Adds two numbers."""
    return a + b


def members_only(context):
    if context.header("authorization") != "Bearer member-token":
        raise Unauthorized("Sign in first.")


navai = Navai(
    NavaiConfig.from_env(authorize_client_secret=members_only),
    functions=tools,
)
'''


@pytest.fixture(scope="module")
def upstream():
    server = FakeOpenAI().start()
    server.default = Answer.json(
        200, {"value": "ek_app", "expires_at": 1730000000, "session": {"type": "realtime"}}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("app")
    (base / "voice_app.py").write_text(textwrap.dedent(APP))
    return base


def serve(base, env, *args, name):
    process = NavaiProcess(["--port", "0", *args], hermetic_env(env), base, base, name)
    process.wait_ready()
    return process


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def app_server(request, upstream, app_dir):
    env = {
        "OPENAI_API_KEY": "sk-app-key",
        "OPENAI_BASE_URL": upstream.base_url,
        "NAVAI_RATE_LIMIT_CLIENT_SECRET": "off",
        "NAVAI_UPSTREAM_MAX_RETRIES": "0",
        "NAVAI_FUNCTIONS_FOLDERS": "nothing-here",
    }
    wsgi = ["--wsgi"] if request.param == "wsgi" else []
    process = serve(app_dir, env, "--app", "voice_app:navai", *wsgi, name=f"app-{request.param}")
    yield process
    assert process.stop() == 0, process.describe()


def test_app_functions_are_served(app_server):
    with httpx2.Client(base_url=app_server.url) as client:
        names = [item["name"] for item in client.get("/navai/functions").json()["items"]]
        assert names == ["greet", "add"]
        r = client.post(
            "/navai/functions/execute", json={"function_name": "add", "payload": {"a": 2, "b": 3}}
        )
        assert r.json()["result"] == 5
    assert "greet" in app_server.stdout()


def test_authorisation_hook_over_real_sockets(app_server, upstream):
    before = len(upstream.received)
    with httpx2.Client(base_url=app_server.url) as client:
        denied = client.post("/navai/realtime/client-secret", json={})
        assert (denied.status_code, denied.json()) == (401, {"error": "Sign in first."})
        wrong = client.post(
            "/navai/realtime/client-secret", json={}, headers={"authorization": "Bearer guess"}
        )
        assert wrong.status_code == 401
        allowed = client.post(
            "/navai/realtime/client-secret",
            json={},
            headers={"authorization": "Bearer member-token"},
        )
        assert allowed.status_code == 200
        assert allowed.json()["value"] == "ek_app"
    assert len(upstream.received) - before == 1


def test_openapi_document_is_served(app_server):
    document = httpx2.get(f"{app_server.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert "/navai/functions/execute" in document["paths"]


def test_bad_app_target_is_a_clear_error(app_dir):
    process = NavaiProcess(
        ["--port", "0", "--app", "voice_app:missing"], hermetic_env({}), app_dir, app_dir, "bad"
    )
    code = process.process.wait(timeout=30)
    process.stop()
    assert code == 2
    assert "voice_app:missing" in process.stderr()


# ----- Redis: two real servers share one budget ----------------------------------------------


def test_two_servers_share_a_redis_budget(upstream, app_dir, tmp_path):
    redis = RedisServer(tmp_path)
    env = {
        "OPENAI_API_KEY": "sk-redis-key",
        "OPENAI_BASE_URL": upstream.base_url,
        "NAVAI_RATE_LIMIT_CLIENT_SECRET": "4/minute",
        "NAVAI_RATE_LIMIT_STORAGE": redis.url,
        "NAVAI_FUNCTIONS_ENABLED": "false",
    }
    servers = []
    try:
        servers.append(serve(app_dir, env, name="redis-asgi"))
        servers.append(serve(app_dir, env, "--wsgi", name="redis-wsgi"))
        before = len(upstream.received)
        statuses = []
        for i in range(8):
            url = servers[i % 2].url
            statuses.append(httpx2.post(f"{url}/navai/realtime/client-secret", json={}).status_code)
        assert statuses == [200] * 4 + [429] * 4
        assert len(upstream.received) - before == 4
    finally:
        for server in servers:
            assert server.stop() == 0, server.describe()
        redis.stop()


# ----- schemathesis against a real server ------------------------------------------------------


def excluded(path):
    """Checks that do not apply to a route. A schema-valid execute body can still name a
    function whose own arguments it does not fit (400 Invalid arguments: each function's
    parameters are listed by GET /navai/functions, not in this document), and the speech route
    answers 400 while the ElevenLabs provider is off, as the contract says."""
    if path in ("/navai/functions/execute", "/navai/speech/synthesize"):
        return [positive_data_acceptance]
    return []


def test_schemathesis(app_server):
    """Every operation of the served OpenAPI document, positive and negative cases, bounded:
    no 5xx, and every answer conforms to the document (status, content type, schema)."""
    api = schemathesis.openapi.from_url(f"{app_server.url}/openapi.json")
    tested = []
    for result in api.get_all_operations():
        operation = result.ok()
        tested.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case):
            response = case.call(base_url=app_server.url, timeout=10)
            assert response.status_code < 500, (case.method, case.path, response.text)
            case.validate_response(response, excluded_checks=excluded(case.path))

        check()
    assert len(tested) == 9, tested  # the call routes and the events stream too (docs/calls.md)


def test_app_target_may_be_a_registry_or_a_factory(app_dir, monkeypatch):
    from navai_adapters import cli

    monkeypatch.chdir(app_dir)
    monkeypatch.setenv("NAVAI_FUNCTIONS_FOLDERS", "nothing-here")
    parser = cli._parser()
    from_registry = cli._navai(parser, "voice_app:tools")
    assert from_registry.functions().names() == ["greet", "add"]
    assert from_registry.config.health_path == "/health"
    assert from_registry.config.openapi_path == "/openapi.json"
    (app_dir / "voice_factory.py").write_text(
        "import voice_app\n\ndef make():\n    return voice_app.navai\n"
    )
    from_factory = cli._navai(parser, "voice_factory:make")
    assert from_factory.config.authorize_client_secret is not None
    with pytest.raises(cli._CannotStart, match="--app must look like module:attribute"):
        cli._navai(parser, "voice_app")
