"""Live calls: one asyncio task per call holds its control connection (the "sideband"),
runs the model's function calls and enforces the call's limits.

Three parts, kept apart so that another transport can reuse the tool machinery unchanged:

- the *connection* (:meth:`CallManager._connection`): a ``websockets`` client to
  ``<base>/realtime?call_id=...`` with the call's key, reconnecting with backoff while the
  call is live; it only moves text in and out;
- the *tool runner* (:meth:`CallManager._on_event`, :meth:`CallManager._run_function`): the
  pure :class:`ToolLoop` decides, the functions run through the very dispatch of the execute
  route (``prepare_call`` + ``aexecute``: validation, per-function authorisation hook with a
  context naming the call, time limit, error envelope);
- the *limits* (:meth:`CallManager._limits`): ``NAVAI_CALL_MAX_SECONDS`` and the call-time
  budget, which end the call through OpenAI's ``/hangup``.

:meth:`CallManager.attach` is transport-neutral: a call navai created over WebRTC and a phone
call navai accepted over SIP attach the same way. Each call ends with one log line and a
:class:`CallSummary` for the ``on_call_end`` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._config import DEFAULT_CALL_MAX_LIVE, DEFAULT_CALL_MAX_SECONDS
from .._errors import CallsFull, NavaiError
from .._hooks import anotify
from .._http import Reply, RequestContext
from .._json import JsonValue, dumps
from ..functions.dispatch import aexecute, prepare_call
from ..functions.envelope import function_error
from ..limits.rate import RateLimiter
from ..upstream.providers import RealtimeTarget, target_for_key
from ..upstream.send import asend
from .plans import CallBudget, budget_spent, build_hangup_request, sideband_url, valid_call_id
from .registry import held_calls
from .sideband import RunFunction, SendEvent, ToolLoop, execute_body

if TYPE_CHECKING:
    from .._navai import Navai

logger = logging.getLogger("navai")

# End reasons.
ENDED = "ended"  # the caller hung up: the control connection closed normally, or is refused
HANGUP = "hangup"  # hung up through navai (the hangup route or CallManager.hangup)
MAX_SECONDS = "max_seconds"
BUDGET = "budget"
LOST = "lost"  # the control connection could not be re-established
SHUTDOWN = "shutdown"  # the server stopped (navai hangs the call up)

TOO_MANY_FUNCTIONS = "Too many function calls at once."
TOO_MANY_DETAILS = "This call has {n} function calls pending; try again when they are done."

FULL = "Too many calls in progress. Try again in {seconds} seconds."
FULL_RETRY_SECONDS = 10


def _calls_full() -> CallsFull:
    seconds = FULL_RETRY_SECONDS
    return CallsFull(
        FULL.format(seconds=seconds),
        extra={"retry_after": seconds},
        headers=[("Retry-After", str(seconds))],
    )


UNEXPECTED_OUTPUT: dict[str, JsonValue] = function_error(
    None, "Function execution failed.", "The function call could not be run."
)


@attrs.frozen
class CallSummary:
    """What happened on one call, handed to ``on_call_end`` and logged when it ends."""

    call_id: str
    key: str
    started_at: float  # Unix time
    ended_at: float
    seconds: float
    end_reason: str
    function_calls: int
    usage: Mapping[str, JsonValue] = attrs.field(factory=dict)
    transport: str = "webrtc"


@attrs.frozen
class LiveCall:
    """A call this process holds now."""

    call_id: str
    key: str
    started_at: float
    transport: str
    function_calls: int


class _Call:
    """The state of one live call (touched only on its loop, except ``task``)."""

    def __init__(
        self,
        call_id: str,
        target: RealtimeTarget,
        key: str,
        transport: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.call_id = call_id
        self.target = target
        self.key = key
        self.transport = transport
        self.loop = loop
        self.started_at = time.time()
        self.started = time.monotonic()
        self.tools = ToolLoop()
        self.reason: str | None = None
        self.charged = 0
        self.socket: Any = None
        self.unsent: list[bytes] = []
        self.dropped = 0  # events not kept: the control connection was away too long
        self.functions: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_PARALLEL_FUNCTIONS)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.done = threading.Event()

    def live(self) -> LiveCall:
        return LiveCall(
            self.call_id, self.key, self.started_at, self.transport, self.tools.function_calls
        )


MAX_PARALLEL_FUNCTIONS = 8
# Function calls of one call running or waiting for a slot; past it one gets an error output.
MAX_PENDING_FUNCTIONS = 64
# Events kept for the control connection while it reconnects; past it new ones are dropped.
MAX_UNSENT_EVENTS = 256
# How long sync code waits for another event loop to take a call or hang one up.
LOOP_WAIT_SECONDS = 10.0
MAX_EVENT_BYTES = 4 * 1024 * 1024


class Budgets:
    """Call-time budgets on the rate limits' storage (same process dict or same Redis),
    through :class:`RateLimiter` and its storage-outage rule."""

    BUCKET = "call_budget"

    def __init__(self, budget: CallBudget | None, rate_limiter: RateLimiter) -> None:
        self.budget = budget
        self._limiter = rate_limiter

    def check(self, key: str) -> None:
        """429 with ``Retry-After`` when ``key`` has no second of call time left (503, or
        through when failing open, while the store fails)."""
        if self.budget is None:
            return
        reset = self._limiter.spent(self.budget.item, self.BUCKET, key)
        if reset is not None:
            raise budget_spent(reset, time.time())

    async def acheck(self, key: str) -> None:
        if self.budget is None:
            return
        reset = await self._limiter.aspent(self.budget.item, self.BUCKET, key)
        if reset is not None:
            raise budget_spent(reset, time.time())

    async def acharge(self, key: str, seconds: int) -> bool | None:
        """Count ``seconds`` of call time: False once the budget is spent, None when the
        store failed (nothing counted: charged again at the next tick)."""
        if self.budget is None or seconds <= 0:
            return True
        return await self._limiter.acharge(self.budget.item, self.BUCKET, key, seconds)


class CallManager:
    """The live calls of one :class:`Navai` in this process.

    ``attach`` may be called from any thread: under an async server the call runs on the
    running event loop, else on navai's background loop.
    """

    def __init__(
        self,
        navai: Navai,
        *,
        reconnect_delays: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0),
        budget_tick_seconds: float = 5.0,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        self.navai = navai
        config = navai.config
        seconds = config.call_max_seconds
        ok = isinstance(seconds, (int, float)) and seconds > 0  # else reported by problems()
        self.max_seconds = float(seconds) if ok else DEFAULT_CALL_MAX_SECONDS
        live = config.call_max_live
        ok = isinstance(live, int) and live >= 1  # else reported by problems()
        self.max_live = live if ok else DEFAULT_CALL_MAX_LIVE
        try:
            budget = CallBudget.parse(config.call_budget)
        except ValueError:
            budget = None  # reported by NavaiConfig.problems()
        self.budgets = Budgets(budget, navai.rate_limiter)
        self.reconnect_delays = reconnect_delays
        self.budget_tick_seconds = budget_tick_seconds
        self._connect = connect
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    # ----- the public API ---------------------------------------------------------------------

    def attach(
        self,
        call_id: str,
        *,
        api_key: str,
        rate_key: str,
        transport: str = "webrtc",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> LiveCall:
        """Hold the call ``call_id`` (created or accepted with ``api_key``): open its control
        connection, run its function calls, enforce its limits, summarise it at the end.

        Returns at once. ``rate_key`` is whose budget the call spends (the rate-limit key of
        the request that created it, or a caller's number). ``transport`` only labels the
        summary (``webrtc``, ``sip``, ...). ``loop`` is the event loop that holds the call:
        by default the running loop (an async server's), else navai's background loop. Sync
        code that may run inside a short-lived loop (Django's per-request ``asyncio.run``
        under WSGI) passes navai's background loop (``navai.concurrency.loop()``) so the
        call outlives it.
        """
        if not valid_call_id(call_id):
            raise ValueError("invalid call id")
        target = target_for_key(self.navai.config, api_key)
        here = _running_loop()
        if loop is None:
            loop = here or self.navai.concurrency.loop()
        if loop is here:
            call = self._register(_Call(call_id, target, rate_key, transport, loop))
            call.task = loop.create_task(self._hold(call), name=f"navai-call-{call_id}")
            return call.live()
        if not loop.is_running():
            raise RuntimeError("the event loop to hold the call on is not running")

        async def start() -> LiveCall:
            return self.attach(call_id, api_key=api_key, rate_key=rate_key, transport=transport)

        future = asyncio.run_coroutine_threadsafe(start(), loop)
        try:
            return future.result(LOOP_WAIT_SECONDS)
        except TimeoutError:
            future.cancel()
            raise

    def live(self) -> list[LiveCall]:
        """The calls this process holds now, oldest first."""
        with self._lock:
            return [call.live() for call in self._calls.values()]

    def check_room(self) -> None:
        """503 with ``Retry-After`` when this process holds ``call_max_live`` calls."""
        with self._lock:
            full = len(self._calls) >= self.max_live
        if full:
            raise _calls_full()

    def get(self, call_id: str) -> LiveCall | None:
        """The call ``call_id`` when this process holds it."""
        with self._lock:
            call = self._calls.get(call_id)
        return call.live() if call is not None else None

    def __contains__(self, call_id: object) -> bool:
        with self._lock:
            return call_id in self._calls

    async def ahangup(self, call_id: str, *, wait: float = 5.0) -> bool:
        """End a call this process holds: ``POST .../hangup`` to OpenAI, then stop holding it.
        False when the call is not held here (or its event loop no longer runs)."""
        with self._lock:
            call = self._calls.get(call_id)
        if call is None:
            return False
        if call.loop is not asyncio.get_running_loop():
            if not call.loop.is_running():
                return False
            future = asyncio.run_coroutine_threadsafe(self.ahangup(call_id, wait=wait), call.loop)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), wait + 1.0)
            except TimeoutError:
                future.cancel()
                return False
        self._finish(call, HANGUP)
        if call.task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(call.task), wait)
        return True

    def hangup(self, call_id: str, *, wait: float = 5.0) -> bool:
        """:meth:`ahangup` from sync code (waits at most about ``wait`` seconds). On the
        call's own loop (a sync hook there) it cannot wait: the call is ended, not awaited."""
        with self._lock:
            call = self._calls.get(call_id)
        if call is None or not call.loop.is_running():
            return False
        if _running_loop() is call.loop:
            self._finish(call, HANGUP)
            return True
        future = asyncio.run_coroutine_threadsafe(self.ahangup(call_id, wait=wait), call.loop)
        try:
            return future.result(wait + 1.0)
        except TimeoutError:
            future.cancel()
            return False

    async def aclose(self, *, wait: float = 10.0) -> None:
        """Hang up every call (reason ``shutdown``) and wait, ``wait`` seconds in all, until
        each has ended."""
        deadline = time.monotonic() + wait
        with self._lock:
            calls = list(self._calls.values())
        here = _running_loop()
        waits = []
        for call in calls:
            if call.loop is here:
                self._finish(call, SHUTDOWN)
                if call.task is not None:
                    waits.append(call.task)
            elif not call.loop.is_closed():
                call.loop.call_soon_threadsafe(self._finish, call, SHUTDOWN)
        if waits:
            await asyncio.wait(waits, timeout=wait)
        elsewhere = [call for call in calls if call.loop is not here]
        if elsewhere:
            await asyncio.to_thread(_wait_ended, elsewhere, deadline)

    def close(self, *, wait: float = 10.0) -> None:
        """:meth:`aclose` from sync code (not from a loop that holds calls)."""
        deadline = time.monotonic() + wait
        with self._lock:
            calls = list(self._calls.values())
        for call in calls:
            if not call.loop.is_closed():
                call.loop.call_soon_threadsafe(self._finish, call, SHUTDOWN)
        _wait_ended(calls, deadline)

    # ----- one call ---------------------------------------------------------------------------

    def _register(self, call: _Call) -> _Call:
        with self._lock:
            if call.call_id in self._calls:
                raise ValueError(f"call {call.call_id} is already held")
            if len(self._calls) >= self.max_live:
                raise _calls_full()
            self._calls[call.call_id] = call
        held_calls().hold(call.call_id, call.target.key)
        return call

    def _finish(self, call: _Call, reason: str) -> None:
        """Ask the call to end with ``reason`` (the first reason wins)."""
        if call.reason is None:
            call.reason = reason
        call.stop.set()

    async def _hold(self, call: _Call) -> None:
        parts = [
            asyncio.ensure_future(self._connection(call)),
            asyncio.ensure_future(self._limits(call)),
            asyncio.ensure_future(call.stop.wait()),
        ]
        try:
            await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._finish(call, SHUTDOWN)
        finally:
            for part in parts:
                part.cancel()
            for task in list(call.functions):
                task.cancel()
            await asyncio.gather(*parts, *call.functions, return_exceptions=True)
            await self._ended(call)

    async def _ended(self, call: _Call) -> None:
        reason = call.reason or ENDED
        try:
            if reason in (HANGUP, MAX_SECONDS, BUDGET, SHUTDOWN):
                await self._hangup_upstream(call)
            if self.budgets.budget is not None:
                due = CallBudget.due(time.monotonic() - call.started, call.charged)
                await self.budgets.acharge(call.key, due)
        finally:
            ended = time.time()
            summary = CallSummary(
                call_id=call.call_id,
                key=call.key,
                started_at=call.started_at,
                ended_at=ended,
                seconds=round(time.monotonic() - call.started, 3),
                end_reason=reason,
                function_calls=call.tools.function_calls,
                usage=dict(call.tools.usage),
                transport=call.transport,
            )
            with self._lock:
                self._calls.pop(call.call_id, None)
            held_calls().forget(call.call_id)
            logger.info(
                "call %s ended (%s) after %.1f s: %d function call(s), %s tokens, key %s",
                call.call_id,
                reason,
                summary.seconds,
                summary.function_calls,
                summary.usage.get("total_tokens", 0),
                call.key,
            )
            call.done.set()
            await anotify(self.navai.config.on_call_end, summary, owner=self.navai.concurrency)

    async def _hangup_upstream(self, call: _Call) -> None:
        request = build_hangup_request(call.target, call.call_id)
        try:
            reply = await asend(self.navai.async_http_client(), request, self.navai.retry_policy)
        except Exception as exc:
            logger.warning("hanging up call %s failed: %s", call.call_id, exc)
            return
        if not 200 <= reply.status <= 299 and reply.status != 404:
            logger.warning("hanging up call %s: OpenAI answered %s", call.call_id, reply.status)

    # ----- limits -----------------------------------------------------------------------------

    async def _limits(self, call: _Call) -> None:
        deadline = call.started + self.max_seconds
        while True:
            now = time.monotonic()
            if now >= deadline:
                self._finish(call, MAX_SECONDS)
                return
            if self.budgets.budget is not None:
                due = CallBudget.due(now - call.started, call.charged)
                if due:
                    # None: the store fails (logged by the rate limiter); the call goes on.
                    left = await self.budgets.acharge(call.key, due)
                    if left is not None:
                        call.charged += due
                        if not left:
                            self._finish(call, BUDGET)
                            return
                await asyncio.sleep(min(self.budget_tick_seconds, deadline - now))
            else:
                await asyncio.sleep(deadline - now)

    # ----- the connection ---------------------------------------------------------------------

    async def _connection(self, call: _Call) -> None:
        from websockets.exceptions import InvalidStatus

        connect = self._connect or _connect
        url = sideband_url(call.target, call.call_id)
        failures = 0
        while True:
            try:
                async with connect(url, call.target.headers) as socket:
                    failures = 0
                    call.socket = socket
                    await self._flush(call)
                    async for message in socket:
                        await self._on_message(call, message)
                call.socket = None
                if socket.close_code == 1000:  # the caller hung up
                    self._finish(call, ENDED)
                    return
            except InvalidStatus as exc:
                call.socket = None
                if 400 <= exc.response.status_code <= 499:  # the call is gone
                    self._finish(call, ENDED)
                    return
            except Exception as exc:  # dropped (a timeout, a socket error, ...): reconnect
                call.socket = None
                logger.info("call %s control connection lost: %s", call.call_id, exc)
            if failures >= len(self.reconnect_delays):
                self._finish(call, LOST)
                return
            await asyncio.sleep(self.reconnect_delays[failures])
            failures += 1

    async def _send(self, call: _Call, event: Mapping[str, Any]) -> None:
        data = dumps(event)
        socket = call.socket
        if socket is not None:
            try:
                await socket.send(data.decode())
                return
            except Exception:
                pass
        self._keep(call, data)  # sent first after the reconnect

    def _keep(self, call: _Call, data: bytes) -> None:
        if len(call.unsent) < MAX_UNSENT_EVENTS:
            call.unsent.append(data)
            return
        if not call.dropped:
            logger.warning(
                "call %s: control connection away, %d events waiting: dropping events",
                call.call_id,
                len(call.unsent),
            )
        call.dropped += 1

    async def _flush(self, call: _Call) -> None:
        while call.unsent and call.socket is not None:
            await call.socket.send(call.unsent[0].decode())
            call.unsent.pop(0)

    # ----- the tool runner --------------------------------------------------------------------

    async def _on_message(self, call: _Call, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (ValueError, RecursionError):
            logger.debug("call %s sent a message that is not JSON", call.call_id)
            return
        await anotify(self.navai.config.on_call_event, call.call_id, event)
        for action in call.tools.feed(event):
            if isinstance(action, RunFunction):
                if len(call.functions) >= MAX_PENDING_FUNCTIONS:
                    await self._refuse_function(call, action)
                    continue
                task = asyncio.ensure_future(self._run_function(call, action))
                call.functions.add(task)
                task.add_done_callback(call.functions.discard)
            elif isinstance(action, SendEvent):
                await self._send(call, action.event)

    async def _run_function(self, call: _Call, action: RunFunction) -> None:
        async with call.slots:
            output = await self._output(call, action)
        await self._output_ready(call, action, output)

    async def _refuse_function(self, call: _Call, action: RunFunction) -> None:
        """Too many function calls pending: an error output at once, no task."""
        details = TOO_MANY_DETAILS.format(n=len(call.functions))
        body = function_error(action.name, TOO_MANY_FUNCTIONS)
        await self._output_ready(call, action, dumps({**body, "details": details}).decode())

    async def _output_ready(self, call: _Call, action: RunFunction, output: str) -> None:
        for step in call.tools.output_ready(action.call_id, output):
            if isinstance(step, SendEvent):
                await self._send(call, step.event)

    async def _output(self, call: _Call, action: RunFunction) -> str:
        """The execute route's answer to this function call, as JSON text."""
        navai = self.navai
        try:
            registry = await navai.afunctions()
            body = execute_body(action.name, action.arguments)
            prepared = prepare_call(registry, body, self._context(call, action))
            reply = await aexecute(prepared, **navai.execute_options())
        except NavaiError as exc:
            reply = exc.to_reply()
        except Exception:
            logger.exception("call %s: function call %s failed", call.call_id, action.name)
            reply = Reply(500, {**UNEXPECTED_OUTPUT, "function_name": action.name})
        return reply.content.decode()

    def _context(self, call: _Call, action: RunFunction) -> RequestContext:
        """What the authorisation hook and a ``context`` parameter see: the call, by name."""
        path = f"{self.navai.config.calls_path or ''}/{call.call_id}"
        return RequestContext(
            method="CALL",
            path=path,
            headers={
                "x-navai-call-id": call.call_id,
                "x-navai-function-call-id": action.call_id,
                "x-navai-transport": call.transport,
            },
            client=call.key,
            raw=call.live(),
        )


def _wait_ended(calls: list[_Call], deadline: float) -> None:
    """Wait until each call has ended, or until ``deadline`` (one for them all)."""
    for call in calls:
        call.done.wait(max(deadline - time.monotonic(), 0.0))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _connect(url: str, headers: tuple[tuple[str, str], ...]) -> Any:
    from websockets.asyncio.client import connect

    return connect(
        url,
        additional_headers=list(headers),
        compression=None,  # per-connection zlib state would cost ~100 KB a call
        max_size=MAX_EVENT_BYTES,
        open_timeout=10,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
        user_agent_header="navai",
    )
