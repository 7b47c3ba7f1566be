"""The sideband runner against the fake Realtime server: function calls run through the
execute route's dispatch, exactly once, one response.create per response, limits, reconnects,
summaries, hooks, and nothing left behind."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import navai_for
from fakes import FakeCall, FakeOpenAI, fn_call
from fakes import response_done as done

from navai_core import FunctionError, FunctionRegistry, Navai, NavaiConfig
from navai_core.calls.manager import CallSummary

KEY = "sk-sideband-key-0123456789"


def tools() -> FunctionRegistry:
    reg = FunctionRegistry()

    @reg.function
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @reg.function
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    @reg.function
    def explode() -> None:
        raise RuntimeError(f"secret internals {KEY}")

    @reg.function
    def city(name: str) -> str:
        if name == "Atlantis":
            raise FunctionError("City not found")
        return name

    def only_even(context, arguments) -> bool:
        return context.header("x-navai-call-id", "").startswith("rtc_") and arguments["n"] % 2 == 0

    @reg.function(authorize=only_even)
    def guarded(n: int) -> int:
        return n

    @reg.function
    def where(context) -> dict:
        return {"path": context.path, "method": context.method, "client": context.client}

    return reg


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=KEY) as server:
        yield server


class Recorder:
    def __init__(self) -> None:
        self.summaries: list[CallSummary] = []
        self.events: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def on_end(self, summary: CallSummary) -> None:
        with self.lock:
            self.summaries.append(summary)

    async def on_event(self, call_id: str, event: dict) -> None:
        self.events.append((call_id, event))

    def summary(self, call_id: str, timeout: float = 10.0) -> CallSummary:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [s for s in self.summaries if s.call_id == call_id]
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                raise AssertionError(f"no summary for {call_id}")
            time.sleep(0.01)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def hooks(recorder: Recorder) -> dict[str, object]:
    return {"on_call_end": recorder.on_end, "on_call_event": recorder.on_event}


@pytest.fixture
def navai(fake: FakeOpenAI, recorder: Recorder) -> Iterator[Navai]:
    instance = navai_for(fake, functions=tools(), upstream_max_retries=0, **hooks(recorder))
    instance.calls.reconnect_delays = (0.05, 0.1, 0.2)
    yield instance
    instance.close()
    assert instance.calls.live() == []


def attach(navai: Navai, fake: FakeOpenAI) -> FakeCall:
    call = fake.open_call()
    live = navai.calls.attach(call.call_id, api_key=KEY, rate_key="user-1")
    assert live.call_id == call.call_id and live.key == "user-1"
    call.wait_for(lambda c: c.connections == 1)
    return call


def test_function_calls_run_once_with_one_response_create(navai, fake, recorder) -> None:
    call = attach(navai, fake)
    assert call.sideband_authorization == [f"Bearer {KEY}"]
    call.send(
        fn_call("c1", "add", {"a": 2, "b": 3}),
        fn_call("c1", "add", {"a": 2, "b": 3}),  # duplicate
        "this is not json",
        {"type": "session.updated"},
        done(
            "resp_1",
            ("c1", "add", {"a": 2, "b": 3}),
            ("c2", "Add", {"a": 1, "b": 1}),  # only in response.done; names are normalised
            usage={"total_tokens": 7, "input_tokens": 5},
        ),
    )
    call.wait_for(lambda c: len(c.of_type("response.create")) == 1)
    assert call.output_of("c1") == {
        "ok": True,
        "function_name": "add",
        "source": call.output_of("c1")["source"],
        "result": 5,
    }
    assert call.output_of("c2")["result"] == 2
    # The create came after both outputs.
    kinds = [e["type"] for e in call.received]
    assert kinds.index("response.create") == len(kinds) - 1
    call.end()
    summary = recorder.summary(call.call_id)
    assert (summary.end_reason, summary.function_calls, summary.key) == ("ended", 2, "user-1")
    assert summary.usage == {"total_tokens": 7, "input_tokens": 5}
    assert len(call.of_type("response.create")) == 1
    assert len(call.outputs()) == 2
    assert {e["type"] for _, e in recorder.events} >= {"response.done", "session.updated"}


def test_error_outputs_never_close_the_sideband(navai, fake, recorder) -> None:
    call = attach(navai, fake)
    call.send(
        fn_call("e1", "explode", {}),
        fn_call("e2", "nope", {}),
        fn_call("e3", "add", "{not json"),
        fn_call("e4", "add", {"a": "x"}),
        fn_call("e5", "city", {"name": "Atlantis"}),
        fn_call("e6", "guarded", {"n": 3}),
        fn_call("e7", "guarded", {"n": 4}),
        fn_call("e8", "where", {}),
        done("resp_1", *[(f"e{i}", "x", {}) for i in range(1, 9)]),
    )
    call.wait_for(lambda c: len(c.of_type("response.create")) == 1)
    assert call.output_of("e1") == {
        "ok": False,
        "function_name": "explode",
        "error": "Function execution failed.",
        "details": "The function raised an error.",
    }
    assert call.output_of("e2")["error"] == "Unknown or disallowed function."
    assert "add" in call.output_of("e2")["available_functions"]
    assert call.output_of("e3")["error"] == "Invalid arguments."
    assert call.output_of("e4")["error"] == "Invalid arguments."
    assert call.output_of("e5")["details"] == "City not found"
    assert call.output_of("e6") == {"ok": False, "function_name": "guarded", "error": "Forbidden."}
    assert call.output_of("e7")["result"] == 4
    assert call.output_of("e8")["result"] == {
        "path": f"/navai/realtime/calls/{call.call_id}",
        "method": "CALL",
        "client": "user-1",
    }
    assert KEY not in json.dumps(call.received)
    assert call.call_id in navai.calls
    call.end()
    recorder.summary(call.call_id)


def test_interrupted_response_sends_outputs_but_no_create(navai, fake, recorder) -> None:
    call = attach(navai, fake)
    call.send(
        fn_call("s1", "slow", {"seconds": 0.2}),
        done(
            "resp_1",
            ("s1", "slow", {"seconds": 0.2}),
            ("s2", "add", {"a": 1, "b": 2}),
            status="cancelled",
        ),
    )
    call.wait_for(lambda c: len(c.outputs()) == 1)
    time.sleep(0.2)
    assert [o["call_id"] for o in call.outputs()] == ["s1"]
    assert call.of_type("response.create") == []
    call.end()
    assert recorder.summary(call.call_id).function_calls == 1


def test_reconnects_while_live_and_sends_late_outputs(navai, fake, recorder) -> None:
    call = attach(navai, fake)
    call.send(fn_call("r1", "slow", {"seconds": 0.3}))
    time.sleep(0.05)
    call.drop()
    call.wait_for(lambda c: c.connections == 2)
    call.send(done("resp_1", ("r1", "slow", {"seconds": 0.3})))
    call.wait_for(lambda c: len(c.of_type("response.create")) == 1)
    assert call.output_of("r1")["result"] == "slept"
    assert call.sideband_authorization == [f"Bearer {KEY}"] * 2
    call.end()
    assert recorder.summary(call.call_id).end_reason == "ended"


def test_refused_reconnect_ends_the_call(navai, fake, recorder) -> None:
    call = attach(navai, fake)
    call.ended = True  # the call is over: new control connections are refused
    call.drop()
    assert recorder.summary(call.call_id).end_reason == "ended"
    assert navai.calls.live() == []


def test_max_seconds_hangs_up(fake, recorder) -> None:
    navai = navai_for(
        fake, functions=tools(), upstream_max_retries=0, **hooks(recorder), call_max_seconds=0.3
    )
    try:
        call = attach(navai, fake)
        summary = recorder.summary(call.call_id)
        assert summary.end_reason == "max_seconds"
        assert 0.3 <= summary.seconds < 3
        call.wait_for(lambda c: c.hangups == 1)
        hangup = [r for r in fake.requests if r.path.endswith(f"/{call.call_id}/hangup")]
        assert len(hangup) == 1 and hangup[0].headers["authorization"] == f"Bearer {KEY}"
    finally:
        navai.close()


def test_budget_hangs_up_and_refuses_new_calls(fake, recorder) -> None:
    navai = navai_for(
        fake, functions=tools(), upstream_max_retries=0, **hooks(recorder), call_budget="1/hour"
    )  # 60 s of call time
    navai.calls.budget_tick_seconds = 0.1
    try:
        navai.calls.budgets.check("user-1")
        # 59 of the 60 seconds are spent already.
        asyncio.run(navai.calls.budgets.acharge("user-1", 59))
        call = attach(navai, fake)
        summary = recorder.summary(call.call_id, timeout=15)
        assert summary.end_reason == "budget"
        assert 1 <= summary.seconds < 5
        call.wait_for(lambda c: c.hangups == 1)
        with pytest.raises(Exception) as caught:
            navai.calls.budgets.check("user-1")
        assert caught.value.status_code == 429  # type: ignore[attr-defined]
        navai.calls.budgets.check("someone-else")
    finally:
        navai.close()


def test_hangup_api_and_close_leave_nothing(navai, fake, recorder) -> None:
    before = threading.active_count()
    call = attach(navai, fake)
    other = attach(navai, fake)
    assert {c.call_id for c in navai.calls.live()} == {call.call_id, other.call_id}
    assert navai.calls.hangup(call.call_id) is True
    assert navai.calls.hangup(call.call_id) is False
    assert recorder.summary(call.call_id).end_reason == "hangup"
    assert call.hangups == 1
    navai.close()  # the server stops: calls are hung up
    assert recorder.summary(other.call_id).end_reason == "shutdown"
    assert other.hangups == 1
    assert navai.calls.live() == []
    deadline = time.monotonic() + 5
    while fake.live_sidebands() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.live_sidebands() == 0
    assert threading.active_count() <= before + 1


def test_attach_on_a_running_loop(fake, recorder) -> None:
    async def main() -> CallSummary:
        navai = navai_for(fake, functions=tools(), upstream_max_retries=0, **hooks(recorder))
        call = fake.open_call()
        navai.calls.attach(call.call_id, api_key=KEY, rate_key="k", transport="sip")
        while call.connections == 0:
            await asyncio.sleep(0.01)
        call.send(fn_call("a1", "add", {"a": 1, "b": 2}), done("resp_1", ("a1", "add", {})))
        while not call.of_type("response.create"):
            await asyncio.sleep(0.01)
        await navai.aclose()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert tasks == []
        return recorder.summary(call.call_id, timeout=0)

    summary = asyncio.run(main())
    assert (summary.end_reason, summary.transport, summary.function_calls) == ("shutdown", "sip", 1)


def test_pending_function_calls_are_bounded(navai, fake, recorder, monkeypatch) -> None:
    """Past the bound of pending function calls of one call, a function call gets an error
    output at once, without a task; those already pending still run."""
    from navai_core.calls import tools as _call_tools

    monkeypatch.setattr(_call_tools, "MAX_PENDING_FUNCTIONS", 3)
    call = attach(navai, fake)
    call.send(*[fn_call(f"p{i}", "slow", {"seconds": 1.0}) for i in range(1, 6)])
    call.wait_for(lambda c: len(c.outputs()) >= 2, timeout=5)
    early = {out["item"]["call_id"] for out in call.of_type("conversation.item.create")[:2]}
    assert early == {"p4", "p5"}
    assert call.output_of("p4") == {
        "ok": False,
        "function_name": "slow",
        "error": "Too many function calls at once.",
        "details": "This call has 3 function calls pending; try again when they are done.",
    }
    call.wait_for(lambda c: len(c.outputs()) == 5, timeout=10)
    assert [call.output_of(f"p{i}")["result"] for i in (1, 2, 3)] == ["slept"] * 3


def test_events_kept_while_reconnecting_are_bounded(fake, recorder, caplog) -> None:
    """Events waiting for the control connection to come back are capped: past the cap they
    are dropped (logged once), so a call whose connection stays down holds bounded memory."""
    from navai_core.calls import connection as _call_connection
    from navai_core.calls.plans import sideband_url
    from navai_core.upstream.providers import target_for_key

    navai = navai_for(fake, functions=tools(), upstream_max_retries=0, **hooks(recorder))
    target = target_for_key(navai.config, KEY)

    async def main() -> tuple[int, bytes]:
        call = _call_connection.Connection(
            "rtc_unsent", sideband_url(target, "rtc_unsent"), target.headers
        )
        for i in range(_call_connection.MAX_UNSENT_EVENTS + 50):
            await call.send({"type": "conversation.item.create", "n": i})
        return len(call.unsent), call.unsent[-1]

    kept, last = asyncio.run(main())
    assert kept == _call_connection.MAX_UNSENT_EVENTS
    assert json.loads(last)["n"] == _call_connection.MAX_UNSENT_EVENTS - 1
    assert caplog.text.count("dropping events") == 1
    navai.close()


# ----- how navai closes the control connection, and what it logs -------------------------------


class _CloseCodes:
    """A bare WebSocket server on 127.0.0.1 standing in for the sideband: it keeps the close
    code each connection received from navai."""

    def __init__(self) -> None:
        self.codes: list[int | None] = []
        self.connected = asyncio.Event()

    async def handler(self, websocket) -> None:  # type: ignore[no-untyped-def]
        self.connected.set()
        try:
            async for _ in websocket:
                pass
        except Exception:
            pass
        self.codes.append(websocket.close_code)


@pytest.mark.parametrize("how", ["hangup", "shutdown"])
def test_navai_ends_a_call_with_a_normal_close(recorder, how: str) -> None:
    """A hangup through navai and a shutdown close the control connection with 1000 (a
    normal end), not 1011 (internal error)."""
    from websockets.asyncio.server import serve

    server = _CloseCodes()

    async def main() -> list[int | None]:
        async with serve(server.handler, "127.0.0.1", 0) as listening:
            port = listening.sockets[0].getsockname()[1]
            navai = Navai(
                NavaiConfig(
                    openai_api_key=KEY,
                    openai_base_url=f"http://127.0.0.1:{port}/v1",
                    upstream_max_retries=0,
                    on_call_end=recorder.on_end,
                ),
                functions=tools(),
            )
            navai.calls.attach("rtc_close", api_key=KEY, rate_key="k")
            await asyncio.wait_for(server.connected.wait(), 5)
            if how == "hangup":
                assert await navai.calls.ahangup("rtc_close")
            await navai.aclose()
            for _ in range(200):
                if server.codes:
                    break
                await asyncio.sleep(0.01)
        return server.codes

    assert asyncio.run(main()) == [1000]
    assert recorder.summary("rtc_close", timeout=0).end_reason == how


def test_a_call_logs_its_start_and_each_function_run(navai, fake, caplog) -> None:
    """Logger "navai" at INFO: a line when the call starts, one per function run (name, ok or
    failed, milliseconds), and the end line."""
    caplog.set_level("INFO", logger="navai")
    call = attach(navai, fake)
    call.send(fn_call("l1", "add", {"a": 1, "b": 2}), fn_call("l2", "explode", {}))
    call.wait_for(lambda c: len(c.outputs()) == 2)
    call.end()
    navai.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "navai"]
    started = [line for line in lines if line.startswith(f"call {call.call_id} started")]
    assert started == [f"call {call.call_id} started (webrtc), key user-1"]
    runs = sorted(line for line in lines if line.startswith(f"call {call.call_id}: function"))
    assert len(runs) == 2, lines
    assert runs[0].startswith(f"call {call.call_id}: function add ok in ")
    assert runs[1].startswith(f"call {call.call_id}: function explode failed in ")
    assert all(line.endswith(" ms") for line in runs)
    assert any(line.startswith(f"call {call.call_id} ended") for line in lines)
