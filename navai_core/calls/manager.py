"""Live calls: one asyncio task per call holds its control connection (the "sideband"),
runs the model's function calls and enforces the call's limits.

:class:`CallManager` keeps the calls of this process (attach, list, hang up, shut down) and
holds each one with three parts of its own, kept apart so that another transport or runtime
reuses them unchanged:

- the *connection* (``calls/connection.py``): a ``websockets`` client to the runtime's URL
  with the call's key, reconnecting with backoff while the call is live; it only moves text;
- the *tool runner* (``calls/tools.py``): the runtime's pure tool protocol (:class:`ToolLoop`
  for Realtime) decides, the functions run through the very dispatch of the execute route;
- the *limits* (``calls/limits.py``): ``NAVAI_CALL_MAX_SECONDS`` and the call-time budget,
  which end the call through the runtime's ``/hangup``.

What happens on a call goes to its :class:`CallEvents` (log lines by default) and to the
``on_call_event`` / ``on_call_end`` hooks. :meth:`CallManager.attach` is transport-neutral: a
call navai created over WebRTC and a phone call navai accepted over SIP attach the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from .._config import DEFAULT_CALL_MAX_LIVE, DEFAULT_CALL_MAX_SECONDS, NavaiConfig
from .._errors import CallsFull
from .._hooks import anotify
from .._http import Reply
from ..concurrency.owner import Concurrency
from ..functions.dispatch import PreparedCall
from ..functions.registry import FunctionRegistry
from ..limits.budget import CallBudgets
from ..upstream.messages import UpstreamReply, UpstreamRequest
from ..upstream.providers import RealtimeTarget
from .connection import Connect, Connection
from .events import (
    ENDED,
    HANGUP,
    NAVAI_ENDS,
    SHUTDOWN,
    CallEvents,
    CallLog,
    CallSummary,
    LiveCall,
)
from .limits import CallLimits
from .plans import valid_call_id
from .runtime import REALTIME, Runtime
from .sideband import RunFunction
from .tools import FunctionDispatch, ToolRunner

__all__ = ["CallManager", "CallSettings", "CallSummary", "CallsFull", "LiveCall"]

logger = logging.getLogger("navai")

FULL = "Too many calls in progress. Try again in {seconds} seconds."
FULL_RETRY_SECONDS = 10
# How long sync code waits for another event loop to take a call or hang one up.
LOOP_WAIT_SECONDS = 10.0


def _calls_full() -> CallsFull:
    seconds = FULL_RETRY_SECONDS
    return CallsFull(
        FULL.format(seconds=seconds),
        extra={"retry_after": seconds},
        headers=[("Retry-After", str(seconds))],
    )


@attrs.frozen
class CallSettings:
    """What a :class:`CallManager` reads of the configuration: the limits, the path that
    names a call to its functions, and the two call hooks."""

    max_seconds: float = DEFAULT_CALL_MAX_SECONDS
    max_live: int = DEFAULT_CALL_MAX_LIVE
    calls_path: str = ""
    on_call_event: Callable[..., Any] | None = None
    on_call_end: Callable[..., Any] | None = None

    @classmethod
    def from_config(cls, config: NavaiConfig) -> CallSettings:
        """The settings of ``config``; a value out of range (reported by ``problems()``)
        falls back to its default."""
        seconds = config.call_max_seconds
        ok = isinstance(seconds, (int, float)) and seconds > 0
        live = config.call_max_live
        return cls(
            max_seconds=float(seconds) if ok else DEFAULT_CALL_MAX_SECONDS,
            max_live=live if isinstance(live, int) and live >= 1 else DEFAULT_CALL_MAX_LIVE,
            calls_path=config.calls_path or "",
            on_call_event=config.on_call_event,
            on_call_end=config.on_call_end,
        )


#: Sends one upstream request from async code (the server's sender: client, retries).
Sender = Callable[[UpstreamRequest], Awaitable[UpstreamReply]]
#: Runs a prepared function call the way the execute route does (options, threads, time limit).
Executor = Callable[[PreparedCall], Awaitable[Reply]]

_LOG = CallLog()


def _log_only(call: LiveCall) -> CallEvents:
    return _LOG


class _Call:
    """One live call: who and where, and its three parts (touched only on its loop, except
    ``task`` and ``done``)."""

    __slots__ = (
        "call_id",
        "connection",
        "dispatch",
        "done",
        "events",
        "key",
        "limits",
        "loop",
        "reason",
        "settings",
        "started",
        "started_at",
        "stop",
        "target",
        "task",
        "tools",
        "transport",
    )

    def __init__(
        self,
        call_id: str,
        target: RealtimeTarget,
        key: str,
        transport: str,
        loop: asyncio.AbstractEventLoop,
        settings: CallSettings,
        dispatch: FunctionDispatch,
    ) -> None:
        self.call_id = call_id
        self.settings = settings
        self.dispatch = dispatch
        self.target = target
        self.key = key
        self.transport = transport
        self.loop = loop
        self.started_at = time.time()
        self.started = time.monotonic()
        self.reason: str | None = None
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.done = threading.Event()
        # Set by CallManager._new_call.
        self.connection: Connection
        self.tools: ToolRunner
        self.limits: CallLimits
        self.events: CallEvents

    def live(self) -> LiveCall:
        return LiveCall(
            self.call_id,
            self.key,
            self.started_at,
            self.transport,
            self.tools.protocol.function_calls,
        )

    async def on_message(self, message: str | bytes) -> None:
        """A server event: to the events, the ``on_call_event`` hook and the tool runner."""
        try:
            event = json.loads(message)
        except (ValueError, RecursionError):
            logger.debug("call %s sent a message that is not JSON", self.call_id)
            return
        self.events.event(self.call_id, event)
        await anotify(self.settings.on_call_event, self.call_id, event)
        await self.tools.feed(event)

    async def run_function(self, action: RunFunction) -> Reply:
        return await self.dispatch(self.live(), action)

    def summary(self, reason: str) -> CallSummary:
        protocol = self.tools.protocol
        return CallSummary(
            call_id=self.call_id,
            key=self.key,
            started_at=self.started_at,
            ended_at=time.time(),
            seconds=round(time.monotonic() - self.started, 3),
            end_reason=reason,
            function_calls=protocol.function_calls,
            usage=dict(protocol.usage),
            transport=self.transport,
        )


class CallManager:
    """The live calls of one server in this process.

    It gets what it uses, not the server: ``settings``, the call-time ``budgets``,
    ``target(api_key)`` (where and how to reach the call's upstream), ``send`` (upstream
    requests: hang-ups), ``registry()`` and ``execute`` (the execute route's dispatch),
    ``concurrency`` (its background loop holds a call attached from sync code; its hook threads
    run a sync ``on_call_end``), the ``runtime``
    (OpenAI Realtime) and ``events(call)``, what is told of each call as it goes.

    ``attach`` may be called from any thread: under an async server the call runs on the
    running event loop, else on the background loop.
    """

    def __init__(
        self,
        settings: CallSettings,
        *,
        budgets: CallBudgets,
        target: Callable[[str], RealtimeTarget],
        send: Sender,
        registry: Callable[[], Awaitable[FunctionRegistry]],
        execute: Executor,
        concurrency: Concurrency,
        runtime: Runtime = REALTIME,
        events: Callable[[LiveCall], CallEvents] = _log_only,
        reconnect_delays: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0),
        budget_tick_seconds: float = 5.0,
        connect: Connect | None = None,
    ) -> None:
        self.settings = settings
        self.max_seconds = settings.max_seconds
        self.max_live = settings.max_live
        self.budgets = budgets
        self.runtime = runtime
        self._target = target
        self._send_upstream = send
        self._dispatch = FunctionDispatch(registry, execute, settings.calls_path)
        self._concurrency = concurrency
        self._events = events
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
        model: str | None = None,
    ) -> LiveCall:
        """Hold the call ``call_id`` (created or accepted with ``api_key``): open its control
        connection, run its function calls, enforce its limits, summarise it at the end.

        Returns at once. ``rate_key`` is whose budget the call spends (the rate-limit key of
        the request that created it, or a caller's number). ``transport`` only labels the
        summary (``webrtc``, ``sip``, ...); ``model``, the model the call's session asked
        for, labels its record. ``loop`` is the event loop that holds the call:
        by default the running loop (an async server's), else navai's background loop. Sync
        code that may run inside a short-lived loop (Django's per-request ``asyncio.run``
        under WSGI) passes navai's background loop (``navai.concurrency.loop()``) so the
        call outlives it.
        """
        if not valid_call_id(call_id):
            raise ValueError("invalid call id")
        target = self._target(api_key)
        here = _running_loop()
        if loop is None:
            loop = here or self._concurrency.loop()
        if loop is here:
            call = self._new_call(call_id, target, rate_key, transport, loop, model)
            call = self._register(call)
            call.task = loop.create_task(self._hold(call), name=f"navai-call-{call_id}")
            return call.live()
        if not loop.is_running():
            raise RuntimeError("the event loop to hold the call on is not running")

        async def start() -> LiveCall:
            return self.attach(
                call_id, api_key=api_key, rate_key=rate_key, transport=transport, model=model
            )

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

    def _new_call(
        self,
        call_id: str,
        target: RealtimeTarget,
        key: str,
        transport: str,
        loop: asyncio.AbstractEventLoop,
        model: str | None = None,
    ) -> _Call:
        """A call and its parts (on its loop: the parts' asyncio objects belong to it)."""
        call = _Call(call_id, target, key, transport, loop, self.settings, self._dispatch)
        call.events = self._events(LiveCall(call_id, key, call.started_at, transport, 0, model))
        url = self.runtime.sideband_url(target, call_id)
        call.connection = Connection(
            call_id, url, target.headers, delays=self.reconnect_delays, connect=self._connect
        )
        call.tools = ToolRunner(
            call_id,
            self.runtime.tool_protocol(),
            runner=call,
            sender=call.connection,
            events=call.events,
        )
        call.limits = CallLimits(
            key,
            call.started,
            max_seconds=self.max_seconds,
            budgets=self.budgets,
            tick=self.budget_tick_seconds,
        )
        return call

    def _register(self, call: _Call) -> _Call:
        with self._lock:
            if call.call_id in self._calls:
                raise ValueError(f"call {call.call_id} is already held")
            if len(self._calls) >= self.max_live:
                raise _calls_full()
            self._calls[call.call_id] = call
        return call

    def _finish(self, call: _Call, reason: str) -> None:
        """Ask the call to end with ``reason`` (the first reason wins)."""
        if call.reason is None:
            call.reason = reason
        call.stop.set()

    async def _hold(self, call: _Call) -> None:
        call.events.started(call.live())
        parts = [
            asyncio.ensure_future(call.connection.run(call)),
            asyncio.ensure_future(call.limits.watch()),
            asyncio.ensure_future(call.stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            for part in done:  # the connection's or the limits' reason to end
                if not part.cancelled() and part.exception() is None:
                    result = part.result()
                    if isinstance(result, str):
                        self._finish(call, result)
        except asyncio.CancelledError:
            self._finish(call, SHUTDOWN)
        finally:
            for task in list(call.tools.functions):
                task.cancel()
            await call.connection.close()  # a normal close (1000): navai ends the call
            for part in parts:
                part.cancel()
            await asyncio.gather(*parts, *call.tools.functions, return_exceptions=True)
            await self._ended(call)

    async def _ended(self, call: _Call) -> None:
        reason = call.reason or ENDED
        try:
            if reason in NAVAI_ENDS:
                request = self.runtime.hangup_request(call.target, call.call_id)
                await _hang_up(self._send_upstream, request, call.call_id)
            await call.limits.settle()
        finally:
            summary = call.events.finish(call.summary(reason))
            with self._lock:
                self._calls.pop(call.call_id, None)
            try:
                if (published := call.events.ended(summary)) is not None:
                    await published  # the call log's line, before the hook
            finally:
                call.done.set()
            await anotify(self.settings.on_call_end, summary, owner=self._concurrency)


async def _hang_up(send: Sender, request: UpstreamRequest, call_id: str) -> None:
    """Send the hangup of a call navai ends; a failure is logged (the call may be gone)."""
    try:
        reply = await send(request)
    except Exception as exc:
        logger.warning("hanging up call %s failed: %s", call_id, exc)
        return
    if not 200 <= reply.status <= 299 and reply.status != 404:
        logger.warning("hanging up call %s: OpenAI answered %s", call_id, reply.status)


def _wait_ended(calls: list[_Call], deadline: float) -> None:
    """Wait until each call has ended, or until ``deadline`` (one for them all)."""
    for call in calls:
        call.done.wait(max(deadline - time.monotonic(), 0.0))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
