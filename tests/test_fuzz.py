"""Property tests: arbitrary input to every route of both adapters never gives a 5xx, a
non-JSON answer, or a function call with unvalidated arguments, and the app keeps answering."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from conftest import in_process
from fakes import Answer, FakeOpenAI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from navai_core import FunctionRegistry, Navai, NavaiConfig

ROUTES = [
    ("POST", "/navai/realtime/client-secret"),
    ("POST", "/navai/realtime/transcription-secret"),
    ("POST", "/navai/functions/execute"),
    ("GET", "/navai/functions"),
    ("POST", "/navai/speech/synthesize"),
]
violations: list[str] = []
calls: list[str] = []


def registry():
    tools = FunctionRegistry()

    @tools.function
    def typed(city: str, days: int = 1, units: Literal["c", "f"] = "c") -> dict:
        """A function with typed parameters: it must only ever see valid values."""
        calls.append("typed")
        if not isinstance(city, str) or not isinstance(days, int) or isinstance(days, bool):
            violations.append(f"typed({city!r}, {days!r})")
        if units not in ("c", "f"):
            violations.append(f"units={units!r}")
        return {"city": city, "days": days}

    @tools.function
    async def atyped(flag: bool, tags: list[str] | None = None) -> bool:
        calls.append("atyped")
        if not isinstance(flag, bool) or not (
            tags is None or all(isinstance(t, str) for t in tags)
        ):
            violations.append(f"atyped({flag!r}, {tags!r})")
        return flag

    @tools.function
    def noargs() -> str:
        calls.append("noargs")
        return "ok"

    return tools


@pytest.fixture(scope="module")
def upstream():
    server = FakeOpenAI().start()
    server.default = Answer.json(200, {"value": "ek_fuzz", "expires_at": 1})
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def client(request, upstream):
    config = NavaiConfig(
        openai_api_key="sk-fuzz",
        openai_base_url=upstream.base_url,
        rate_limit_client_secret="off",
        rate_limit_speech="off",
        rate_limit_functions="off",
        upstream_max_retries=0,
        functions_base_dir="/nonexistent-fuzz",
        max_body_bytes=64 * 1024,
    )
    navai = Navai(config, functions=registry())
    with in_process(navai, request.param, "http://127.0.0.1") as http:
        yield http


# Every code point, lone surrogates included: ``json.dumps`` writes them as ``\\udXXX``
# escapes, which a JSON decoder turns back into strings Python cannot encode.
# Code points that broke parsers before are drawn more often than chance would.
any_char = st.characters(exclude_categories=()) | st.sampled_from(
    ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\u2028", "\ufeff", "\U0001f600"]
)
# (st.text drops surrogates from any alphabet: join the characters ourselves)
any_text = st.lists(any_char, max_size=20).map("".join)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text, inner, max_size=5),
    max_leaves=25,
)
function_names = st.sampled_from(["typed", "atyped", "noargs", "TYPED", " typed ", "nope", ""])
payload_keys = st.sampled_from(
    ["city", "days", "units", "flag", "tags", "args", "value", "context", "x"]
)
near_valid = st.fixed_dictionaries(
    {"flag": st.booleans() | json_values}, optional={"tags": st.lists(any_text) | json_values}
) | st.fixed_dictionaries(
    {"city": any_text | json_values}, optional={"days": st.integers() | json_values}
)
execute_bodies = st.fixed_dictionaries(
    {"function_name": function_names | json_values},
    optional={
        "payload": json_values | near_valid | st.dictionaries(payload_keys, json_values, max_size=4)
    },
)
secret_bodies = st.dictionaries(
    st.sampled_from(
        [
            "model",
            "voice",
            "instructions",
            "language",
            "voiceAccent",
            "voiceTone",
            "apiKey",
            "prompt",
            "text",
            "other",
        ]
    ),
    json_values,
    max_size=5,
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/ld+json",
    ]
)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def post_json(client, method, path, body):
    """``body`` as ASCII JSON (httpx2's ``json=`` cannot encode a lone surrogate)."""
    headers = {"content-type": "application/json"}
    return client.request(method, path, content=json.dumps(body), headers=headers)


def check(response):
    assert response.status_code < 500, (response.status_code, response.text)
    body = response.json()  # every answer is JSON
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str)
    assert not violations, violations


@FUZZ
@given(route=st.sampled_from(ROUTES), body=json_values)
@example(route=ROUTES[0], body={"model": "\ud800"})
def test_arbitrary_json_values(client, route, body):
    method, path = route
    check(
        client.request(
            method, path, content=json.dumps(body), headers={"content-type": "application/json"}
        )
    )


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    body=secret_bodies | execute_bodies,
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-32"]),
)
def test_every_code_point_written_raw(client, route, body, encoding):
    """The same bodies, non-ASCII written raw (surrogates as the bytes ``surrogatepass``
    gives, which are not valid in any encoding)."""
    method, path = route
    text = json.dumps(body, ensure_ascii=False)
    check(
        client.request(
            method,
            path,
            content=text.encode(encoding, "surrogatepass"),
            headers={"content-type": "application/json"},
        )
    )


@FUZZ
@given(body=execute_bodies)
@example(body={"function_name": "atyped", "payload": {"flag": True, "tags": ["a"]}})
@example(body={"function_name": "atyped", "payload": {"flag": "yes", "tags": [1, None]}})
@example(body={"function_name": "typed", "payload": {"city": ["x"], "days": True}})
@example(body={"function_name": " NoArgs ", "payload": None})
@example(body={"function_name": "typed", "payload": {"args": ["Lima", 2]}})
def test_execute_bodies(client, body):
    check(post_json(client, "POST", "/navai/functions/execute", body))


@FUZZ
@given(route=st.sampled_from(ROUTES), body=secret_bodies)
def test_option_bodies(client, route, body):
    method, path = route
    check(post_json(client, method, path, body))


@FUZZ
@given(route=st.sampled_from(ROUTES), raw=st.binary(max_size=2000), content_type=content_types)
def test_arbitrary_bytes_and_content_types(client, route, raw, content_type):
    method, path = route
    headers = {"content-type": content_type} if content_type else {}
    check(client.request(method, path, content=raw, headers=headers))


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    depth=st.integers(min_value=1, max_value=50_000),
    text=st.lists(any_char, max_size=50).map("".join),
)
def test_deep_nesting_huge_strings_and_unicode(client, route, depth, text):
    method, path = route
    nested = "[" * depth + json.dumps(text) + "]" * depth
    check(
        client.request(method, path, content=nested, headers={"content-type": "application/json"})
    )
    huge = json.dumps({"instructions": text * 2000, "function_name": text, "text": text * 500})
    check(client.request(method, path, content=huge, headers={"content-type": "application/json"}))


def test_still_answering_after_the_fuzzing(client):
    response = client.post(
        "/navai/functions/execute", json={"function_name": "typed", "payload": {"city": "Bogota"}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"city": "Bogota", "days": 1}
    assert not violations, violations
    # the fuzzing did reach the functions with arguments that passed validation
    assert {"typed", "atyped", "noargs"} <= set(calls), sorted(set(calls))
