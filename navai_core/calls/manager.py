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
from collections.abc import Awaitable, Callable, Mapping
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
from ..upstream.messages import UpstreamReply, UpstreamRequest, upstream_failure
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
from .guard import HANG_UP, RESTORE, SessionGuard
from .leases import HANDED_OVER, CallHolds, Resume
from .limits import CallLimits
from .live_runtime import runtime_for
from .places import NOT_HELD, Place, Places, calls_full
from .plans import valid_call_id
from .registry import CallRegistry, HeldCalls
from .runtime import Runtime
from .sideband import RunFunction
from .tools import FunctionDispatch, ToolRunner

__all__ = ["CallManager", "CallOptions", "CallSettings", "CallSummary", "CallsFull", "LiveCall"]

logger = logging.getLogger("navai")

# How long sync code waits for another event loop to take a call or hang one up.
LOOP_WAIT_SECONDS = 10.0


@attrs.frozen
class CallSettings:
    """What a :class:`CallManager` reads of the configuration: the limits, the path that
    names a call to its functions, and the two call hooks."""

    max_seconds: float = DEFAULT_CALL_MAX_SECONDS
    max_live: int = DEFAULT_CALL_MAX_LIVE
    calls_path: str = ""
    on_call_event: Callable[..., Any] | None = None
    on_call_end: Callable[..., Any] | None = None
    runtime: str = "realtime"  # NAVAI_CALL_RUNTIME
    on_client_update: str = RESTORE  # NAVAI_CALL_ON_CLIENT_UPDATE: restore or hangup

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
            runtime=config.call_runtime,
            on_client_update=config.call_on_client_update,
        )


#: Sends one upstream request from async code (the server's sender: client, retries).
Sender = Callable[[UpstreamRequest], Awaitable[UpstreamReply]]
#: Runs a prepared function call the way the execute route does (options, threads, time limit).
Executor = Callable[[PreparedCall], Awaitable[Reply]]

_LOG = CallLog()
# End reason: a browser changed the session and NAVAI_CALL_ON_CLIENT_UPDATE=hangup.
CLIENT_UPDATE = "client_update"


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
        "guard",
        "key",
        "limits",
        "loop",
        "reason",
        "runtime",
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
        # Set by _Call.assemble.
        self.connection: Connection
        self.tools: ToolRunner
        self.limits: CallLimits
        self.events: CallEvents
        self.guard: SessionGuard | None = None
        self.runtime = "realtime"

    @classmethod
    def assemble(
        cls,
        manager: CallManager,
        call_id: str,
        target: RealtimeTarget,
        key: str,
        loop: asyncio.AbstractEventLoop,
        options: CallOptions,
    ) -> _Call:
        """A call of ``manager`` and its parts (on its loop: their asyncio objects belong to
        it), as the manager is set now (its runtime, reconnect delays, limits)."""
        m = manager
        call = cls(call_id, target, key, options.transport, loop, m.settings, m._dispatch)
        call.runtime = m.runtime.name
        if options.session is not None:
            call.guard = m.runtime.session_guard(options.session, m.settings.on_client_update)
        seen = LiveCall(call_id, key, call.started_at, options.transport, 0, options.model)
        call.events = m._events(seen)
        url = m.runtime.sideband_url(target, call_id)
        call.connection = Connection(
            call_id, url, target.headers, delays=m.reconnect_delays, connect=m._connect
        )
        call.tools = ToolRunner(
            call_id,
            m.runtime.tool_protocol(),
            runner=call,
            sender=call.connection,
            events=call.events,
        )
        call.limits = CallLimits(
            key,
            call.started,
            max_seconds=m.max_seconds,
            budgets=m.budgets,
            tick=m.budget_tick_seconds,
        )
        return call

    def live(self) -> LiveCall:
        return LiveCall(
            self.call_id,
            self.key,
            self.started_at,
            self.transport,
            self.tools.ran,
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
        if self.tools.protocol.closed:  # the runtime closed the session (Live)
            self.end(ENDED)
        if self.guard is not None:
            await self._guard(event)

    async def _guard(self, event: object) -> None:
        assert self.guard is not None
        verdict, changed = self.guard.feed(event)
        if verdict == RESTORE:
            if self.guard.restored == 1:
                logger.warning(
                    "call %s: a client changed %s; navai restored its session",
                    self.call_id,
                    ", ".join(changed),
                )
            await self.connection.send(self.guard.restore_event)
        elif verdict == HANG_UP:
            logger.warning(
                "call %s: a client changed %s; hanging up", self.call_id, ", ".join(changed)
            )
            self.end(CLIENT_UPDATE)

    async def run(self) -> None:
        """Hold the call until it ends (its connection, its limits, or :meth:`end`), then
        close its parts."""
        self.events.started(self.live())
        parts = [
            asyncio.ensure_future(self.connection.run(self)),
            asyncio.ensure_future(self.limits.watch()),
            asyncio.ensure_future(self.stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            for part in done:  # the connection's or the limits' reason to end
                if not part.cancelled() and part.exception() is None:
                    result = part.result()
                    if isinstance(result, str):
                        self.end(result)
        except asyncio.CancelledError:
            self.end(SHUTDOWN)
        finally:
            for task in list(self.tools.functions):
                task.cancel()
            await self.connection.close()  # a normal close (1000): navai ends the call
            for part in parts:
                part.cancel()
            await asyncio.gather(*parts, *self.tools.functions, return_exceptions=True)

    def end(self, reason: str) -> None:
        """Ask the call to end with ``reason`` (the first reason wins)."""
        if self.reason is None:
            self.reason = reason
        self.stop.set()

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
            function_calls=self.tools.ran,
            refused=self.tools.refused,
            usage=dict(protocol.usage),
            transport=self.transport,
            runtime=self.runtime,
            close_reason=protocol.close_reason,
            billed_seconds=protocol.seconds,
            session_restored=self.guard.restored if self.guard is not None else 0,
        )


class _Handoff:
    """A call handed to another thread's event loop: taken there, or abandoned by the caller
    (who then hangs it up), never both."""

    __slots__ = ("abandoned", "call_id", "live", "lock")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.lock = threading.Lock()
        self.abandoned = False
        self.live: LiveCall | None = None

    def run(self, loop: asyncio.AbstractEventLoop, attach: Callable[[], LiveCall]) -> LiveCall:
        """``attach()`` on ``loop``, or 503 when ``loop`` did not run it within
        ``LOOP_WAIT_SECONDS`` (it never will then: the caller hangs the call up)."""

        async def start() -> LiveCall | None:
            with self.lock:
                if self.abandoned:
                    return None
                self.live = attach()
                return self.live

        future = asyncio.run_coroutine_threadsafe(start(), loop)
        try:
            live = future.result(LOOP_WAIT_SECONDS)
        except TimeoutError:
            with self.lock:
                if self.live is not None:
                    return self.live
                self.abandoned = True
            future.cancel()
            logger.warning("call %s: its event loop did not take it in time", self.call_id)
            raise calls_full(NOT_HELD) from None
        except BaseException:  # (the waiting thread stopped: Ctrl-C, SystemExit)
            with self.lock:
                if self.live is None:
                    self.abandoned = True  # the caller hangs it up: never held as well
            raise
        assert live is not None
        return live


class LateCreates:
    """Creates whose requester gave up (a request cancelled while OpenAI answered, as when a
    server's shutdown grace runs out): once the answer comes, the call is hung up. The
    shutdown waits for them (``tasks``)."""

    def __init__(self, send: Sender, runtime: Runtime) -> None:
        self._send = send
        self._runtime = runtime
        self.tasks: set[asyncio.Future[None]] = set()

    def adopt(
        self,
        create: asyncio.Future[Any],
        call_id_of: Callable[[Any], str | None],
        target: RealtimeTarget,
        place: Place | None,
    ) -> None:
        """Hang up the call ``create`` makes (``call_id_of`` reads its id from the reply),
        then give ``place`` back; on the running loop."""
        task = asyncio.ensure_future(self._hang_up(create, call_id_of, target, place))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _hang_up(
        self,
        create: asyncio.Future[Any],
        call_id_of: Callable[[Any], str | None],
        target: RealtimeTarget,
        place: Place | None,
    ) -> None:
        try:
            call_id = call_id_of(await create)
            if call_id is not None:
                logger.warning("call %s created after its request gave up: hanging it up", call_id)
                request = self._runtime.hangup_request(target, call_id)
                await _hang_up(self._send, request, call_id)
        except Exception as exc:
            logger.info("a call create whose request gave up failed: %s", exc)
        finally:
            if place is not None:
                place.release()


@attrs.frozen
class CallOptions:
    """What :meth:`CallManager.attach` is told of a call besides its id and keys (see
    there), kept together as it goes to the loop that holds the call."""

    transport: str = "webrtc"
    session: Mapping[str, Any] | None = None
    model: str | None = None
    resume: Resume | None = None
    place: Place | None = None


class CallManager:
    """The live calls of one server in this process.

    It gets what it uses, not the server: ``settings``, the call-time ``budgets``,
    ``target(api_key)`` (where and how to reach the call's upstream), ``send`` (upstream
    requests: hang-ups), ``registry()`` and ``execute`` (the execute route's dispatch),
    ``concurrency`` (its background loop holds a call attached from sync code; its hook threads
    run a sync ``on_call_end``), the ``runtime`` (by default the one ``settings.runtime``
    names: Realtime or GPT-Live) and ``events(call)``, what is told of each call as it goes.

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
        runtime: Runtime | None = None,
        events: Callable[[LiveCall], CallEvents] = _log_only,
        reconnect_delays: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0),
        budget_tick_seconds: float = 5.0,
        connect: Connect | None = None,
    ) -> None:
        self.settings = settings
        self.max_seconds = settings.max_seconds
        self.max_live = settings.max_live
        self.budgets = budgets
        self.runtime = runtime if runtime is not None else runtime_for(settings.runtime)
        self._target = target
        self._send_upstream = send
        self._dispatch = FunctionDispatch(registry, execute, settings.calls_path)
        self._concurrency = concurrency
        self._events = events
        self.reconnect_delays = reconnect_delays
        self.budget_tick_seconds = budget_tick_seconds
        self._connect = connect
        # Where the calls this process holds are recorded, for whoever must end or take them
        # over if the process dies (calls/registry.py): ``held_calls``, ``leases``.
        self.holds = HeldCalls()
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        # Held calls and creates in flight, within NAVAI_CALL_MAX_LIVE (calls/places.py).
        self.places = Places(self.max_live)
        # Creates whose requester gave up, hung up once they answer.
        self.late_creates = LateCreates(send, self.runtime)

    @property
    def held_calls(self) -> CallRegistry:
        """A worker supervisor's record of the calls held here (nothing by default)."""
        return self.holds.registry

    @held_calls.setter
    def held_calls(self, registry: CallRegistry) -> None:
        self.holds.registry = registry

    @property
    def leases(self) -> CallHolds | None:
        """Calls that outlive a worker (calls/leases.py): set by the Navai with a shared
        store."""
        return self.holds.leases

    @leases.setter
    def leases(self, leases: CallHolds | None) -> None:
        self.holds.leases = leases

    # ----- the public API ---------------------------------------------------------------------

    def attach(
        self,
        call_id: str,
        *,
        api_key: str,
        rate_key: str,
        transport: str = "webrtc",
        loop: asyncio.AbstractEventLoop | None = None,
        session: Mapping[str, Any] | None = None,
        model: str | None = None,
        resume: Resume | None = None,
        place: Place | None = None,
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
        call outlives it. ``session`` is the session navai created or accepted the call
        with: on Realtime the session guard keeps it (``NAVAI_CALL_ON_CLIENT_UPDATE``).
        ``model`` is the model the call was asked for; ``resume`` takes over a call another
        worker held (its original start, its unanswered function calls).

        Raises :class:`CallsFull` (503) when the call cannot be held: no place, the server
        is stopping, or ``loop`` did not take it within ``LOOP_WAIT_SECONDS`` (it never
        will then). The call is not held: the caller hangs it up. ``place``: the place
        reserved for it before it was created (:meth:`reserve`); without one it takes a
        free place.
        """
        if not valid_call_id(call_id):
            raise ValueError("invalid call id")
        target = self._target(api_key)
        options = CallOptions(transport, session, model, resume, place)
        here = _running_loop()
        if loop is None:
            loop = here or self._concurrency.loop()
        if loop is here:
            return self._hold_here(call_id, target, rate_key, loop, options)
        if not loop.is_running():
            raise RuntimeError("the event loop to hold the call on is not running")
        held_on = loop
        return _Handoff(call_id).run(
            loop, lambda: self._hold_here(call_id, target, rate_key, held_on, options)
        )

    def reserve(self) -> Place:
        """A place for a call about to be created upstream (503 with ``Retry-After`` when
        this process holds, or is creating, ``call_max_live`` calls, or is stopping). Pass it
        to :meth:`attach`; :meth:`Place.release` gives it back if the call is not held."""
        return self.places.reserve()

    def live(self) -> list[LiveCall]:
        """The calls this process holds now, oldest first."""
        return [call.live() for call in self._held()]

    def check_room(self) -> None:
        """503 with ``Retry-After`` when this process holds (or is creating)
        ``call_max_live`` calls, or is stopping."""
        self.places.check()

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
        if (upstream := _hangup_ends(self, call)) is not None:
            return await upstream  # handed over to another worker: OpenAI hangs it up
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
            if (upstream := _hangup_ends(self, call)) is not None:
                _in_background(upstream, self.late_creates.tasks, call.call_id)
            return True
        future = asyncio.run_coroutine_threadsafe(self.ahangup(call_id, wait=wait), call.loop)
        try:
            return future.result(wait + 1.0)
        except TimeoutError:
            future.cancel()
            return False

    def hand_over(self, call_id: str) -> None:
        """Stop holding ``call_id`` without hanging it up and without a record: another
        worker holds it now (or will, its lease given up)."""
        with self._lock:
            call = self._calls.get(call_id)
        if call is not None and not call.loop.is_closed():
            call.loop.call_soon_threadsafe(call.end, HANDED_OVER)

    async def aclose(self, *, wait: float = 10.0, handover: bool = False) -> None:
        """Hang up every call (reason ``shutdown``) and wait, ``wait`` seconds in all, until
        each has ended and each create in flight has answered (a call created now is hung
        up at once). Hangups still unanswered at the end are given up. With ``handover`` (a
        shared store) the calls are handed over instead: their leases given up at once, no
        hangup, no record."""
        deadline = time.monotonic() + wait
        self.places.begin_close(deadline)
        try:
            calls = _stop_all(self._held(), HANDED_OVER if handover else SHUTDOWN)
            await _all_ended(calls, self.late_creates.tasks, wait, deadline)
            while self.places.reserved and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # creates in flight: their requesters hang up
        finally:
            self.places.end_close()

    def close(self, *, wait: float = 10.0, handover: bool = False) -> None:
        """:meth:`aclose` from sync code (not from a loop that holds calls)."""
        deadline = time.monotonic() + wait
        self.places.begin_close(deadline)
        try:
            _wait_ended(_stop_all(self._held(), HANDED_OVER if handover else SHUTDOWN), deadline)
            self.places.settled(deadline)
        finally:
            self.places.end_close()

    # ----- one call ---------------------------------------------------------------------------

    def _held(self) -> list[_Call]:
        with self._lock:
            return list(self._calls.values())

    def _hold_here(
        self,
        call_id: str,
        target: RealtimeTarget,
        rate_key: str,
        loop: asyncio.AbstractEventLoop,
        options: CallOptions,
    ) -> LiveCall:
        """Hold the call on ``loop``, the running one. Its parts (its events among them) are
        made once it has its place: a refused call leaves nothing behind."""
        with self._lock:
            if call_id in self._calls:
                raise ValueError(f"call {call_id} is already held")
            self.places.hold(options.place)
            try:
                call = _Call.assemble(self, call_id, target, rate_key, loop, options)
            except BaseException:
                self.places.leave()
                raise
            self._calls[call_id] = call
        runtime = self.runtime.name
        self.holds.hold(call, runtime=runtime, model=options.model, resume=options.resume)
        call.task = loop.create_task(self._hold(call), name=f"navai-call-{call_id}")
        return call.live()

    async def _hold(self, call: _Call) -> None:
        try:
            await call.run()
        finally:
            await self._ended(call)

    async def _ended(self, call: _Call) -> None:
        reason = call.reason or ENDED
        if reason == HANDED_OVER:  # another worker goes on with it: no hangup, no record
            await _handed_over(self, call)
            return
        workers = self.holds.ending(call.call_id)
        try:
            if reason in NAVAI_ENDS or reason == CLIENT_UPDATE:
                request = self.runtime.hangup_request(call.target, call.call_id)
                hang_up = _hang_up(self._send_upstream, request, call.call_id)
                deadline = self.places.deadline  # a shutdown: its hangups end with its grace
                if deadline is None:
                    await hang_up
                else:
                    await _within(hang_up, deadline - time.monotonic(), call.call_id)
            await call.limits.settle()
        finally:
            summary = call.events.finish(call.summary(reason))
            if workers > 1:  # held by more than one worker (calls/leases.py)
                summary = attrs.evolve(summary, workers=workers)
            self._forget(call)
            self.holds.ended(call.call_id)
            try:
                if (published := call.events.ended(summary)) is not None:
                    await published  # the call log's line, before the hook
                await anotify(self.settings.on_call_end, summary, owner=self._concurrency)
            finally:
                call.done.set()  # (close() waits for it: the hook has run)

    def _forget(self, call: _Call) -> None:
        """``call`` is no longer held here: its place is given back."""
        with self._lock:
            if self._calls.get(call.call_id) is call:
                del self._calls[call.call_id]
                self.places.leave()


def _hangup_ends(manager: CallManager, call: _Call) -> Awaitable[bool] | None:
    """A hangup of ``call`` (on its loop): ask it to end; None when it ends here (then it is
    hung up and recorded here), or OpenAI's hangup to await when another worker holds it.

    A hangup landing while the call is handed over still hangs it up (CONTRACT §13: the hangup
    route works whichever worker holds a call): while this worker holds the call's lease (a
    shutdown handing its calls over) the hangup wins over the handover; once another worker
    holds it, the hangup goes to OpenAI and the new owner, seeing its sideband close, writes
    the record. True when OpenAI ended it, False when it knows no such call (404)."""
    if call.reason != HANDED_OVER or manager.holds.owns(call.call_id):
        call.reason = HANGUP if call.reason == HANDED_OVER else call.reason
        call.end(HANGUP)
        return None
    request = manager.runtime.hangup_request(call.target, call.call_id)
    return _hang_up_upstream(manager._send_upstream, request)


async def _hang_up_upstream(send: Sender, request: UpstreamRequest) -> bool:
    reply = await send(request)
    if reply.status == 404:
        return False
    if not 200 <= reply.status <= 299:
        raise upstream_failure(request, reply.status, reply.content, reply.headers)
    return True


def _in_background(hangup: Awaitable[bool], tasks: set[Any], call_id: str) -> None:
    """OpenAI's hangup of a handed-over call, sent without waiting (a shutdown waits for it
    among ``tasks``); a failure is logged."""

    async def send() -> None:
        try:
            await hangup
        except Exception as exc:
            logger.warning("hanging up call %s failed: %s", call_id, exc)

    task = asyncio.ensure_future(send())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _handed_over(manager: CallManager, call: _Call) -> None:
    """``call`` ended here, handed over: no hangup, no record (its next owner's). Its place
    is given back, its budget settled (seconds paid ahead and not used here given back; the
    next owner goes on from what was charged then) and its lease let go."""
    manager._forget(call)
    try:
        await call.limits.settle()
    finally:
        manager.holds.handed_over(call.call_id)
        call.events.handed_over()
        call.done.set()


async def _hang_up(send: Sender, request: UpstreamRequest, call_id: str) -> None:
    """Send the hangup of a call navai ends; a failure is logged (the call may be gone)."""
    try:
        reply = await send(request)
    except Exception as exc:
        logger.warning("hanging up call %s failed: %s", call_id, exc)
        return
    if not 200 <= reply.status <= 299 and reply.status != 404:
        logger.warning("hanging up call %s: OpenAI answered %s", call_id, reply.status)


def _stop_all(calls: list[_Call], reason: str) -> list[_Call]:
    """Ask each of ``calls`` to end (``shutdown``, or ``handed_over``), on its own loop."""
    here = _running_loop()
    for call in calls:
        if call.loop is here:
            call.end(reason)
        elif not call.loop.is_closed():
            call.loop.call_soon_threadsafe(call.end, reason)
    return calls


async def _all_ended(
    calls: list[_Call], creates: set[asyncio.Future[None]], wait: float, deadline: float
) -> None:
    """Wait until ``calls`` and the late ``creates`` have ended: those on this loop ``wait``
    seconds at most (then cancelled), the others until ``deadline``."""
    here = _running_loop()
    waits: list[asyncio.Future[Any]] = [c.task for c in calls if c.loop is here and c.task]
    await _ended_within([*waits, *creates], wait)
    elsewhere = [call for call in calls if call.loop is not here]
    if elsewhere:
        await asyncio.to_thread(_wait_ended, elsewhere, deadline)


async def _ended_within(tasks: list[asyncio.Future[Any]], seconds: float) -> None:
    """Wait for ``tasks`` ``seconds`` at most, then cancel those still running: nothing runs
    on after a shutdown's grace."""
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=seconds)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late, timeout=0.5)


async def _within(hang_up: Awaitable[None], seconds: float, call_id: str) -> None:
    try:
        await asyncio.wait_for(hang_up, max(seconds, 0.0))
    except TimeoutError:
        logger.warning("hanging up call %s at shutdown: no answer within the grace", call_id)


def _wait_ended(calls: list[_Call], deadline: float) -> None:
    """Wait until each call has ended, or until ``deadline`` (one for them all)."""
    for call in calls:
        call.done.wait(max(deadline - time.monotonic(), 0.0))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
