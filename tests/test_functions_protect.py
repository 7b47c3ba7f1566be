"""Per-function authorisation hooks, time limits and honest failures (issue 5)."""

import asyncio
import json
import logging
import threading
import time

import anyio
import pytest

from navai_core import (
    FunctionError,
    FunctionRegistry,
    Navai,
    NavaiConfig,
    RequestContext,
    SettingsError,
    Unauthorized,
)
from navai_core._errors import BadRequest
from navai_core.concurrency.owner import Concurrency
from navai_core.concurrency.threads import FunctionThreads
from navai_core.functions.dispatch import (
    aexecute,
    execute,
    prepare_call,
    time_limit,
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


CONTEXT = RequestContext("POST", "/navai/functions/execute", {"X-Role": "user"}, "127.0.0.1")
ADMIN = RequestContext("POST", "/navai/functions/execute", {"X-Role": "admin"}, "127.0.0.1")
SECRET = "sk-proj-Zx81secretSECRETvalue"


def prepared(registry, name, payload=None, context=CONTEXT):
    return prepare_call(registry, {"function_name": name, "payload": payload or {}}, context)


def run(registry, name, payload=None, context=CONTEXT, **kwargs):
    return execute(prepared(registry, name, payload, context), **kwargs)


async def arun(registry, name, payload=None, context=CONTEXT, **kwargs):
    return await aexecute(prepared(registry, name, payload, context), **kwargs)


def both_tails(registry, name, payload=None, context=CONTEXT, **kwargs):
    """The answers of execute and of aexecute (run with asyncio.run) for the same call."""
    sync_reply = run(registry, name, payload, context, **kwargs)
    async_reply = asyncio.run(arun(registry, name, payload, context, **kwargs))
    return sync_reply, async_reply


def is_admin(context, arguments):
    return context.header("x-role") == "admin"


async def ais_admin(context, arguments):
    await asyncio.sleep(0)
    return context.header("x-role") == "admin"


# ----- registration ------------------------------------------------------------------------


def test_decorator_and_add_keep_the_options_on_every_entry():
    registry = FunctionRegistry()

    @registry.function(authorize=is_admin, timeout=5)
    def refund(order_id: int) -> str:
        return "ok"

    class Orders:
        def cancel(self, order_id: int) -> bool:
            return True

        def status(self, order_id: int) -> str:
            return "shipped"

    assert registry.add(Orders, authorize=ais_admin, timeout=0)
    refund_entry = registry.get("refund")
    assert (refund_entry.authorize, refund_entry.timeout) == (is_admin, 5.0)
    for name in ("orders_cancel", "orders_status"):
        assert (registry.get(name).authorize, registry.get(name).timeout) == (ais_admin, 0.0)
    assert refund("1") == "ok"  # the decorator returns the function unchanged
    merged = FunctionRegistry().merge(registry)
    assert merged.get("refund").authorize is is_admin
    assert merged.get("refund").timeout == 5.0


def test_options_default_to_none():
    registry = FunctionRegistry()

    @registry.function
    def plain() -> int:
        return 1

    assert (registry.get("plain").authorize, registry.get("plain").timeout) == (None, None)


@pytest.mark.parametrize("bad", [-1, "5", True, float("nan"), [1]])
def test_bad_timeouts_fail_at_registration(bad):
    registry = FunctionRegistry()
    with pytest.raises(ValueError, match="timeout must be a number of seconds"):
        registry.add(lambda: 1, name="f", timeout=bad)
    assert len(registry) == 0


def test_authorize_must_be_callable():
    with pytest.raises(TypeError, match="authorize must be a callable"):
        FunctionRegistry().add(lambda: 1, name="f", authorize="admin")


@pytest.mark.parametrize(
    ("own", "default", "expected"),
    [
        (None, None, None),
        (None, 30, 30.0),
        (None, 0, None),
        (2, 30, 2.0),
        (0, 30, None),  # the function's own 0 switches the server's default off
        (2, None, 2.0),
        (None, -1, None),
        (None, float("inf"), None),
    ],
)
def test_time_limit(own, default, expected):
    registry = FunctionRegistry()
    [entry] = registry.add(lambda: 1, name="f", timeout=own)
    assert time_limit(entry, default) == expected


# ----- authorisation ------------------------------------------------------------------------


def guarded_registry(hook, calls):
    registry = FunctionRegistry()

    @registry.function(authorize=hook)
    def refund(order_id: int) -> dict:
        calls.append(order_id)
        return {"refunded": order_id}

    @registry.function
    def status(order_id: int) -> str:
        return "shipped"

    return registry


@pytest.mark.parametrize("hook", [is_admin, ais_admin], ids=["sync hook", "async hook"])
def test_a_denied_call_is_403_and_never_runs(hook):
    calls = []
    registry = guarded_registry(hook, calls)
    for reply in both_tails(registry, "refund", {"order_id": 7}):
        assert reply.status == 403
        assert reply.body == {"ok": False, "function_name": "refund", "error": "Forbidden."}
    assert calls == []
    # one function can require more than another: status needs no admin
    assert [r.status for r in both_tails(registry, "status", {"order_id": 7})] == [200, 200]


@pytest.mark.parametrize("hook", [is_admin, ais_admin], ids=["sync hook", "async hook"])
def test_an_allowed_call_runs(hook):
    calls = []
    registry = guarded_registry(hook, calls)
    for reply in both_tails(registry, "refund", {"order_id": "7"}, ADMIN):
        assert reply.status == 200
        assert reply.body["result"] == {"refunded": 7}
    assert calls == [7, 7]


@pytest.mark.parametrize("verdict", [None, True])
def test_none_and_true_allow(verdict):
    registry = guarded_registry(lambda context, arguments: verdict, [])
    assert [r.status for r in both_tails(registry, "refund", {"order_id": 1})] == [200, 200]


def test_the_hook_gets_the_context_and_the_validated_arguments():
    seen = []

    def hook(context, arguments):
        seen.append((context, dict(arguments)))
        with pytest.raises(TypeError):
            arguments["order_id"] = 0  # read-only: the hook cannot change the call

    registry = guarded_registry(hook, [])
    both_tails(registry, "refund", {"order_id": "42"})
    assert seen == [(CONTEXT, {"order_id": 42}), (CONTEXT, {"order_id": 42})]
    assert isinstance(seen[0][1]["order_id"], int)  # converted, as the function gets it


def test_a_method_hook_sees_the_constructor_arguments():
    seen = []

    class Account:
        def __init__(self, user_id: int) -> None:
            self.user_id = user_id

        def balance(self, currency: str = "EUR") -> str:
            return f"{self.user_id}:{currency}"

    registry = FunctionRegistry()
    registry.add(Account, authorize=lambda context, arguments: seen.append(dict(arguments)))
    payload = {"constructorArgs": {"user_id": "5"}, "methodArgs": {"currency": "USD"}}
    assert run(registry, "account_balance", payload).body["result"] == "5:USD"
    assert seen == [{"currency": "USD", "constructorArgs": {"user_id": 5}}]


def test_invalid_arguments_are_answered_before_the_hook_runs():
    asked = []
    registry = guarded_registry(lambda context, arguments: asked.append(1), [])
    with pytest.raises(BadRequest):
        prepared(registry, "refund", {"order_id": "many"})
    assert asked == []


def test_a_hook_may_raise_its_own_status_and_message():
    def hook(context, arguments):
        raise Unauthorized(
            "Sign in first.", extra={"login": "/login"}, headers=[("WWW-Authenticate", "Bearer")]
        )

    calls = []
    registry = guarded_registry(hook, calls)
    for reply in both_tails(registry, "refund", {"order_id": 1}):
        assert reply.status == 401
        assert reply.body == {
            "ok": False,
            "function_name": "refund",
            "error": "Sign in first.",
            "login": "/login",
        }
        assert reply.headers == (("WWW-Authenticate", "Bearer"),)
    assert calls == []


def test_a_hook_that_crashes_denies_with_a_generic_500(caplog):
    def hook(context, arguments):
        raise RuntimeError(f"database password {SECRET}")

    calls = []
    registry = guarded_registry(hook, calls)
    with caplog.at_level(logging.INFO, logger="navai"):
        replies = both_tails(registry, "refund", {"order_id": 1})
    for reply in replies:
        assert reply.status == 500
        assert reply.body["details"] == "The function raised an error."
        assert SECRET not in reply.content.decode()
    assert calls == []
    traced = [r for r in caplog.records if r.exc_info]
    assert len(traced) == 2  # once per call
    assert "authorisation hook of refund" in traced[0].getMessage()


def test_where_hooks_run():
    threads = {}

    def sync_hook(context, arguments):
        threads.setdefault("sync", []).append(threading.current_thread().name)

    async def async_hook(context, arguments):
        threads.setdefault("async", []).append(threading.current_thread().name)

    registry = FunctionRegistry()
    registry.add(lambda: 1, name="a", authorize=sync_hook)
    registry.add(lambda: 2, name="b", authorize=async_hook)
    here = threading.current_thread().name
    run(registry, "a")
    run(registry, "b")
    assert threads == {"sync": [here], "async": ["navai-background-loop"]}

    async def main():
        await arun(registry, "a")
        await arun(registry, "b")
        return threading.current_thread().name

    threads.clear()
    loop_thread = asyncio.run(main())
    assert threads["sync"][0] != loop_thread  # a worker thread: the loop is never blocked
    assert threads["async"] == [loop_thread]  # awaited on the caller's loop


@pytest.mark.anyio
async def test_a_callable_object_with_an_async_call_is_awaited():
    class Policy:
        async def __call__(self, context, arguments):
            return False

    registry = guarded_registry(Policy(), [])
    assert (await arun(registry, "refund", {"order_id": 1})).status == 403
    assert run(registry, "refund", {"order_id": 1}).status == 403


def test_without_a_request_context_the_hook_gets_an_empty_one():
    seen = []
    registry = guarded_registry(lambda context, arguments: seen.append(context), [])
    execute(prepare_call(registry, {"function_name": "refund", "payload": {"order_id": 1}}))
    assert seen == [RequestContext()]


# ----- time limits -------------------------------------------------------------------------


def timeout_body(name, limit):
    return {
        "ok": False,
        "function_name": name,
        "error": "Function timed out.",
        "details": f"{name} did not finish within {limit} seconds.",
    }


def test_an_async_function_is_cancelled_at_its_limit():
    cancelled = threading.Event()
    registry = FunctionRegistry()

    @registry.function(timeout=0.1)
    async def slow() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    started = time.monotonic()
    reply = run(registry, "slow")
    assert time.monotonic() - started < 1
    assert (reply.status, reply.body) == (504, timeout_body("slow", 0.1))
    assert cancelled.wait(1)

    cancelled.clear()
    started = time.monotonic()
    reply = asyncio.run(arun(registry, "slow"))
    assert time.monotonic() - started < 1
    assert (reply.status, reply.body) == (504, timeout_body("slow", 0.1))
    assert cancelled.is_set()


def test_a_sync_function_past_its_limit_is_no_longer_waited_for():
    finished = threading.Event()
    registry = FunctionRegistry()

    @registry.function(timeout=0.1)
    def slow() -> str:
        time.sleep(0.4)
        finished.set()
        return "late"

    for call in (lambda: run(registry, "slow"), lambda: asyncio.run(arun(registry, "slow"))):
        finished.clear()
        started = time.monotonic()
        reply = call()
        assert time.monotonic() - started < 0.35
        assert (reply.status, reply.body) == (504, timeout_body("slow", 0.1))
        assert not finished.is_set()
        assert finished.wait(1)  # it was not stopped: Python cannot stop a thread


def test_the_server_default_applies_and_a_function_can_opt_out():
    registry = FunctionRegistry()

    @registry.function
    def slow_default() -> int:
        time.sleep(0.3)
        return 1

    @registry.function(timeout=0)
    def slow_unlimited() -> int:
        time.sleep(0.3)
        return 2

    @registry.function(timeout=1)
    def slow_own() -> int:
        time.sleep(0.3)
        return 3

    for reply in both_tails(registry, "slow_default", default_timeout=0.1):
        assert (reply.status, reply.body["details"]) == (
            504,
            "slow_default did not finish within 0.1 seconds.",
        )
    for name, value in (("slow_unlimited", 2), ("slow_own", 3)):
        for reply in both_tails(registry, name, default_timeout=0.1):
            assert (reply.status, reply.body["result"]) == (200, value)


def test_a_function_that_raises_timeout_error_itself_is_a_failure_not_a_timeout():
    registry = FunctionRegistry()

    @registry.function(timeout=1)
    def times_out_upstream() -> None:
        raise TimeoutError("upstream took too long")

    @registry.function(timeout=1)
    async def atimes_out_upstream() -> None:
        raise TimeoutError("upstream took too long")

    for name in ("times_out_upstream", "atimes_out_upstream"):
        for reply in both_tails(registry, name):
            assert reply.status == 500
            assert reply.body["error"] == "Function execution failed."


def test_fast_functions_with_a_limit_answer_normally():
    registry = FunctionRegistry()

    @registry.function(timeout=1)
    def add(a: int, b: int) -> int:
        return a + b

    @registry.function(timeout=1)
    async def aadd(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    @registry.function(timeout=1)
    def returns_coroutine() -> object:
        return aadd(1, 1)

    @registry.function(timeout=1)
    def fails() -> None:
        raise FunctionError("City not found")

    for name, expected in (("add", 5), ("aadd", 5), ("returns_coroutine", 2)):
        for reply in both_tails(registry, name, {"a": 2, "b": 3} if "add" in name else None):
            assert (reply.status, reply.body["result"]) == (200, expected)
    for reply in both_tails(registry, "fails"):
        assert (reply.status, reply.body["details"]) == (500, "City not found")


def test_sync_path_stays_responsive_while_timed_out_functions_still_run():
    release = threading.Event()
    registry = FunctionRegistry()

    @registry.function(timeout=0.1)
    def hangs() -> None:
        release.wait(1.5)

    @registry.function(timeout=1)
    def quick() -> str:
        return "ok"

    @registry.function(timeout=1)
    async def aquick() -> str:
        return "ok"

    replies = []
    workers = [
        threading.Thread(target=lambda: replies.append(run(registry, "hangs"))) for _ in range(8)
    ]
    started = time.monotonic()
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(1)
        assert time.monotonic() - started < 0.8
        assert [r.status for r in replies] == [504] * 8
        # eight calls are still running in their threads; other calls are answered at once
        assert not release.is_set()
        for name in ("quick", "aquick"):
            before = time.monotonic()
            assert run(registry, name).status == 200
            assert time.monotonic() - before < 0.3
    finally:
        release.set()


@pytest.mark.anyio
async def test_async_path_stays_responsive_with_more_hung_calls_than_worker_threads():
    # A hung function holds at most half of navai's 40 function threads; its further calls
    # answer 503, and other functions still run (tests/test_function_threads.py).
    release = threading.Event()
    registry = FunctionRegistry()

    @registry.function(timeout=0.1)
    def hangs() -> None:
        release.wait(1.5)

    @registry.function(timeout=1)
    def quick() -> str:
        return "ok"

    replies = []

    async def call():
        replies.append(await arun(registry, "hangs"))

    started = time.monotonic()
    try:
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(call)
        assert time.monotonic() - started < 0.8
        statuses = [r.status for r in replies]
        assert set(statuses) == {503, 504} and statuses.count(504) <= 20
        assert not release.is_set()
        before = time.monotonic()
        with anyio.fail_after(0.5):
            reply = await arun(registry, "quick")
        assert reply.status == 200
        assert time.monotonic() - before < 0.3
    finally:
        release.set()


def test_a_timeout_is_logged_once_without_a_trace(caplog):
    registry = FunctionRegistry()

    @registry.function(timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(1)

    with caplog.at_level(logging.INFO, logger="navai"):
        run(registry, "slow")
    [record] = [r for r in caplog.records if r.name == "navai"]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert "slow" in record.getMessage() and "0.05 seconds" in record.getMessage()


def test_execute_from_the_background_loop_is_still_refused_with_a_limit():
    registry = FunctionRegistry()

    @registry.function(timeout=1)
    async def inner() -> int:
        return 1

    owner = Concurrency()

    @registry.function(timeout=1)
    async def outer() -> object:
        return run(registry, "inner", expose_errors=True, concurrency=owner).body

    reply = run(registry, "outer", concurrency=owner)
    assert reply.body["result"]["details"].startswith(
        "RuntimeError: called from navai's background loop"
    )
    assert owner.background.running  # the refusal left the loop running
    owner.close()


# ----- configuration and the facade --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 30.0), ("5", 5.0), ("0.5", 0.5), ("0", 0.0)]
)
def test_timeout_setting_from_the_environment(value, expected):
    env = {} if value is None else {"NAVAI_FUNCTION_TIMEOUT": value}
    config = NavaiConfig.from_env(env)
    assert config.function_timeout_seconds == expected
    assert not [p for p in config.problems() if "NAVAI_FUNCTION_TIMEOUT" in p]


def test_unreadable_or_negative_timeout_setting_is_reported():
    with pytest.raises(SettingsError, match="NAVAI_FUNCTION_TIMEOUT='soon': expected a number"):
        NavaiConfig.from_env({"NAVAI_FUNCTION_TIMEOUT": "soon"})
    negative = NavaiConfig(function_timeout_seconds=-1)
    assert any("NAVAI_FUNCTION_TIMEOUT must be 0" in p for p in negative.problems())


def facade(tmp_path, registry, **settings):
    config = NavaiConfig(functions_base_dir=str(tmp_path), functions_folders="none", **settings)
    return Navai(config, functions=registry)


def post(navai, name, payload=None, context=CONTEXT):
    body = json.dumps({"function_name": name, "payload": payload or {}}).encode()
    headers = {**context.headers, "content-type": "application/json"}
    ctx = RequestContext("POST", "/navai/functions/execute", headers, context.client)
    return navai.handle(ctx, body), asyncio.run(navai.ahandle(ctx, body))


def test_facade_applies_route_hooks_then_function_hooks_and_the_default_limit(tmp_path):
    registry = FunctionRegistry()

    @registry.function(authorize=is_admin)
    def refund(order_id: int) -> int:
        return order_id

    @registry.function
    def status() -> str:
        return "shipped"

    @registry.function
    def slow() -> None:
        time.sleep(0.3)

    navai = facade(
        tmp_path,
        registry,
        function_timeout_seconds=0.1,
        authorize_functions=lambda context: context.header("x-role") is not None,
    )
    assert [r.status for r in post(navai, "status")] == [200, 200]
    for reply in post(navai, "refund", {"order_id": 1}):
        assert reply.status == 403
        assert json.loads(reply.content) == {
            "ok": False,
            "function_name": "refund",
            "error": "Forbidden.",
        }
    assert [r.status for r in post(navai, "refund", {"order_id": 1}, ADMIN)] == [200, 200]
    anonymous = RequestContext("POST", "/", {}, "127.0.0.1")
    for reply in post(navai, "refund", {"order_id": 1}, anonymous):
        assert reply.body == {"error": "Forbidden."}  # the route hook said no first
    for reply in post(navai, "slow"):
        assert (reply.status, json.loads(reply.content)) == (504, timeout_body("slow", 0.1))


# ----- honest failures -------------------------------------------------------------------------


def test_secrets_in_exception_messages_stay_on_the_server(tmp_path, caplog):
    registry = FunctionRegistry()

    @registry.function
    def leaky() -> None:
        raise ValueError(f"cannot connect with key {SECRET}")

    @registry.function
    async def aleaky() -> None:
        raise KeyError(SECRET)

    @registry.function
    def on_purpose() -> None:
        raise FunctionError("City not found")

    navai = facade(tmp_path, registry)
    with caplog.at_level(logging.DEBUG, logger="navai"):
        for name in ("leaky", "aleaky"):
            caplog.clear()
            for reply in post(navai, name):
                assert reply.status == 500
                assert json.loads(reply.content) == {
                    "ok": False,
                    "function_name": name,
                    "error": "Function execution failed.",
                    "details": "The function raised an error.",
                }
                assert SECRET not in reply.content.decode()
            traced = [r for r in caplog.records if r.exc_info]
            assert len(traced) == 2  # exactly once per call (two calls: handle and ahandle)
            assert all(r.exc_info[0] in (ValueError, KeyError) for r in traced)
            assert SECRET in caplog.text  # the full story is in the server's log
        caplog.clear()
        for reply in post(navai, "on_purpose"):
            assert (reply.status, reply.body["details"]) == (500, "City not found")
        assert not [r for r in caplog.records if r.exc_info]  # an expected failure: no trace

    exposed = facade(tmp_path, registry, expose_function_errors=True)
    for reply in post(exposed, "leaky"):
        assert reply.body["details"] == f"ValueError: cannot connect with key {SECRET}"


def test_one_trace_per_failure_in_the_async_tail(caplog):
    registry = FunctionRegistry()

    @registry.function
    def crashes() -> None:
        raise ZeroDivisionError("boom")

    with caplog.at_level(logging.INFO, logger="navai"):
        reply = asyncio.run(arun(registry, "crashes"))
    assert reply.status == 500
    [record] = [r for r in caplog.records if r.name == "navai" and r.exc_info]
    assert record.exc_info[0] is ZeroDivisionError
    assert record.levelno == logging.ERROR


def test_sync_callers_stop_waiting_for_an_async_function_that_blocks_the_loop():
    done = threading.Event()
    registry = FunctionRegistry()

    @registry.function(timeout=0.1)
    async def blocks_the_loop() -> None:
        time.sleep(1)  # never awaits: cancellation cannot reach it
        done.set()

    started = time.monotonic()
    try:
        reply = run(registry, "blocks_the_loop")
        took = time.monotonic() - started
        assert reply.status == 504
        assert 0.5 <= took < 0.9  # the limit plus the half-second grace
        assert not done.is_set()
    finally:
        assert done.wait(2)  # let the loop free again before other tests use it


def function_threads():
    return {t.ident for t in threading.enumerate() if t.name == "navai-function"}


def test_timed_sync_calls_reuse_idle_threads_and_never_a_busy_one():
    release = threading.Event()
    hung = []
    registry = FunctionRegistry()

    @registry.function(timeout=1)
    def where() -> int:
        return threading.get_ident()

    @registry.function(timeout=0.05)
    def hangs() -> None:
        hung.append(threading.get_ident())
        release.wait(1)

    run(registry, "where")
    before = function_threads()
    idents = {run(registry, "where").body["result"] for _ in range(20)}
    assert idents <= before  # idle threads are reused: no thread per call
    assert threading.get_ident() not in idents
    try:
        assert run(registry, "hangs").status == 504
        during = {run(registry, "where").body["result"] for _ in range(20)}
        assert hung and hung[0] not in during  # the hung call keeps its thread to itself
    finally:
        release.set()


def test_idle_function_threads_end():
    pool = FunctionThreads(4)
    pool.IDLE_SECONDS = 0.05
    thread, _ = pool.run("f", threading.current_thread, 1)
    thread.join(1)
    assert not thread.is_alive()  # the idle thread ended itself
    assert (pool._idle, pool.busy) == (0, 0)
    assert pool.run("f", lambda: 42, 1)[0] == 42  # and a new one starts when needed


def test_many_concurrent_timed_sync_calls_are_all_answered():
    registry = FunctionRegistry()

    @registry.function(timeout=1)
    def double(n: int) -> int:
        return 2 * n

    statuses = []

    def client(offset):
        statuses.extend(
            run(registry, "double", {"n": offset + i}).body.get("result") == 2 * (offset + i)
            for i in range(150)
        )

    workers = [threading.Thread(target=client, args=(k * 1000,)) for k in range(8)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(5)
    assert len(statuses) == 1200 and all(statuses)  # no job lost between threads
    assert time.monotonic() - started < 1.5
