"""prepare_call / execute / aexecute: the execute route's rules (CONTRACT.md sections 4 and 5)."""

import asyncio
import dataclasses
import datetime
import logging
import threading
import time

import anyio
import pytest

from navai_core._errors import BadRequest, NavaiError, NotFound
from navai_core._http import RequestContext
from navai_core.concurrency.owner import Concurrency, close_background_loop
from navai_core.functions.dispatch import (
    aexecute,
    execute,
    payload_arguments,
    prepare_call,
)
from navai_core.functions.registry import FunctionError, FunctionRegistry


@pytest.fixture
def anyio_backend():
    return "asyncio"


CONTEXT = RequestContext("POST", "/navai/functions/execute", {"X-Test": "1"}, "127.0.0.1")


def registry_of(*functions):
    registry = FunctionRegistry()
    for fn in functions:
        registry.add(fn)
    return registry


def run(registry, name, payload=None, **kwargs):
    body = {"function_name": name}
    if payload is not None:
        body["payload"] = payload
    return execute(prepare_call(registry, body, CONTEXT), **kwargs)


def result(registry, name, payload=None):
    reply = run(registry, name, payload)
    assert reply.status == 200, reply.body
    return reply.body["result"]


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


def greet(name: str, greeting: str = "Hello") -> str:
    return f"{greeting}, {name}!"


# ----- the request ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_body_must_be_an_object(body):
    with pytest.raises(BadRequest) as info:
        prepare_call(registry_of(greet), body, CONTEXT)
    assert info.value.to_reply().body == {"error": "Request body must be a JSON object."}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"function_name": ""},
        {"function_name": "  "},
        {"function_name": 3},
        {"function_name": None},
    ],
)
def test_function_name_is_required(body):
    with pytest.raises(BadRequest) as info:
        prepare_call(registry_of(greet), body, CONTEXT)
    reply = info.value.to_reply()
    assert (reply.status, reply.body) == (400, {"error": "function_name is required."})


def test_unknown_function_lists_the_available_ones():
    with pytest.raises(NotFound) as info:
        prepare_call(registry_of(greet, echo), {"function_name": "nope"}, CONTEXT)
    reply = info.value.to_reply()
    assert reply.status == 404
    assert reply.body == {
        "error": "Unknown or disallowed function.",
        "available_functions": ["greet", "echo"],
    }


def test_name_is_trimmed_and_lower_cased():
    assert result(registry_of(greet), "  GREET ", {"name": "Ana"}) == "Hello, Ana!"


@pytest.mark.parametrize("payload", [None, "text", [1, 2], 5])
def test_payload_that_is_not_an_object_counts_as_empty(payload):
    body = {"function_name": "echo", "payload": payload}
    reply = execute(prepare_call(registry_of(echo), body, CONTEXT))
    assert reply.body["result"] == {"args": [], "kwargs": {}}


def test_success_envelope():
    registry = registry_of(greet)
    reply = run(registry, "greet", {"name": "Ana"})
    assert reply.status == 200
    assert reply.body == {
        "ok": True,
        "function_name": "greet",
        "source": registry.get("greet").source,
        "result": "Hello, Ana!",
    }


# ----- argument rules ------------------------------------------------------------------


def test_rule_1_args_list_is_positional():
    registry = registry_of(greet, echo)
    assert result(registry, "greet", {"args": ["Ana", "Hi"]}) == "Hi, Ana!"
    assert result(registry, "greet", {"arguments": ["Ana"]}) == "Hello, Ana!"
    assert result(registry, "echo", {"args": [1, 2], "other": 3}) == {"args": [1, 2], "kwargs": {}}


def test_rule_2_value_is_one_argument():
    registry = registry_of(greet, echo)
    assert result(registry, "greet", {"value": "Ana"}) == "Hello, Ana!"
    assert result(registry, "echo", {"value": [1, 2], "x": 1}) == {"args": [[1, 2]], "kwargs": {}}
    assert result(registry, "echo", {"args": "not a list", "value": 1})["args"] == [1]


def test_rule_3_keys_naming_parameters_are_keywords():
    registry = registry_of(greet)
    assert result(registry, "greet", {"greeting": "Hola", "name": "Ana"}) == "Hola, Ana!"


def test_rule_4_other_payload_is_the_first_argument():
    def count(data: dict, extra: int = 0) -> int:
        return len(data) + extra

    registry = registry_of(count)
    assert result(registry, "count", {"a": 1, "b": 2, "c": 3}) == 3
    assert result(registry, "count", {"data": {"x": 1}, "extra": 1}) == 2


def test_rule_5_empty_payload_is_no_arguments():
    registry = registry_of(echo)
    for payload in ({}, None):
        assert result(registry, "echo", payload) == {"args": [], "kwargs": {}}


def test_parameters_named_like_the_rule_keys_are_keywords():
    def store(value: int, args: list | None = None) -> list:
        return [value, args]

    registry = registry_of(store)
    assert result(registry, "store", {"value": 1, "args": [2]}) == [1, [2]]
    assert result(registry, "store", {"value": 5}) == [5, None]


def test_payload_arguments_directly():
    from navai_core.functions.schema import CallSpec

    spec = CallSpec(greet, title="greet")
    assert payload_arguments({"args": [1]}, spec) == ((1,), {})
    assert payload_arguments({"value": 1}, spec) == ((1,), {})
    assert payload_arguments({"name": "a"}, spec) == ((), {"name": "a"})
    assert payload_arguments({"who": "a"}, spec) == (({"who": "a"},), {})
    assert payload_arguments({}, spec) == ((), {})


# ----- invalid arguments -----------------------------------------------------------------


def invalid(registry, name, payload):
    with pytest.raises(BadRequest) as info:
        prepare_call(registry, {"function_name": name, "payload": payload}, CONTEXT)
    reply = info.value.to_reply()
    assert reply.status == 400
    assert reply.body["error"] == "Invalid arguments."
    assert reply.body["ok"] is False
    assert reply.body["function_name"] == name
    return reply.body["details"]


def test_missing_required_argument():
    calls = []

    def book(city: str, nights: int) -> None:
        calls.append(city)

    registry = registry_of(book)
    assert invalid(registry, "book", {"args": ["Lima"]}) == [
        {"parameter": "nights", "message": "Missing required argument."}
    ]
    assert calls == []


def test_unknown_keyword_names_it():
    registry = registry_of(greet)
    assert invalid(registry, "greet", {"name": "Ana", "mood": "happy"}) == [
        {"parameter": "mood", "message": "Unexpected argument."}
    ]


def test_context_key_in_payload_is_not_an_argument():
    def who(name: str, context: RequestContext) -> str:
        return name

    assert invalid(registry_of(who), "who", {"name": "a", "context": {"method": "GET"}}) == [
        {"parameter": "context", "message": "Unexpected argument."}
    ]


def test_wrong_types_one_entry_per_problem():
    calls = []

    def book(city: str, nights: int, late: bool = False) -> None:
        calls.append(city)

    registry = registry_of(book)
    assert invalid(registry, "book", {"city": 5, "nights": "many", "late": "maybe"}) == [
        {"parameter": "city", "message": "Input should be a valid string"},
        {
            "parameter": "nights",
            "message": "Input should be a valid integer, unable to parse string as an integer",
        },
        {
            "parameter": "late",
            "message": "Input should be a valid boolean, unable to interpret input",
        },
    ]
    assert calls == []


def test_too_many_positional_arguments():
    def nothing():
        return 1

    assert invalid(registry_of(nothing), "nothing", {"args": [1, 2]}) == [
        {
            "parameter": "args[0:]",
            "message": "Unexpected positional argument: the function takes at most 0 (got 2).",
        },
    ]
    assert invalid(registry_of(nothing), "nothing", {"args": [1]}) == [
        {
            "parameter": "args[0]",
            "message": "Unexpected positional argument: the function takes at most 0 (got 1).",
        },
    ]
    assert invalid(registry_of(nothing), "nothing", {"x": 1})[0]["parameter"] == "args[0]"


def test_values_are_converted_before_the_call():
    @dataclasses.dataclass
    class Stay:
        nights: int

    seen = []

    def book(stay: Stay, day: datetime.date, count: int) -> None:
        seen.append((stay, day, count))

    run(registry_of(book), "book", {"stay": {"nights": "2"}, "day": "2024-05-01", "count": 3.0})
    assert seen == [(Stay(2), datetime.date(2024, 5, 1), 3)]


def test_positional_only_parameters_accept_keywords():
    def divide(a: float, b: float, /) -> float:
        return a / b

    registry = registry_of(divide)
    assert result(registry, "divide", {"a": 6, "b": 3}) == 2
    assert result(registry, "divide", {"args": [1, 4]}) == 0.25


# ----- context ---------------------------------------------------------------------------


def test_context_parameter_receives_the_request_context():
    def whoami(context: RequestContext, suffix: str = "") -> dict:
        return {
            "method": context.method,
            "client": context.client,
            "test": context.header("x-test") + suffix,
        }

    registry = registry_of(whoami)
    assert "context" not in registry.get("whoami").parameters["properties"]
    assert result(registry, "whoami") == {"method": "POST", "client": "127.0.0.1", "test": "1"}
    assert result(registry, "whoami", {"value": "!"})["test"] == "1!"
    assert result(registry, "whoami", {"suffix": "?"})["test"] == "1?"


def test_context_in_a_constructor_and_a_method():
    class Session:
        def __init__(self, context):
            self.path = context.path

        def info(self, context, key: str = "k"):
            return [self.path, context.client, key]

    assert result(registry_of(Session), "session_info", {"key": "z"}) == [
        "/navai/functions/execute",
        "127.0.0.1",
        "z",
    ]


# ----- classes ----------------------------------------------------------------------------


class Counter:
    def __init__(self, start: int = 0, step: int = 1):
        self.start, self.step = start, step

    def next(self, times: int = 1) -> int:
        return self.start + self.step * times

    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @classmethod
    def name(cls) -> str:
        return cls.__name__


def test_class_methods_with_constructor_and_method_args():
    registry = registry_of(Counter)
    assert result(registry, "counter_next") == 1
    assert result(registry, "counter_next", {"times": 3}) == 3
    assert result(registry, "counter_next", {"constructorArgs": [10, 5], "methodArgs": [2]}) == 20
    assert result(registry, "counter_next", {"constructorArgs": {"step": 3}, "times": 2}) == 6
    assert result(registry, "counter_next", {"constructorArgs": 7, "methodArgs": {"times": 0}}) == 7
    assert result(registry, "counter_next", {"methodArgs": 4}) == 4
    assert result(registry, "counter_double", {"x": 4}) == 8
    assert result(registry, "counter_name") == "Counter"


def test_invalid_constructor_args_are_prefixed():
    registry = registry_of(Counter)
    assert invalid(registry, "counter_next", {"constructorArgs": {"start": "x"}, "times": "y"}) == [
        {
            "parameter": "constructorArgs.start",
            "message": "Input should be a valid integer, unable to parse string as an integer",
        },
        {
            "parameter": "times",
            "message": "Input should be a valid integer, unable to parse string as an integer",
        },
    ]


# ----- failures ----------------------------------------------------------------------------


def fails_on_purpose(city: str):
    raise FunctionError(f"City not found: {city}")


def crashes():
    raise ValueError("secret internals")


def exits():
    raise SystemExit(1)


def test_function_error_message_becomes_details(caplog):
    with caplog.at_level(logging.INFO, logger="navai"):
        reply = run(registry_of(fails_on_purpose), "fails_on_purpose", {"city": "Atlantis"})
    assert reply.status == 500
    assert reply.body == {
        "ok": False,
        "function_name": "fails_on_purpose",
        "error": "Function execution failed.",
        "details": "City not found: Atlantis",
    }
    assert "City not found: Atlantis" in caplog.text


def test_other_exceptions_are_generic_and_logged_once(caplog):
    with caplog.at_level(logging.INFO, logger="navai"):
        reply = run(registry_of(crashes), "crashes")
    assert reply.status == 500
    assert reply.body["details"] == "The function raised an error."
    assert "secret" not in str(reply.body)
    records = [r for r in caplog.records if r.name == "navai" and r.exc_info]
    assert len(records) == 1
    assert records[0].exc_info[0] is ValueError


def test_exposed_errors():
    reply = run(registry_of(crashes), "crashes", expose_errors=True)
    assert reply.body["details"] == "ValueError: secret internals"


def test_system_exit_in_a_function_is_a_failure():
    assert run(registry_of(exits), "exits").status == 500


def test_constructor_failure_is_a_function_failure():
    class Broken:
        def __init__(self):
            raise FunctionError("Service unavailable")

        def go(self):
            return 1

    reply = run(registry_of(Broken), "broken_go")
    assert (reply.status, reply.body["details"]) == (500, "Service unavailable")


def test_unconvertible_result_is_a_clear_failure():
    class Thing:
        pass

    def bad():
        return {"thing": Thing()}

    reply = run(registry_of(bad), "bad")
    assert reply.status == 500
    assert reply.body["error"] == "Function execution failed."
    assert "cannot be converted to JSON" in reply.body["details"]
    assert "Thing" in reply.body["details"]


def test_converted_results_in_the_envelope():
    def when():
        return {"at": datetime.date(2024, 1, 2), "tags": ("a", "b")}

    assert result(registry_of(when), "when") == {"at": "2024-01-02", "tags": ["a", "b"]}
    assert run(registry_of(when), "when").content  # serialisable by navai's encoder


def test_unreadable_signature_is_a_500_and_lists_fine(caplog):
    def odd():
        return 1

    odd.__signature__ = "not a signature"
    registry = registry_of(odd, greet)
    body = registry.list_body()
    assert body["items"][0]["parameters"] == {"type": "object", "properties": {}}
    with pytest.raises(NavaiError) as info:
        prepare_call(registry, {"function_name": "odd"}, CONTEXT)
    reply = info.value.to_reply()
    assert reply.status == 500
    assert reply.body["ok"] is False and reply.body["function_name"] == "odd"
    assert result(registry, "greet", {"name": "x"}) == "Hello, x!"


# ----- sync and async, both directions ------------------------------------------------------


async def async_greet(name: str) -> dict:
    await asyncio.sleep(0)
    return {"hello": name, "thread": threading.current_thread().name}


def sync_thread() -> str:
    return threading.current_thread().name


def test_execute_runs_async_functions_on_the_owners_one_background_loop():
    registry = registry_of(async_greet)
    owner = Concurrency()
    threads_before = threading.active_count()
    first = run(registry, "async_greet", {"name": "a"}, concurrency=owner).body["result"]
    second = run(registry, "async_greet", {"name": "b"}, concurrency=owner).body["result"]
    assert first == {"hello": "a", "thread": "navai-background-loop"}
    assert second["thread"] == "navai-background-loop"
    assert threading.active_count() <= threads_before + 1
    loop = owner.background._loop
    for _ in range(20):
        run(registry, "async_greet", {"name": "c"}, concurrency=owner)
    assert owner.background._loop is loop  # reused, never one loop per call
    assert threading.active_count() <= threads_before + 1
    owner.close()
    assert threading.active_count() <= threads_before


def test_without_an_owner_calls_share_their_registrys_owner():
    registry = registry_of(async_greet)
    threads_before = threading.active_count()
    for name in ("a", "b", "c"):
        assert result(registry, "async_greet", {"name": name})["hello"] == name
    owner = registry.concurrency()
    assert owner.background.running  # one loop for the registry, not one per call
    assert threading.active_count() <= threads_before + 1
    other = registry_of(async_greet)
    assert other.concurrency() is not owner  # no process-wide owner
    owner.close()
    assert threading.active_count() <= threads_before


def test_background_loop_can_be_closed_and_restarts():
    registry = registry_of(async_greet)
    owner = Concurrency()
    run(registry, "async_greet", {"name": "a"}, concurrency=owner)
    thread = owner.background._thread
    owner.close()
    assert not thread.is_alive()
    assert not owner.background.running
    assert run(registry, "async_greet", {"name": "b"}, concurrency=owner).status == 200
    assert owner.background.running
    with pytest.warns(DeprecationWarning):
        close_background_loop(owner)  # the deprecated spelling of owner.close()
    assert not owner.background.running
    with pytest.warns(DeprecationWarning):
        close_background_loop()  # no process-wide loop any more: only warns


def test_execute_runs_sync_functions_inline():
    assert result(registry_of(sync_thread), "sync_thread") == threading.current_thread().name


def test_execute_from_inside_the_background_loop_is_refused():
    registry = registry_of(async_greet)
    owner = Concurrency()

    async def nested():
        body = {"function_name": "async_greet", "payload": {"name": "x"}}
        inner = execute(
            prepare_call(registry, body, CONTEXT), expose_errors=True, concurrency=owner
        )
        return inner.body

    registry.add(nested)
    reply = run(registry, "nested", concurrency=owner)
    assert reply.status == 200  # the outer call worked, the inner one was refused
    assert reply.body["result"]["ok"] is False
    assert reply.body["result"]["details"].startswith(
        "RuntimeError: called from navai's background loop"
    )


@pytest.mark.anyio
async def test_aexecute_awaits_async_functions_on_the_callers_loop():
    registry = registry_of(async_greet)
    prepared = prepare_call(
        registry, {"function_name": "async_greet", "payload": {"name": "x"}}, CONTEXT
    )
    reply = await aexecute(prepared)
    assert reply.status == 200
    assert reply.body["result"] == {"hello": "x", "thread": threading.current_thread().name}


@pytest.mark.anyio
async def test_aexecute_runs_sync_functions_in_a_worker_thread_without_blocking():
    def slow() -> str:
        time.sleep(0.3)
        return threading.current_thread().name

    registry = registry_of(slow)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        reply = await aexecute(prepare_call(registry, {"function_name": "slow"}, CONTEXT))
        group.cancel_scope.cancel()
    assert reply.status == 200
    assert reply.body["result"] != threading.current_thread().name
    assert ticks >= 10  # the event loop kept running while the function slept


@pytest.mark.anyio
async def test_aexecute_failures_and_results_match_execute():
    registry = registry_of(crashes, fails_on_purpose, greet)
    for name, payload in (
        ("crashes", None),
        ("fails_on_purpose", {"city": "x"}),
        ("greet", {"name": "y"}),
    ):
        body = {"function_name": name, "payload": payload}
        sync_reply = execute(prepare_call(registry, body, CONTEXT))
        async_reply = await aexecute(prepare_call(registry, body, CONTEXT))
        assert sync_reply == async_reply


@pytest.mark.anyio
async def test_aexecute_async_method_and_awaitable_results():
    class Service:
        async def ping(self) -> str:
            return "pong"

    def returns_coroutine():
        return async_greet("z")

    registry = registry_of(Service, returns_coroutine)
    reply = await aexecute(prepare_call(registry, {"function_name": "service_ping"}, CONTEXT))
    assert reply.body["result"] == "pong"
    reply = await aexecute(prepare_call(registry, {"function_name": "returns_coroutine"}, CONTEXT))
    assert reply.body["result"]["hello"] == "z"
    assert result(registry, "returns_coroutine")["hello"] == "z"


def test_closing_the_loop_cancels_running_calls():
    started = threading.Event()

    async def forever():
        started.set()
        await asyncio.sleep(3600)

    registry = registry_of(forever)
    outcome = []
    owner = Concurrency()
    worker = threading.Thread(
        target=lambda: outcome.append(run(registry, "forever", concurrency=owner))
    )
    worker.start()
    assert started.wait(5)
    owner.close()
    worker.join(5)
    assert not worker.is_alive()
    [reply] = outcome
    assert reply.status == 500  # the caller gets the failure answer, it does not hang
    assert reply.body["error"] == "Function execution failed."


def test_the_function_error_envelope_has_one_shape():
    from navai_core.functions.envelope import function_error

    assert list(function_error("f", "Failed.", "why")) == [
        "ok",
        "function_name",
        "error",
        "details",
    ]
    assert function_error("f", details=["x"]) == {
        "ok": False,
        "function_name": "f",
        "details": ["x"],
    }
    assert function_error(None, "Failed.") == {"ok": False, "error": "Failed."}
