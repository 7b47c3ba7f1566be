"""An async function's own ``asyncio.timeout`` is its own: it never cancels the caller.

With a time limit in force, every async call runs in a task of its own (its context copied
from the caller's, as ``asyncio.create_task`` does), so a timeout or cancellation scope the
function opens acts on that task only: over ``navai serve`` (ASGI and ``--wsgi``), in both
tails of the dispatch, and during a server-controlled call's tool runner.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import textwrap
import time
from collections.abc import Iterator

import httpx2
import pytest
from conftest import NavaiProcess, hermetic_env, stop_all
from fakes import FakeOpenAI

from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext
from navai_core.functions.dispatch import aexecute, execute, prepare_call

CONTEXT = RequestContext("POST", "/navai/functions/execute", {}, "127.0.0.1")
KEY = "sk-own-timeout-0123456789"

# The function of the report, word for word.
OWN_TIMEOUT = """\
import asyncio


async def own_timeout() -> str:
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(1)
    except TimeoutError:
        return "own timeout caught"
    return "no timeout"
"""

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="-")


def registry() -> FunctionRegistry:
    namespace: dict[str, object] = {}
    exec(compile(OWN_TIMEOUT, "own_timeout.py", "exec"), namespace)
    reg = FunctionRegistry()
    reg.add(namespace["own_timeout"])  # type: ignore[arg-type]

    @reg.function
    async def sets_var() -> str:
        """Sees the caller's context, and its own change stays in its own copy."""
        seen = request_var.get()
        request_var.set("set by the function")
        await asyncio.sleep(0)
        return seen

    @reg.function
    async def cancels_itself() -> str:
        """Cancels its own task: the call fails, the caller goes on."""
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)
        return "not reached"

    return reg


# ----- both tails, in process ------------------------------------------------------------------


@pytest.mark.parametrize("limit", [30.0, None])
def test_async_tail_the_functions_own_timeout_is_its_own(limit: float | None) -> None:
    prepared = prepare_call(registry(), {"function_name": "own_timeout"}, CONTEXT)

    async def caller() -> tuple[object, bool]:
        reply = await aexecute(prepared, default_timeout=limit)
        await asyncio.sleep(0)  # the caller itself was not cancelled
        task = asyncio.current_task()
        assert task is not None
        return reply.body, task.cancelling() == 0

    body, not_cancelled = asyncio.run(caller())
    assert body["ok"] is True and body["result"] == "own timeout caught"  # type: ignore[index]
    assert not_cancelled


@pytest.mark.parametrize("limit", [30.0, None])
def test_sync_tail_the_functions_own_timeout_is_its_own(limit: float | None) -> None:
    prepared = prepare_call(registry(), {"function_name": "own_timeout"}, CONTEXT)
    reply = execute(prepared, default_timeout=limit)
    assert reply.status == 200, reply.body
    assert reply.body["result"] == "own timeout caught"  # type: ignore[index]


@pytest.mark.parametrize("limit", [30.0, None])
def test_the_call_sees_a_copy_of_the_callers_context(limit: float | None) -> None:
    prepared = prepare_call(registry(), {"function_name": "sets_var"}, CONTEXT)

    async def caller() -> tuple[object, str]:
        request_var.set("set by the caller")
        reply = await aexecute(prepared, default_timeout=limit)
        return reply.body["result"], request_var.get()  # type: ignore[index]

    seen, after = asyncio.run(caller())
    assert seen == "set by the caller"
    assert after == "set by the caller"  # the function's change stayed in its copy


def test_a_function_that_cancels_itself_fails_alone() -> None:
    prepared = prepare_call(registry(), {"function_name": "cancels_itself"}, CONTEXT)

    async def caller() -> tuple[int, str]:
        reply = await aexecute(prepared, default_timeout=30.0)
        await asyncio.sleep(0.01)  # raises CancelledError here if the caller was hit
        return reply.status, reply.body["error"]  # type: ignore[index]

    assert asyncio.run(caller()) == (500, "Function execution failed.")


# ----- over navai serve ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("own-timeout")
    folder = root / "functions"
    folder.mkdir()
    (folder / "own_timeout.py").write_text(textwrap.dedent(OWN_TIMEOUT))
    env = hermetic_env(
        {
            "NAVAI_FUNCTIONS_BASE_DIR": str(root),
            "NAVAI_FUNCTIONS_FOLDERS": "functions",
            "NAVAI_RATE_LIMIT_FUNCTIONS": "off",
            "NAVAI_FUNCTION_TIMEOUT": "30",  # a limit in force (the default is one too)
        }
    )
    processes = [
        NavaiProcess(["--port", "0", *extra], env, root, root, f"own-timeout-{kind}")
        for kind, extra in (("asgi", []), ("wsgi", ["--wsgi"]))
    ]
    try:
        yield {p.name.rsplit("-", 1)[1]: p.wait_ready() for p in processes}
    finally:
        stop_all(processes)


@pytest.mark.slow  # starts real processes
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_over_navai_serve_the_functions_own_timeout_is_its_own(
    servers: dict[str, str], kind: str
) -> None:
    response = httpx2.post(
        f"{servers[kind]}/navai/functions/execute",
        json={"function_name": "own_timeout", "payload": {}},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ok": True,
        "function_name": "own_timeout",
        "source": "functions/own_timeout.py#own_timeout",
        "result": "own timeout caught",
    }


# ----- during a server-controlled call ----------------------------------------------------------


def test_during_a_call_the_functions_own_timeout_is_its_own() -> None:
    with FakeOpenAI(key=KEY) as fake:
        navai = Navai(
            NavaiConfig(
                openai_api_key=KEY,
                openai_base_url=fake.base_url,
                upstream_max_retries=0,
                function_timeout_seconds=30,
            ),
            functions=registry(),
        )
        try:
            call = fake.open_call()
            navai.calls.attach(call.call_id, api_key=KEY, rate_key="user-1")
            call.wait_for(lambda c: c.connections == 1)
            events = [
                {
                    "type": "response.function_call_arguments.done",
                    "response_id": "resp_1",
                    "call_id": f"t{i}",
                    "name": "own_timeout",
                    "arguments": json.dumps({}),
                }
                for i in (1, 2)
            ]
            call.send(events[0])
            call.wait_for(lambda c: len(c.outputs()) == 1)
            call.send(events[1])  # the tool runner is still there for the next one
            call.wait_for(lambda c: len(c.outputs()) == 2)
            for call_id in ("t1", "t2"):
                assert call.output_of(call_id)["result"] == "own timeout caught"
            assert call.call_id in navai.calls
            time.sleep(0.05)
            assert call.call_id in navai.calls  # the call is still live
            call.end()
        finally:
            navai.close()


# ----- the first step run at once (Python 3.11 emulates 3.12's eager start) -------------------


def first_step_registry(events: list[str]) -> FunctionRegistry:
    reg = FunctionRegistry()

    @reg.function
    async def fails_at_once() -> str:
        """Raises in its first step, never suspending."""
        raise ValueError("at once")

    @reg.function
    async def waits_on_a_task() -> str:
        """Awaits a task of its own: cancelling the call at its limit cancels that task."""

        async def inner() -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                events.append("inner cancelled")
                raise

        await asyncio.create_task(inner())
        return "not reached"

    @reg.function
    async def current_task_is_its_own() -> bool:
        """Its first step sees its own task, not the caller's."""
        return asyncio.current_task() is not CALLER.get()

    return reg


CALLER: contextvars.ContextVar[object] = contextvars.ContextVar("caller", default=None)


def test_a_first_step_that_raises_fails_the_call_and_nothing_is_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prepared = prepare_call(first_step_registry([]), {"function_name": "fails_at_once"}, CONTEXT)

    async def caller() -> int:
        reply = await aexecute(prepared, default_timeout=30.0)
        for _ in range(3):
            await asyncio.sleep(0)  # the task ends by itself meanwhile
        return reply.status

    with caplog.at_level("ERROR", logger="asyncio"):
        assert asyncio.run(caller()) == 500
        import gc

        gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


def test_the_limit_cancels_what_the_function_waits_on() -> None:
    events: list[str] = []
    prepared = prepare_call(
        first_step_registry(events), {"function_name": "waits_on_a_task"}, CONTEXT
    )

    async def caller() -> int:
        reply = await aexecute(prepared, default_timeout=0.2)
        for _ in range(5):
            await asyncio.sleep(0.01)
        return reply.status

    assert asyncio.run(caller()) == 504
    assert events == ["inner cancelled"]


def test_the_first_step_runs_in_the_functions_own_task() -> None:
    prepared = prepare_call(
        first_step_registry([]), {"function_name": "current_task_is_its_own"}, CONTEXT
    )

    async def caller() -> object:
        CALLER.set(asyncio.current_task())
        reply = await aexecute(prepared, default_timeout=30.0)
        assert asyncio.current_task() is CALLER.get()  # the caller is current again
        return reply.body["result"]  # type: ignore[index]

    assert asyncio.run(caller()) is True
