"""No call without an owner: every call navai creates upstream is held (its sideband, tools,
limits and budget) or hung up, on every path — refusals, sidebands that never hold or keep
dropping, a blocked background loop, shutdown — and who may hang one up.

The fake OpenAI answers the HTTP API on 127.0.0.1; a hostile sideband (a bare ``websockets``
server on 127.0.0.1 that refuses or drops every connection) stands in for the control
connection where one is needed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from conftest import SERVER_KEY, navai_for
from fakes import Behaviour, FakeOpenAI, fn_call, refused_port

from navai_core import FunctionRegistry, Navai, RequestContext
from navai_core.calls import connection as call_connection
from navai_core.calls.manager import CallSummary

OFFER = "v=0\r\no=- 77 2 IN IP4 127.0.0.1\r\ns=browser offer\r\n"
CREATE = "/v1/realtime/calls"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=SERVER_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: FakeOpenAI) -> None:
    fake.reset()


class Ends:
    """The ``on_call_end`` hook: every summary, by call id."""

    def __init__(self) -> None:
        self.summaries: dict[str, CallSummary] = {}
        self.lock = threading.Lock()

    def __call__(self, summary: CallSummary) -> None:
        with self.lock:
            self.summaries[summary.call_id] = summary

    def of(self, call_id: str, timeout: float = 10.0) -> CallSummary:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if call_id in self.summaries:
                    return self.summaries[call_id]
            if time.monotonic() > deadline:
                raise AssertionError(f"no summary for {call_id}")
            time.sleep(0.01)


def start_context(client: str = "10.0.0.1", **headers: str) -> RequestContext:
    return RequestContext(
        "POST",
        "/navai/realtime/calls",
        {"content-type": "application/sdp", **headers},
        client=client,
    )


def hangup_context(call_id: str, client: str = "10.0.0.1", **headers: str) -> RequestContext:
    headers.setdefault("content-type", "application/json")
    path = f"/navai/realtime/calls/{call_id}/hangup"
    return RequestContext("POST", path, headers, client=client)


def creates(fake: FakeOpenAI) -> int:
    return sum(1 for r in fake.requests if r.path == CREATE)


def location(reply: Any) -> str:
    return str(dict(reply.headers)["Location"].rsplit("/", 1)[1])


def wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


# ----- 1. the live-call cap is a place reserved before the create ------------------------------


def test_concurrent_creates_past_the_cap_never_reach_openai_async(fake: FakeOpenAI) -> None:
    """20 creates at once with a cap of 3: three reach OpenAI, 17 answer 503 first."""
    navai = navai_for(fake, functions_enabled=False, call_max_live=3, rate_limit_calls="off")
    fake.default = Behaviour(status=None, delay=0.3)

    async def main() -> list[int]:
        replies = await asyncio.gather(
            *(navai.ahandle(start_context(f"10.0.1.{i}"), OFFER.encode()) for i in range(20))
        )
        statuses = [reply.status for reply in replies]
        await navai.aclose()
        return statuses

    statuses = asyncio.run(main())
    assert sorted(statuses) == [201] * 3 + [503] * 17
    assert creates(fake) == 3
    assert sum(call.hangups for call in fake.calls.values()) == 3  # the shutdown's


def test_concurrent_creates_past_the_cap_never_reach_openai_sync(fake: FakeOpenAI) -> None:
    navai = navai_for(fake, functions_enabled=False, call_max_live=3, rate_limit_calls="off")
    fake.default = Behaviour(status=None, delay=0.3)
    statuses: list[int] = []

    def offer(i: int) -> None:
        statuses.append(navai.handle(start_context(f"10.0.2.{i}"), OFFER.encode()).status)

    threads = [threading.Thread(target=offer, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    navai.close()
    assert sorted(statuses) == [201] * 3 + [503] * 17
    assert creates(fake) == 3


def test_a_failed_create_gives_its_place_back(fake: FakeOpenAI) -> None:
    navai = navai_for(fake, functions_enabled=False, call_max_live=1, rate_limit_calls="off")
    # Each failed create is retried (2 retries), after 0.01 s rather than 0.5 and 1 s.
    navai.retry_policy = attrs.evolve(navai.retry_policy, initial_delay=0.01)
    fake.create_status = 500
    fake.create_body = b'{"error": {"message": "boom"}}'
    for _ in range(3):
        assert navai.handle(start_context(), OFFER.encode()).status == 500
    assert creates(fake) == 9
    fake.create_status = fake.create_body = None
    assert navai.handle(start_context(), OFFER.encode()).status == 201
    navai.close()


# ----- 2. the call-time budget: bounded overshoot, the exact limit is spent ----------------------


def budget_navai(fake: FakeOpenAI, ends: Ends, spent: int) -> Navai:
    navai = navai_for(fake, functions_enabled=False, call_budget="1/hour", on_call_end=ends)
    navai.calls.budget_tick_seconds = 0.2
    asyncio.run(navai.calls.budgets.acharge("k", spent))  # of 60 s
    return navai


def test_parallel_calls_spend_no_more_than_the_budget(fake: FakeOpenAI) -> None:
    """3 s left and 10 calls at once: the calls last about 3 s in all (the bound of
    docs/security.md: the budget plus, per call, the time to hang it up), not 13 s."""
    ends = Ends()
    navai = budget_navai(fake, ends, 57)
    calls = [fake.open_call() for _ in range(10)]
    for call in calls:
        navai.calls.attach(call.call_id, api_key=SERVER_KEY, rate_key="k")
    summaries = [ends.of(call.call_id, timeout=15) for call in calls]
    navai.close()
    assert {s.end_reason for s in summaries} == {"budget"}
    total = sum(s.seconds for s in summaries)
    assert total <= 3 + 10 * 0.3, [s.seconds for s in summaries]


def test_a_charge_landing_on_the_limit_leaves_nothing(fake: FakeOpenAI) -> None:
    """1 s left: the call gets that second, not one more; then the key is spent."""
    ends = Ends()
    navai = budget_navai(fake, ends, 59)
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=SERVER_KEY, rate_key="k")
    summary = ends.of(call.call_id, timeout=10)
    assert summary.end_reason == "budget"
    assert summary.seconds < 1.6
    with pytest.raises(Exception) as refused:
        navai.calls.budgets.check("k")
    assert refused.value.status_code == 429  # type: ignore[attr-defined]
    navai.close()


# ----- 3 and 4. sidebands that never hold, or keep dropping -------------------------------------


class HostileSideband:
    """A WebSocket server on 127.0.0.1 that refuses every handshake (``refuse``: a status) or
    accepts and drops the connection at once (close code 1011)."""

    def __init__(self, refuse: int | None = None) -> None:
        self.refuse = refuse
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HostileSideband:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()

        def process_request(connection: Any, request: Any) -> Any:
            self.connections += 1
            if self.refuse is not None:
                return connection.respond(self.refuse, "go away\n")
            return None

        async def handler(websocket: Any) -> None:
            await websocket.close(1011, "dropped")

        async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()


def redirect_sideband(navai: Navai, fake: FakeOpenAI, port: int) -> None:
    """The calls' control connections go to ``port`` on 127.0.0.1 (HTTP stays on the fake)."""

    def connect(url: str, headers: tuple[tuple[str, str], ...]) -> Any:
        moved = url.replace(f"127.0.0.1:{fake.port}", f"127.0.0.1:{port}")
        return call_connection._connect(moved, headers)

    navai.calls._connect = connect


def test_a_sideband_refused_at_first_connect_hangs_the_call_up(fake: FakeOpenAI) -> None:
    ends = Ends()
    navai = navai_for(fake, functions_enabled=False, on_call_end=ends)
    with HostileSideband(refuse=429) as hostile:
        redirect_sideband(navai, fake, hostile.port)
        reply = navai.handle(start_context(), OFFER.encode())
        assert reply.status == 201
        call_id = location(reply)
        summary = ends.of(call_id)
    assert summary.end_reason == "refused"  # not "ended": nobody hung up
    wait(lambda: fake.call(call_id).hangups == 1)
    assert navai.calls.live() == []
    navai.close()


def test_a_sideband_lost_for_good_hangs_the_call_up(fake: FakeOpenAI) -> None:
    ends = Ends()
    navai = navai_for(fake, functions_enabled=False, on_call_end=ends)
    navai.calls.reconnect_delays = (0.02, 0.04, 0.08)
    redirect_sideband(navai, fake, refused_port())
    reply = navai.handle(start_context(), OFFER.encode())
    call_id = location(reply)
    assert ends.of(call_id).end_reason == "lost"
    wait(lambda: fake.call(call_id).hangups == 1)
    navai.close()


def test_a_sideband_accepted_then_dropped_gives_up_and_hangs_up(fake: FakeOpenAI) -> None:
    """Each handshake succeeds and the connection drops at once: the backoff goes on across
    handshakes (six tries by default; three here), then navai gives up and hangs up."""
    ends = Ends()
    navai = navai_for(fake, functions_enabled=False, on_call_end=ends)
    navai.calls.reconnect_delays = (0.02, 0.04, 0.08)
    with HostileSideband() as hostile:
        redirect_sideband(navai, fake, hostile.port)
        reply = navai.handle(start_context(), OFFER.encode())
        call_id = location(reply)
        summary = ends.of(call_id, timeout=5)
        connections = hostile.connections
    assert summary.end_reason == "lost"
    assert connections == 4  # the first and three tries
    wait(lambda: fake.call(call_id).hangups == 1)
    navai.close()


# ----- 5. orphans: a blocked background loop, a shutdown during a create ------------------------


def blocking_tools() -> FunctionRegistry:
    registry = FunctionRegistry()

    @registry.function
    async def block(seconds: float) -> str:
        """An async function that blocks its event loop (a mistake navai must survive)."""
        time.sleep(seconds)
        return "done"

    return registry


def test_a_create_the_blocked_loop_cannot_take_is_hung_up(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync servers hold calls on navai's background loop; while an async function blocks
    it, a new call cannot be held: 503, and the call is hung up, never held later."""
    from navai_core.calls import manager

    monkeypatch.setattr(manager, "LOOP_WAIT_SECONDS", 0.5)
    navai = navai_for(fake, functions=blocking_tools(), rate_limit_functions="off")
    execute = RequestContext(
        "POST", "/navai/functions/execute", {"content-type": "application/json"}
    )
    body = b'{"function_name": "block", "payload": {"seconds": 2}}'
    blocker = threading.Thread(target=navai.handle, args=(execute, body))
    blocker.start()
    time.sleep(0.2)
    reply = navai.handle(start_context(), OFFER.encode())
    assert reply.status == 503, reply.body
    [call] = fake.calls.values()
    wait(lambda: call.hangups == 1)
    blocker.join(10)
    time.sleep(0.3)  # the loop runs again: nothing takes the call now
    assert navai.calls.live() == []
    assert call.connections == 0
    navai.close()


ATTACH_FAILURES = {
    "a stopped loop": (RuntimeError, "the event loop to hold the call on is not running"),
    "a duplicate call id": (ValueError, "call rtc_fake1 is already held"),
}


@pytest.mark.parametrize("tail", ["sync", "async"])
@pytest.mark.parametrize("failure", list(ATTACH_FAILURES))
def test_a_created_call_that_cannot_be_held_is_hung_up(
    fake: FakeOpenAI, tail: str, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever keeps a created call from being held (not only a full process), the call is
    hung up before the client gets a JSON error: no call runs upstream without an owner; the
    reason is in the log."""
    navai = navai_for(fake, functions_enabled=False)
    error, message = ATTACH_FAILURES[failure]

    def attach(call_id: str, **options: Any) -> None:
        raise error(message)

    navai.calls.attach = attach  # type: ignore[method-assign]
    if tail == "sync":
        reply = navai.handle(start_context(), OFFER.encode())
    else:
        reply = asyncio.run(navai.ahandle(start_context(), OFFER.encode()))
    [call] = fake.calls.values()
    assert call.hangups == 1  # (before the answer)
    assert reply.status == 500, reply.body
    assert reply.body == {
        "error": "The call was created but could not be held, so it was hung up.",
        "call_id": call.call_id,
    }
    [logged] = [r for r in caplog.records if "could not be held" in r.getMessage()]
    assert logged.getMessage() == f"call {call.call_id} was created but could not be held: hung up"
    assert logged.exc_info is not None and str(logged.exc_info[1]) == message
    assert navai.calls.live() == []
    navai.close()


def test_a_create_answered_after_a_sync_shutdown_began_is_hung_up(fake: FakeOpenAI) -> None:
    navai = navai_for(fake, functions_enabled=False)
    fake.answer(Behaviour(status=None, delay=1.0))  # the create
    replies: list[Any] = []
    requester = threading.Thread(
        target=lambda: replies.append(navai.handle(start_context(), OFFER.encode()))
    )
    requester.start()
    fake.wait_for_requests(1)
    navai.close()
    requester.join(10)
    [call] = fake.calls.values()
    wait(lambda: call.hangups == 1, timeout=5)
    assert replies[0].status == 503
    time.sleep(0.2)
    assert navai.calls.live() == []


def test_a_create_answered_after_an_async_shutdown_began_is_hung_up(fake: FakeOpenAI) -> None:
    navai = navai_for(fake, functions_enabled=False)
    fake.answer(Behaviour(status=None, delay=1.0))

    async def main() -> int:
        request = asyncio.ensure_future(navai.ahandle(start_context(), OFFER.encode()))
        while not fake.requests:
            await asyncio.sleep(0.01)
        await navai.aclose()
        return (await request).status

    assert asyncio.run(main()) == 503
    [call] = fake.calls.values()
    wait(lambda: call.hangups == 1, timeout=5)
    assert navai.calls.live() == []


def test_a_create_whose_requester_gave_up_is_hung_up_when_it_answers(fake: FakeOpenAI) -> None:
    """The request is cancelled (the server's shutdown grace ran out) while OpenAI creates the
    call: navai still reads the answer and hangs the call up."""
    navai = navai_for(fake, functions_enabled=False)
    fake.answer(Behaviour(status=None, delay=0.6))

    async def main() -> None:
        request = asyncio.ensure_future(navai.ahandle(start_context(), OFFER.encode()))
        while not fake.requests:
            await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await navai.aclose()  # waits for the create it still owes an answer to

    asyncio.run(main())
    [call] = fake.calls.values()
    wait(lambda: call.hangups == 1, timeout=5)
    assert call.connections == 0 and navai.calls.live() == []


# ----- 7 and 8. who may hang up, and how ------------------------------------------------------


def user_of(context: RequestContext) -> str:
    return context.header("x-user", "") or "anonymous"


def test_the_hook_and_the_key_must_both_hold_to_hang_up(fake: FakeOpenAI) -> None:
    navai = navai_for(
        fake,
        functions_enabled=False,
        authorize_client_secret=lambda context: bool(context.header("x-user")),
        rate_limit_key=user_of,
    )
    created = navai.handle(start_context(**{"x-user": "alice"}), OFFER.encode())
    call_id = location(created)
    bob = navai.handle(hangup_context(call_id, **{"x-user": "bob"}))
    assert (bob.status, bob.body) == (404, {"error": "Unknown call."})
    assert fake.call(call_id).hangups == 0
    nobody = navai.handle(hangup_context(call_id))
    assert nobody.status == 403
    alice = navai.handle(hangup_context(call_id, **{"x-user": "alice"}))
    assert (alice.status, alice.body) == (200, {"ok": True, "call_id": call_id})
    assert fake.call(call_id).hangups == 1
    navai.close()


def test_ids_not_held_here_are_not_hung_up_through_openai(fake: FakeOpenAI) -> None:
    navai = navai_for(fake, call_sideband=False, authorize_client_secret=lambda context: True)
    other = fake.open_call()
    hung = navai.handle(hangup_context(other.call_id))
    assert (hung.status, hung.body) == (404, {"error": "Unknown call."})
    assert other.hangups == 0 and fake.requests == []
    navai.close()


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_the_hangup_route_takes_no_simple_cross_site_post(
    fake: FakeOpenAI, content_type: str | None
) -> None:
    navai = navai_for(fake, functions_enabled=False)
    call_id = location(navai.handle(start_context(), OFFER.encode()))
    headers = {"origin": "https://evil.example"}
    if content_type is not None:
        headers["content-type"] = content_type
    path = f"/navai/realtime/calls/{call_id}/hangup"
    refused = navai.handle(RequestContext("POST", path, headers, client="10.0.0.1"), b"x")
    assert refused.status == 415
    assert fake.call(call_id).hangups == 0
    assert navai.handle(hangup_context(call_id), b"{}").status == 200
    navai.close()


# ----- 9. an upstream that never ends a response ------------------------------------------------


def test_open_responses_of_a_call_are_bounded() -> None:
    from navai_core.calls.sideband import MAX_OPEN_RESPONSES, ToolLoop

    loop = ToolLoop()
    for i in range(20_000):
        event = {
            "type": "response.function_call_arguments.done",
            "response_id": f"resp_{i}",
            "call_id": f"call_{i}",
            "name": "add",
            "arguments": "{}",
        }
        for action in loop.feed(event):
            loop.output_ready(action.call_id, "{}")  # type: ignore[union-attr]
    assert len(loop._responses) <= MAX_OPEN_RESPONSES
    assert len(loop._seen) <= 4 * 4096
    # The newest response still completes normally.
    done = {
        "type": "response.done",
        "response": {"id": "resp_19999", "status": "completed", "output": []},
    }
    assert [a.event for a in loop.feed(done)] == [{"type": "response.create"}]  # type: ignore[union-attr]


# ----- 10. log flooding -----------------------------------------------------------------------


def test_unsigned_webhook_floods_log_once(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    import base64

    secret = "whsec_" + base64.b64encode(b"navai-test-webhook-secret-32byte").decode()
    navai = navai_for(fake, openai_webhook_secret=secret, webhook_path="/navai/webhooks/openai")
    caplog.set_level("WARNING", logger="navai")
    context = RequestContext(
        "POST", "/navai/webhooks/openai", {"content-type": "application/json"}, client="10.9.9.9"
    )
    for _ in range(500):
        assert navai.handle(context, b'{"type": "realtime.call.incoming"}').status == 400
    refused = [r for r in caplog.records if "webhook refused" in r.getMessage()]
    assert len(refused) == 1
    navai.close()


# ----- 13. summary counts --------------------------------------------------------------------


def slow_tools() -> FunctionRegistry:
    registry = FunctionRegistry()

    @registry.function
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    return registry


def test_the_summary_counts_what_ran_and_what_was_refused(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from navai_core.calls import tools as call_tools

    monkeypatch.setattr(call_tools, "MAX_PENDING_FUNCTIONS", 3)
    ends = Ends()
    navai = navai_for(fake, functions=slow_tools(), on_call_end=ends)
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=SERVER_KEY, rate_key="k")
    call.wait_for(lambda c: c.connections == 1)
    call.send(*[fn_call(f"p{i}", "slow", {"seconds": 0.3}) for i in range(5)])
    call.wait_for(lambda c: len(c.outputs()) == 5)
    call.end()
    summary = ends.of(call.call_id)
    assert (summary.function_calls, summary.refused) == (3, 2)
    navai.close()


# ----- 14. shutdown with a slow upstream hangup ----------------------------------------------


def test_shutdown_hangups_are_bounded_by_the_grace(fake: FakeOpenAI) -> None:
    navai = navai_for(fake, functions_enabled=False, upstream_max_retries=2)

    async def main() -> tuple[float, list[asyncio.Task[Any]]]:
        call = fake.open_call()
        navai.calls.attach(call.call_id, api_key=SERVER_KEY, rate_key="k")
        while call.connections == 0:
            await asyncio.sleep(0.01)
        fake.default = Behaviour(status=None, delay=5.0)  # the hangup hangs
        started = time.monotonic()
        await navai.calls.aclose(wait=1.0)
        await navai.aclose()
        took = time.monotonic() - started
        await asyncio.sleep(0.2)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return took, left

    took, left = asyncio.run(main())
    assert took < 2.0
    assert left == []


def test_close_returns_after_the_calls_on_call_end_hooks_ran(fake) -> None:
    """navai.close() ends each call and returns once its on_call_end hook has run (within
    the close's wait): a server that exits right after close() loses no summary."""
    ended: list[str] = []

    def slow_hook(summary) -> None:
        time.sleep(0.3)
        ended.append(summary.call_id)

    navai = navai_for(fake, on_call_end=slow_hook)
    call = fake.open_call()
    navai.calls.attach(call.call_id, api_key=SERVER_KEY, rate_key="alice")
    call.wait_for(lambda c: c.connections == 1)
    navai.close()
    assert ended == [call.call_id]


def test_a_handoff_whose_waiting_thread_is_interrupted_is_never_held(monkeypatch) -> None:
    """A request thread stopped (Ctrl-C, SystemExit) while it waits for the call's loop to
    take the call: the caller hangs the call up, so the loop must not go on to hold it."""
    import concurrent.futures

    from navai_core.calls.manager import _Handoff

    loop = asyncio.new_event_loop()
    attached: list[str] = []

    def interrupted(self: Any, timeout: float | None = None) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(concurrent.futures.Future, "result", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            _Handoff("rtc_interrupted").run(loop, lambda: attached.append("held"))  # type: ignore[arg-type, func-returns-value]
        monkeypatch.undo()
        loop.run_until_complete(asyncio.sleep(0.01))  # the loop gets to the handed call now
    finally:
        loop.close()
    assert attached == []
