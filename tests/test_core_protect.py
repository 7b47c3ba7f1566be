"""Authorisation hooks and rate limits, through Navai.handle and Navai.ahandle."""

from __future__ import annotations

import anyio
import anyio.from_thread
import httpx2
import pytest
from fakes import MockUpstream

from navai_core import (
    Forbidden,
    Navai,
    NavaiConfig,
    RequestContext,
    SettingsError,
    Unauthorized,
)
from tests.redis_server import RedisServer

URL = "https://api.openai.com/v1/realtime/client_secrets"
OK = {"value": "ek_protect", "expires_at": 1730000000}
SECRET = "/navai/realtime/client-secret"


@pytest.fixture(params=["sync", "async"])
def call(request):
    """Navai.handle, or Navai.ahandle on one event loop that lives as long as the test
    (as under an ASGI server)."""
    if request.param == "sync":
        yield lambda navai, context, body=b"{}": navai.handle(context, body)
        return
    with anyio.from_thread.start_blocking_portal() as portal:
        yield lambda navai, context, body=b"{}": portal.call(navai.ahandle, context, body)


@pytest.fixture
def upstream():
    with MockUpstream() as mock:
        yield mock.post(URL).mock(return_value=httpx2.Response(200, json=OK))


def make(**config):
    config.setdefault("openai_api_key", "sk-protect")
    config.setdefault("functions_enabled", False)
    config.setdefault("upstream_max_retries", 0)
    return Navai(NavaiConfig(**config))


def ctx(path=SECRET, method="POST", client="10.0.0.1", **headers):
    headers.setdefault("content-type", "application/json")
    return RequestContext(method, path, headers, client)


# ----- authorisation -----------------------------------------------------------------------


def bearer_hook(context):
    return context.header("authorization") == "Bearer letmein"


async def async_bearer_hook(context):
    await anyio.sleep(0)
    return context.header("authorization") == "Bearer letmein"


def raising_hook(context):
    if context.header("cookie") is None:
        raise Unauthorized("Sign in first.")
    if context.header("cookie") != "session=admin":
        raise Forbidden("Admins only.")


@pytest.mark.parametrize("hook", [bearer_hook, async_bearer_hook])
def test_hook_allows_and_denies(call, upstream, hook):
    navai = make(authorize_client_secret=hook)
    allowed = call(navai, ctx(authorization="Bearer letmein"))
    assert allowed.status == 200
    denied = call(navai, ctx(authorization="Bearer nope"))
    assert (denied.status, denied.body) == (403, {"error": "Forbidden."})
    assert upstream.call_count == 1


def test_hook_chooses_401_or_403(call, upstream):
    navai = make(authorize_client_secret=raising_hook)
    assert call(navai, ctx()).body == {"error": "Sign in first."}
    assert call(navai, ctx()).status == 401
    reply = call(navai, ctx(cookie="session=guest"))
    assert (reply.status, reply.body) == (403, {"error": "Admins only."})
    assert call(navai, ctx(cookie="session=admin")).status == 200
    assert upstream.call_count == 1


def test_hooks_are_separate_for_client_secret_and_functions(call, upstream):
    navai = Navai(
        NavaiConfig(
            openai_api_key="sk-protect",
            authorize_functions=lambda c: False,
            functions_base_dir="/nonexistent-navai-test-dir",
        )
    )
    assert call(navai, ctx()).status == 200
    assert call(navai, ctx("/navai/functions", "GET"), b"").status == 403
    denied = call(navai, ctx("/navai/functions/execute"), b'{"function_name": "x"}')
    assert denied.status == 403


def test_denied_requests_never_read_the_body_or_reach_upstream(call, upstream):
    navai = make(authorize_client_secret=lambda c: False)
    reply = call(navai, ctx(), b"not json at all")
    assert reply.status == 403
    assert upstream.call_count == 0


def test_preflight_is_not_subject_to_the_hook(call):
    navai = make(authorize_client_secret=lambda c: False)
    reply = call(navai, ctx(method="OPTIONS", origin="http://localhost:5173"))
    assert reply.status == 204


def test_hook_sees_the_request_context(call, upstream):
    seen = []
    navai = make(authorize_client_secret=lambda c: seen.append(c) or True)
    call(navai, ctx(x_user="ana"))
    assert seen[0].method == "POST"
    assert seen[0].path == SECRET
    assert seen[0].client == "10.0.0.1"
    assert seen[0].header("x_user") == "ana"


# ----- rate limits ---------------------------------------------------------------------------


def test_client_secret_is_limited_by_default(call, upstream):
    navai = make()
    statuses = [call(navai, ctx()).status for _ in range(12)]
    assert statuses == [200] * 10 + [429] * 2
    assert upstream.call_count == 10


def test_429_has_retry_after_and_json(call, upstream):
    navai = make(rate_limit_client_secret="1/minute")
    assert call(navai, ctx()).status == 200
    reply = call(navai, ctx())
    assert reply.status == 429
    retry_after = dict(reply.headers)["Retry-After"]
    assert 1 <= int(retry_after) <= 60
    assert reply.body == {
        "error": f"Too many requests. Try again in {retry_after} seconds.",
        "retry_after": int(retry_after),
    }


def test_limits_are_per_client_address(call, upstream):
    navai = make(rate_limit_client_secret="2/minute")
    a = [call(navai, ctx(client="1.1.1.1")).status for _ in range(3)]
    b = [call(navai, ctx(client="2.2.2.2")).status for _ in range(3)]
    assert a == b == [200, 200, 429]


def test_limit_key_hook_groups_by_user(call, upstream):
    navai = make(rate_limit_client_secret="2/minute", rate_limit_key=lambda c: c.header("x-user"))
    first = [call(navai, ctx(client=f"9.9.9.{i}", **{"x-user": "ana"})).status for i in range(3)]
    assert first == [200, 200, 429]
    assert call(navai, ctx(**{"x-user": "luis"})).status == 200


def test_limit_can_be_switched_off(call, upstream):
    navai = make(rate_limit_client_secret="off")
    assert {call(navai, ctx()).status for _ in range(15)} == {200}


def test_a_limit_typo_stops_navai_from_starting(call, upstream):
    with pytest.raises(SettingsError, match="NAVAI_RATE_LIMIT_CLIENT_SECRET='lots please'"):
        make(rate_limit_client_secret="lots please")


def test_function_routes_can_be_limited(call):
    navai = Navai(
        NavaiConfig(rate_limit_functions="2/minute", functions_base_dir="/nonexistent-navai-dir")
    )
    statuses = [call(navai, ctx("/navai/functions", "GET"), b"").status for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_rejected_requests_still_count(call, upstream):
    """Bad input is not a way around the limit."""
    navai = make(rate_limit_client_secret="2/minute")
    assert call(navai, ctx(), b"{bad").status == 400
    assert call(navai, ctx(), b"{bad").status == 400
    assert call(navai, ctx(), b"{}").status == 429


# ----- Redis: several app instances share one budget -----------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.mark.slow  # starts real processes
def test_two_instances_share_one_budget_in_redis(call, upstream, redis_url):
    config = {"rate_limit_client_secret": "5/minute", "rate_limit_storage": redis_url}
    one, two = make(**config), make(**config)
    one.rate_limiter.reset()
    statuses = [call(one if i % 2 else two, ctx()).status for i in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    assert upstream.call_count == 5
