"""Running a backend function: one shared ``prepare_call``, two short tails.

``prepare_call`` makes every decision (400, 404, argument rules, validation) with no I/O;
``execute`` (sync code) and ``aexecute`` (async code) only run the prepared call and turn
the outcome into a :class:`Reply`. Async functions called from sync code run on one
long-lived background event loop; sync functions called from async code run in a worker
thread, so an event loop is never blocked.

Both tails first ask the entry's ``authorize`` hook (403 when it says no), then run the
function within its time limit (504 past it): an async function is cancelled at the limit,
a sync one is no longer waited for (Python cannot stop a thread; it runs on, unobserved).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import math
import queue
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs

from ._body import require_object
from ._errors import BadRequest, NavaiError, NotFound
from ._functions import FunctionEntry, FunctionError, FunctionRegistry
from ._http import Reply, RequestContext
from ._json import JsonValue
from ._protect import DENIED
from ._schema import CallSpec, InvalidArguments, UnconvertibleResult, to_json

logger = logging.getLogger("navai")
T = TypeVar("T")

EXECUTION_FAILED = "Function execution failed."
GENERIC_DETAILS = "The function raised an error."
FAILURE_STATUS = 500
TIMED_OUT = "Function timed out."
TIMEOUT_STATUS = 504
# How long a sync caller waits past the limit for the background loop to deliver the
# cancellation of an async function (a function that blocks the loop cannot be cancelled).
CANCEL_GRACE_SECONDS = 0.5


class _TimedOut(Exception):
    """The time limit passed (never raised by a function itself, unlike TimeoutError)."""


@attrs.frozen
class PreparedCall:
    """A call that passed every check: the entry and its final arguments."""

    entry: FunctionEntry
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    init_args: tuple[Any, ...] = ()
    init_kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    # What the authorisation hook sees: validated values by parameter name (the
    # constructor's under "constructorArgs"), and the request.
    arguments: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    context: RequestContext | None = attrs.field(default=None, repr=False)

    @property
    def function_name(self) -> str:
        return self.entry.name

    def start(self) -> Any:
        """Call the function: its result, or for an async function the coroutine."""
        entry = self.entry
        if entry.owner is None:
            return entry.target(*self.args, **self.kwargs)
        instance = entry.owner(*self.init_args, **self.init_kwargs)
        return entry.target(instance, *self.args, **self.kwargs)


# ----- the shared step ---------------------------------------------------------------------


def prepare_call(
    registry: FunctionRegistry, body: object, context: RequestContext | None = None
) -> PreparedCall:
    """Check an execute body ``{"function_name", "payload"}`` and bind the arguments.

    Raises ``BadRequest`` (no name, invalid arguments) or ``NotFound`` (unknown name).
    """
    body = require_object(body)
    raw_name = body.get("function_name")
    name = raw_name.strip().lower() if isinstance(raw_name, str) else ""
    if not name:
        raise BadRequest("function_name is required.")
    entry = registry.get(name)
    if entry is None:
        raise NotFound(
            "Unknown or disallowed function.",
            extra={"available_functions": list(registry.names())},
        )
    payload = body.get("payload")
    if not isinstance(payload, dict):
        payload = {}
    try:
        call_spec, init_spec = entry.call_spec, entry.constructor_spec
    except Exception:
        raise NavaiError(
            EXECUTION_FAILED,
            status_code=FAILURE_STATUS,
            extra={"ok": False, "function_name": name, "details": "The function cannot be called."},
        ) from None
    problems: list[dict[str, JsonValue]] = []
    init_args: tuple[Any, ...] = ()
    init_kwargs: dict[str, Any] = {}
    init_values: dict[str, Any] | None = None
    if init_spec is not None:
        payload = dict(payload)
        raw_init = payload.pop("constructorArgs", None)
        init_args, init_kwargs, init_values = _bind(
            init_spec, raw_init, context, problems, "constructorArgs."
        )
        source = payload.get("methodArgs", payload)
    else:
        source = payload
    call_args, call_kwargs, values = _bind(call_spec, source, context, problems, "")
    if problems:
        raise BadRequest(
            "Invalid arguments.",
            extra={"ok": False, "function_name": name, "details": list[JsonValue](problems)},
        )
    if init_values is not None:
        values["constructorArgs"] = MappingProxyType(init_values)
    return PreparedCall(
        entry,
        call_args,
        call_kwargs,
        init_args,
        init_kwargs,
        arguments=MappingProxyType(values),
        context=context,
    )


def payload_arguments(
    payload: Mapping[str, Any], spec: CallSpec
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The contract's argument rules 1-5: positional and keyword arguments from a payload.

    One refinement: when every key names a parameter and one of them is literally called
    ``args``, ``arguments`` or ``value``, the payload is taken as keywords (rule 3).
    """
    keywords = bool(payload) and spec.accepts_keywords(payload)
    if keywords and any(key in spec.by_name for key in ("args", "arguments", "value")):
        return (), dict(payload)
    for key in ("args", "arguments"):
        value = payload.get(key)
        if isinstance(value, list):
            return tuple(value), {}
    if "value" in payload:
        return (payload["value"],), {}
    if keywords:
        return (), dict(payload)
    if payload:
        return (dict(payload),), {}
    return (), {}


def _arguments_of(raw: Any, spec: CallSpec) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``constructorArgs`` / ``methodArgs``: a list is positional, an object follows the
    payload rules, null or missing is no argument, any other value is one argument."""
    if raw is None:
        return (), {}
    if isinstance(raw, list):
        return tuple(raw), {}
    if isinstance(raw, dict):
        return payload_arguments(raw, spec)
    return (raw,), {}


def _bind(
    spec: CallSpec,
    source: Any,
    context: RequestContext | None,
    problems: list[dict[str, JsonValue]],
    prefix: str,
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """Bind and validate ``source`` (a payload, ``constructorArgs`` or ``methodArgs``):
    positional and keyword arguments of the call, and the values by parameter name."""
    args, kwargs = _arguments_of(source, spec)
    try:
        values = spec.bind(args, kwargs)
    except InvalidArguments as exc:
        details = exc.details
        if (
            isinstance(source, dict)
            and args == (source,)
            and any(key in spec.by_name for key in source)
        ):
            # Rule 4 took a keyword-shaped payload with some unknown key as one argument:
            # report the problems of the keywords, which is what the caller meant.
            try:
                spec.bind((), source)
            except InvalidArguments as keyword_exc:
                details = keyword_exc.details
        problems.extend({**d, "parameter": f"{prefix}{d['parameter']}"} for d in details)
        return (), {}, {}
    return (*spec.call_arguments(values, context), values)


# ----- the two tails -------------------------------------------------------------------------


def execute(
    prepared: PreparedCall, *, expose_errors: bool = False, default_timeout: float | None = None
) -> Reply:
    """Run a prepared call from sync code (an async function runs on the background loop).

    ``default_timeout`` is the limit in seconds of a function registered without its own
    ``timeout`` (``None`` or ``0``: no limit). With a limit, a sync function runs in a
    thread of its own so that the caller can stop waiting for it.
    """
    denied = _check(prepared, expose_errors)
    if denied is not None:
        return denied
    limit = time_limit(prepared.entry, default_timeout)
    try:
        if limit is None:
            result = prepared.start()
            if inspect.isawaitable(result):
                result = _background.run(result)
        elif prepared.entry.is_async:
            result = _background.run(prepared.start(), limit)
        else:
            deadline = time.monotonic() + limit
            result = _run_in_thread(prepared.start, limit)
            if inspect.isawaitable(result):
                result = _background.run(result, max(deadline - time.monotonic(), 0.0))
    except _TimedOut:
        return _timeout_reply(prepared, limit)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors)
    return _success(prepared, result)


async def aexecute(
    prepared: PreparedCall, *, expose_errors: bool = False, default_timeout: float | None = None
) -> Reply:
    """Run a prepared call from async code (a sync function runs in a worker thread).

    ``default_timeout`` as for :func:`execute`.
    """
    denied = await _acheck(prepared, expose_errors)
    if denied is not None:
        return denied
    limit = time_limit(prepared.entry, default_timeout)
    try:
        result = await _within(_arun(prepared), limit)
    except _TimedOut:
        return _timeout_reply(prepared, limit)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors)
    return _success(prepared, result)


def time_limit(entry: FunctionEntry, default_timeout: float | None) -> float | None:
    """The entry's own ``timeout``, else ``default_timeout``; ``None`` when there is no limit."""
    limit = entry.timeout if entry.timeout is not None else default_timeout
    if limit is None or not limit > 0 or math.isinf(limit):
        return None
    return float(limit)


async def _arun(prepared: PreparedCall) -> Any:
    if prepared.entry.is_async:
        result = prepared.start()
    else:
        # Abandoned at the limit: the thread runs on, its capacity token is given back.
        result = await anyio.to_thread.run_sync(prepared.start, abandon_on_cancel=True)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _within(awaitable: Awaitable[Any], limit: float | None) -> Any:
    """Await ``awaitable``, cancelling it after ``limit`` seconds (then raise _TimedOut)."""
    if limit is None:
        return await awaitable
    if _asyncio_timeout_at is not None:
        # Python 3.11+: about 4 us cheaper per call than an anyio cancel scope.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        late = False
        if inspect.iscoroutine(awaitable):
            # Run the first step before arming the timer (3-5 us): a coroutine that
            # finishes without waiting could not be cancelled at the limit anyway (a limit
            # acts where a coroutine waits), and one that waits goes on under the timer,
            # with the deadline counted from before its first step.
            try:
                first = awaitable.send(None)
            except StopIteration as done:
                return done.value
            awaitable = _resume(awaitable, first)
            late = deadline <= loop.time()
        try:
            async with _asyncio_timeout_at(None if late else deadline) as scope:
                if late:
                    # The first step outlasted the limit. A timer armed before it would go
                    # off in the loop's next round after the call's own wake-up; so does
                    # this one (armed then, it goes off in the round after).
                    loop.call_soon(scope.reschedule, deadline)
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise _TimedOut from None
            raise  # the function's own TimeoutError
    with anyio.move_on_after(limit):
        return await awaitable
    raise _TimedOut


_asyncio_timeout_at: Any = getattr(asyncio, "timeout_at", None)


@types.coroutine
def _resume(coroutine: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Go on awaiting ``coroutine`` after a first step that yielded ``yielded``: what
    ``await`` does (PEP 380's ``yield from``), from its first suspension on."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as exc:  # thrown in by the task (cancellation): passed on
            try:
                yielded = coroutine.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = coroutine.send(sent)
            except StopIteration as done:
                return done.value


def _run_in_thread(fn: Callable[[], Any], limit: float) -> Any:
    """``fn()`` in one of navai's function threads; stop waiting after ``limit`` seconds."""
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()
    context = contextvars.copy_context()

    def job() -> None:
        try:
            outcome.append((True, context.run(fn)))
        except BaseException as exc:  # handed to the caller, who decides
            outcome.append((False, exc))
        finally:
            done.set()

    _threads.submit(job)
    if not done.wait(limit):
        raise _TimedOut
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class _Threads:
    """Daemon threads for sync functions with a time limit, called from sync code.

    Idle threads are reused; when none is idle a new one starts (a call past its limit keeps
    its thread, so hung calls never hold up the others). A thread idle for ``IDLE_SECONDS``
    ends.
    """

    IDLE_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1  # claimed: that thread will take a job from the queue
        if reuse:
            self._jobs.put(job)
        else:
            threading.Thread(
                target=self._work, args=(job,), name="navai-function", daemon=True
            ).start()

    def _work(self, job: Callable[[], None]) -> None:
        while True:
            job()
            with self._lock:
                self._idle += 1
            while True:
                try:
                    job = self._jobs.get(timeout=self.IDLE_SECONDS)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0:  # not claimed meanwhile: end this thread
                            self._idle -= 1
                            return


_threads = _Threads()


# ----- authorisation -------------------------------------------------------------------------


def _check(prepared: PreparedCall, expose_errors: bool) -> Reply | None:
    """Ask the entry's hook from sync code (an async hook runs on the background loop)."""
    hook = prepared.entry.authorize
    if hook is None:
        return None
    try:
        verdict = hook(prepared.context or RequestContext(), prepared.arguments)
        if inspect.isawaitable(verdict):
            verdict = _background.run(verdict)
    except NavaiError as exc:
        return _denied_reply(prepared, exc)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors, what="authorisation hook of")
    return _verdict(prepared, verdict)


async def _acheck(prepared: PreparedCall, expose_errors: bool) -> Reply | None:
    """Ask the entry's hook from async code (a sync hook runs in a worker thread)."""
    hook = prepared.entry.authorize
    if hook is None:
        return None
    context = prepared.context or RequestContext()
    try:
        if inspect.iscoroutinefunction(hook):
            verdict = await hook(context, prepared.arguments)
        else:
            verdict = await anyio.to_thread.run_sync(hook, context, prepared.arguments)
            if inspect.isawaitable(verdict):  # a callable object with an async __call__
                verdict = await verdict
    except NavaiError as exc:
        return _denied_reply(prepared, exc)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors, what="authorisation hook of")
    return _verdict(prepared, verdict)


def _verdict(prepared: PreparedCall, verdict: object) -> Reply | None:
    if verdict is False:
        return _denied_reply(prepared, None)
    return None


def _denied_reply(prepared: PreparedCall, exc: NavaiError | None) -> Reply:
    """403 ``{"ok": false, "function_name", "error": "Forbidden."}``, or the raised error's
    status, message, extra keys and headers in the same envelope."""
    name = prepared.entry.name
    logger.info("call of %s denied by its authorisation hook", name)
    if exc is None:
        return Reply(403, {"ok": False, "function_name": name, "error": DENIED})
    body: dict[str, JsonValue] = {**exc.body(), "ok": False, "function_name": name}
    return Reply(exc.status_code, body, exc.headers)


# ----- answers ---------------------------------------------------------------------------------


def _success(prepared: PreparedCall, result: object) -> Reply:
    entry = prepared.entry
    try:
        value = to_json(result)
    except UnconvertibleResult as exc:
        logger.error("function %s (%s): %s", entry.name, entry.source, exc)
        return _failure_reply(entry.name, str(exc))
    return Reply(
        200, {"ok": True, "function_name": entry.name, "source": entry.source, "result": value}
    )


def _failure(
    prepared: PreparedCall, exc: BaseException, expose_errors: bool, what: str = "function"
) -> Reply:
    entry = prepared.entry
    if isinstance(exc, FunctionError):
        logger.warning("%s %s (%s) failed: %s", what, entry.name, entry.source, exc)
        return _failure_reply(entry.name, exc.message)
    logger.error("%s %s (%s) raised", what, entry.name, entry.source, exc_info=exc)
    details = f"{type(exc).__name__}: {exc}" if expose_errors else GENERIC_DETAILS
    return _failure_reply(entry.name, details)


def _timeout_reply(prepared: PreparedCall, limit: float | None) -> Reply:
    entry = prepared.entry
    logger.warning(
        "function %s (%s) did not finish within %g seconds", entry.name, entry.source, limit
    )
    return Reply(
        TIMEOUT_STATUS,
        {
            "ok": False,
            "function_name": entry.name,
            "error": TIMED_OUT,
            "details": f"{entry.name} did not finish within {limit:g} seconds.",
        },
    )


def _failure_reply(name: str, details: str) -> Reply:
    return Reply(
        FAILURE_STATUS,
        {"ok": False, "function_name": name, "error": EXECUTION_FAILED, "details": details},
    )


# ----- the background event loop -------------------------------------------------------------


class _BackgroundLoop:
    """One daemon thread running one event loop, started on first use and reused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, awaitable: Awaitable[Any], limit: float | None = None) -> Any:
        """Await ``awaitable`` on the loop; with ``limit``, cancel it then (_TimedOut)."""
        loop = self._loop or self._start()
        if threading.current_thread() is self._thread:
            _discard(awaitable)
            raise RuntimeError("execute() was called from navai's background loop; use aexecute()")
        future = asyncio.run_coroutine_threadsafe(_within(awaitable, limit), loop)
        if limit is None:
            return future.result()
        concurrent.futures.wait([future], limit + CANCEL_GRACE_SECONDS)
        if not future.done():
            future.cancel()
            raise _TimedOut
        return future.result()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="navai-functions-loop", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None

    def close(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError("navai's background loop cannot be closed from itself")
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _cancel_tasks() -> None:
    """Cancel what still runs (its callers get CancelledError) so no caller waits forever."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


_background = _BackgroundLoop()


def close_background_loop() -> None:
    """Stop the event loop that runs async functions for ``execute`` (restarted on next use).

    Calls still running on it are cancelled. Call it at shutdown, from any thread but the
    loop's own.
    """
    _background.close()


def submit_background(coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run ``coroutine`` on navai's background loop (started on first use) from any thread
    but the loop's own: the one seam for code outside this module."""
    return asyncio.run_coroutine_threadsafe(coroutine, _background._loop or _background._start())


def background_loop_thread() -> threading.Thread | None:
    """The background loop's thread, when it runs."""
    return _background._thread
