"""NAVAI_CORS_ALLOW_CREDENTIALS: cookies from a page on another origin, never with ``*``.

The core's decision (handle and ahandle), the setting read from the environment and reported
when combined with ``*``, and a real browser (headless Chromium) on one loopback origin
calling navai on another with ``credentials: "include"``.
"""

from __future__ import annotations

import anyio
import pytest

from navai_core import Navai, NavaiConfig, RequestContext

LIST = "/navai/functions"
CREDENTIALS = "Access-Control-Allow-Credentials"


@pytest.fixture(params=["sync", "async"])
def call(request):
    def sync(navai, context):
        return navai.handle(context, b"")

    def asynchronous(navai, context):
        return anyio.run(navai.ahandle, context, b"")

    return sync if request.param == "sync" else asynchronous


def context(method: str, origin: str) -> RequestContext:
    headers = {"origin": origin, "access-control-request-method": "GET"}
    return RequestContext(method, LIST, headers, "127.0.0.1")


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
@pytest.mark.parametrize(
    ("origins", "origin", "expected"),
    [
        (("https://app.example",), "https://app.example", "true"),
        (None, "http://localhost:5173", "true"),  # the local default echoes the origin
        (("https://app.example",), "https://evil.example", None),
        (("*",), "https://app.example", None),  # never with *
    ],
)
def test_credentials_only_for_an_echoed_origin(call, method, origins, origin, expected):
    navai = Navai(NavaiConfig(cors_origins=origins, cors_allow_credentials=True))
    reply = call(navai, context(method, origin))
    headers = dict(reply.headers)
    assert headers.get(CREDENTIALS) == expected
    if expected:
        assert headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_off_by_default(call, method):
    navai = Navai(NavaiConfig(cors_origins=("https://app.example",)))
    reply = call(navai, context(method, "https://app.example"))
    assert dict(reply.headers)["Access-Control-Allow-Origin"] == "https://app.example"
    assert CREDENTIALS not in dict(reply.headers)


def test_read_from_the_environment_and_reported_with_a_star():
    named = NavaiConfig.from_env(
        {"NAVAI_CORS_ALLOW_CREDENTIALS": "true", "NAVAI_CORS_ORIGIN": "https://app.example"}
    )
    assert named.cors_allow_credentials is True
    assert not [p for p in named.problems() if "CREDENTIALS" in p]
    star = NavaiConfig.from_env({"NAVAI_CORS_ALLOW_CREDENTIALS": "yes", "NAVAI_CORS_ORIGIN": "*"})
    [problem] = [p for p in star.problems() if "NAVAI_CORS_ALLOW_CREDENTIALS" in p]
    assert '"*"' in problem
    bad = NavaiConfig.from_env({"NAVAI_CORS_ALLOW_CREDENTIALS": "sometimes"})
    assert bad.cors_allow_credentials is False
    assert any("NAVAI_CORS_ALLOW_CREDENTIALS" in p for p in bad.problems())
