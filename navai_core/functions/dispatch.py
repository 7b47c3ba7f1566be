"""Running a backend function: one shared ``prepare_call``, two short tails.

``prepare_call`` makes every decision (400, 404, argument rules, validation) with no I/O;
``execute`` (sync code) and ``aexecute`` (async code) only run the prepared call and turn
the outcome into a :class:`Reply`. Where code runs is the business of one owner, a
:class:`~navai_core.concurrency.owner.Concurrency` (a ``Navai`` passes its own): async
functions called from sync code run on its background loop; sync functions run on its
bounded budget of threads when the caller must not wait for them (from async code, or with
a limit); every async function runs in a task of its own. Called without an owner,
``execute``/``aexecute`` make one for that call and close it when the call returns.

Both tails first ask the entry's ``authorize`` hook (``_hooks``: 403 when it says no), then
run the function within its time limit: the caller gets 504 at the limit whatever the
function does. An async function is cancelled then (one that ignores the cancellation runs
on, unobserved); a sync one is no longer waited for (Python cannot stop a thread; it keeps
its thread until it returns). With no free thread, the call is answered 503.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import inspect
import logging
import math
import sys
import time
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Awaitable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from .._errors import BadRequest, NavaiError, NotFound
from .._hooks import DENIED, aallowed, allowed
from .._http import Reply, RequestContext
from .._json import JsonValue
from ..concurrency.background import BackgroundTimeout
from ..concurrency.owner import Concurrency
from ..concurrency.threads import Busy, FunctionThreads, Overran
from ..records.tracing import atraced_run, traced_run
from ..routes.body import require_object
from .envelope import function_error
from .registry import FunctionEntry, FunctionError, FunctionRegistry
from .schema import CallSpec, InvalidArguments, UnconvertibleResult, to_json

logger = logging.getLogger("navai")
T = TypeVar("T")

EXECUTION_FAILED = "Function execution failed."
GENERIC_DETAILS = "The function raised an error."
FAILURE_STATUS = 500
TIMED_OUT = "Function timed out."
TIMEOUT_STATUS = 504
BUSY = "Function is busy."
BUSY_STATUS = 503
# How long a sync caller waits past the limit for the background loop to deliver the
# cancellation of an async function (a function that blocks the loop cannot be cancelled).
CANCEL_GRACE_SECONDS = 0.5
# How long a call of a sync function without a time limit waits for a free thread.
UNLIMITED_WAIT_SECONDS = 30.0


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
    # Where the call runs when its caller passes no owner: its registry's.
    concurrency: Concurrency | None = attrs.field(default=None, repr=False, eq=False)

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
            extra=function_error(name, details="The function cannot be called."),
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
            extra=function_error(name, details=list[JsonValue](problems)),
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
        concurrency=registry.concurrency(),
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


@traced_run
def execute(
    prepared: PreparedCall,
    *,
    expose_errors: bool = False,
    default_timeout: float | None = None,
    threads: FunctionThreads | None = None,
    concurrency: Concurrency | None = None,
) -> Reply:
    """Run a prepared call from sync code (an async function runs on a background loop).

    ``default_timeout`` is the limit in seconds of a function registered without its own
    ``timeout`` (``None`` or ``0``: no limit). With a limit, a sync function runs on a
    thread so that the caller can stop waiting for it. ``concurrency`` owns the loop and
    the threads (a ``Navai`` passes its own). Without it, the call runs on its registry's
    owner (``FunctionRegistry.concurrency()``), with ``threads`` as its function budget if
    given; a ``PreparedCall`` built by hand, with neither, gets an owner for that call only,
    closed when it returns.
    """
    owner, temporary = _owner(prepared, concurrency, threads)
    try:
        return _execute(prepared, owner, expose_errors, default_timeout)
    finally:
        if temporary:
            owner.close(wait=False)


def _owner(
    prepared: PreparedCall, concurrency: Concurrency | None, threads: FunctionThreads | None
) -> tuple[Concurrency, bool]:
    """The call's owner, and whether it was made for this call only."""
    if concurrency is not None:
        return concurrency, False
    base = prepared.concurrency
    if threads is None and base is not None:
        return base, False
    if base is not None:  # the registry's loop, the caller's threads
        owner = Concurrency(threads=threads)
        owner.background = base.background
        owner.hooks = base.hooks
        return owner, False
    return Concurrency(threads=threads), True


def _execute(
    prepared: PreparedCall,
    owner: Concurrency,
    expose_errors: bool,
    default_timeout: float | None,
) -> Reply:
    denied = _check(prepared, owner, expose_errors)
    if denied is not None:
        return denied
    limit = time_limit(prepared.entry, default_timeout)
    try:
        if limit is None:
            result = prepared.start()
            if inspect.isawaitable(result):
                result = owner.run(result)
        else:
            if prepared.entry.is_async:
                result = _run_on_loop(prepared.start(), limit, owner)
            else:
                pool = owner.functions
                try:
                    result, started = pool.run(prepared.entry.name, prepared.start, limit)
                except Overran:
                    raise _TimedOut from None
                if inspect.isawaitable(result):
                    left = max(started + limit - time.monotonic(), 0.0)
                    result = _run_on_loop(result, left, owner)
    except _TimedOut:
        return _timeout_reply(prepared, limit)
    except Busy:
        return _busy_reply(prepared, limit)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors)
    return _success(prepared, result)


@atraced_run
async def aexecute(
    prepared: PreparedCall,
    *,
    expose_errors: bool = False,
    default_timeout: float | None = None,
    threads: FunctionThreads | None = None,
    concurrency: Concurrency | None = None,
) -> Reply:
    """Run a prepared call from async code (a sync function runs on one of the owner's
    threads, an async one in a task of its own).

    ``default_timeout``, ``threads`` and ``concurrency`` as for :func:`execute`.
    """
    owner, temporary = _owner(prepared, concurrency, threads)
    try:
        return await _aexecute(prepared, owner, expose_errors, default_timeout)
    finally:
        if temporary:
            owner.close(wait=False)


async def _aexecute(
    prepared: PreparedCall, owner: Concurrency, expose_errors: bool, default_timeout: float | None
) -> Reply:
    denied = await _acheck(prepared, owner, expose_errors)
    if denied is not None:
        return denied
    limit = time_limit(prepared.entry, default_timeout)
    try:
        if prepared.entry.is_async:
            result = await _within(prepared.start(), limit, owner)
        else:
            result = await _in_thread(prepared, limit, owner)
    except _TimedOut:
        return _timeout_reply(prepared, limit)
    except Busy:
        return _busy_reply(prepared, limit)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors)
    return _success(prepared, result)


def time_limit(entry: FunctionEntry, default_timeout: float | None) -> float | None:
    """The entry's own ``timeout``, else ``default_timeout``; ``None`` when there is no limit."""
    limit = entry.timeout if entry.timeout is not None else default_timeout
    if limit is None or not limit > 0 or math.isinf(limit):
        return None
    return float(limit)


def _run_on_loop(awaitable: Awaitable[Any], limit: float, owner: Concurrency) -> Any:
    """Await on the background loop with a limit; stop waiting a grace period later even
    if the function blocks the loop (then cancellation cannot reach it)."""
    if owner.inside():
        owner.run(awaitable)  # refused: the loop cannot wait for itself
    try:
        return owner.run(_within(awaitable, limit, owner), limit + CANCEL_GRACE_SECONDS)
    except BackgroundTimeout:
        raise _TimedOut from None


async def _in_thread(prepared: PreparedCall, limit: float | None, owner: Concurrency) -> Any:
    """A sync function on one of the owner's function threads (its limit counted from the
    moment it has one); an awaitable it returns gets what is left of the limit, counted
    from the call."""
    loop = asyncio.get_running_loop()
    called = loop.time()
    try:
        result = await owner.run_sync(
            prepared.start,
            name=prepared.entry.name,
            wait=limit or UNLIMITED_WAIT_SECONDS,
            limit=limit,
            threads=owner.functions,
        )
    except Overran:
        raise _TimedOut from None
    if inspect.isawaitable(result):
        left = None if limit is None else max(called + limit - loop.time(), 0.0)
        result = await _within(result, left, owner)
    return result


async def _within(awaitable: Awaitable[Any], limit: float | None, owner: Concurrency) -> Any:
    """Await ``awaitable`` in a task of its own, for at most ``limit`` seconds, then raise
    _TimedOut.

    The task's context is a copy of the caller's (as ``asyncio.create_task`` makes), so
    what the function does to its own task (``asyncio.timeout``, ``asyncio.current_task()``,
    a context variable set) stays with it and never reaches the caller. Past the limit the
    caller is answered at once, whatever the function does: the task is cancelled, and left
    to finish alone if it swallows the cancellation. A cancelled caller cancels the call.
    """
    loop = asyncio.get_running_loop()
    deadline = None if limit is None else loop.time() + limit
    task, first = _task(loop, awaitable)
    if task.done():  # (an eager task that finished in its first step: nothing to wait for)
        return task.result()
    if first is not None and isinstance(task, asyncio.Task) and task.cancelling() == 0:
        # (Python 3.11: its first step ran eagerly and finished; the task ends by itself)
        if first.kind == _RETURNED:
            return first.value
        if first.kind == _RAISED and isinstance(first.value, Exception):
            task.add_done_callback(_retrieve)
            raise first.value
    if deadline is None:
        try:
            return await task
        except asyncio.CancelledError:
            _cancelled_itself(task)
            raise
    late = deadline <= loop.time()
    try:
        async with asyncio.timeout_at(None if late else deadline) as scope:
            if late:
                # The first step outlasted the limit: the timer goes off in the loop's next
                # round, after the call's own wake-up, as it would had it been armed before.
                loop.call_soon(scope.reschedule, deadline)
            return await asyncio.shield(task)
    except TimeoutError:
        if not scope.expired():
            raise  # the function's own TimeoutError
        _abandon(task, owner)
        raise _TimedOut from None
    except asyncio.CancelledError:
        _cancelled_itself(task)
        _abandon(task, owner)  # the caller was cancelled: so is the call
        raise
    except BaseException:
        _abandon(task, owner)
        raise


def _cancelled_itself(task: asyncio.Future[Any]) -> None:
    """A call whose task was cancelled, not its caller: it failed (raised here)."""
    caller = asyncio.current_task()
    if task.cancelled() and (caller is None or not caller.cancelling()):
        raise CancelledItself("the function's task was cancelled")


class CancelledItself(Exception):
    """A function's task was cancelled by the function itself (not by its caller)."""


def _task(
    loop: asyncio.AbstractEventLoop, awaitable: Awaitable[Any]
) -> tuple[asyncio.Future[Any], _FirstStep | None]:
    """A task of its own for ``awaitable`` (its context copied from the caller's), its first
    step run at once, in the task: with ``eager_start`` (Python 3.12+), else as
    :func:`_first_step_now` does. The first step's outcome on 3.11, else None."""
    if not inspect.iscoroutine(awaitable):
        return asyncio.ensure_future(awaitable), None
    if _EAGER:
        task = asyncio.Task(awaitable, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return task, None
    return _first_step_now(loop, awaitable)


_EAGER = sys.version_info >= (3, 12)
_RETURNED, _RAISED, _WAITS = "returned", "raised", "waits"


class _FirstStep(collections.abc.Coroutine[Any, Any, Any]):
    """What a Python 3.11 task drives: a coroutine whose first step already ran.

    The task's first ``send`` hands it the first step's outcome (the future the coroutine
    waits on, its result, or its exception); every later ``send``/``throw`` goes to the
    coroutine itself, as ``yield from`` would. A cancellation that reaches the task before
    its first step cancels the future the coroutine waits on, as a task does.
    """

    __slots__ = ("coro", "kind", "value")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.kind: str | None = None
        self.value: Any = None

    def send(self, value: Any) -> Any:
        kind, self.kind = self.kind, None
        if kind is None:
            return self.coro.send(value)
        if kind == _WAITS:
            return self.value
        if kind == _RETURNED:
            raise StopIteration(self.value)
        raise self.value

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        kind, self.kind = self.kind, None
        exc = typ if val is None and isinstance(typ, BaseException) else typ(val)
        if kind is None:
            return self.coro.throw(exc)
        if kind == _WAITS:
            waited = self.value
            cancel = isinstance(exc, asyncio.CancelledError)
            if cancel and getattr(waited, "_asyncio_future_blocking", False) and waited.cancel():
                return waited  # the coroutine wakes to the cancelled future, as in a task
            return self.coro.throw(exc)
        raise exc  # (the coroutine has finished: nothing to throw into)

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Any:
        raise RuntimeError("driven by its task only")


def _first_step_now(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]
) -> tuple[asyncio.Task[Any], _FirstStep]:
    """Python 3.11's eager start (3.12's ``eager_start=True``, done by hand): make the task,
    then run the coroutine's first step at once with the task as the current task and in
    the task's context, the caller set aside meanwhile. The task's own first step, a loop
    round later, takes up what this one left (``_FirstStep``); a caller whose call finished
    here need not wait for it."""
    first = _FirstStep(coro)
    context = contextvars.copy_context()
    task = asyncio.Task(first, loop=loop, context=context)
    caller = asyncio.current_task(loop)
    if caller is not None:
        _leave_task(loop, caller)
    _enter_task(loop, task)
    try:
        first.value = context.run(coro.send, None)
        first.kind = _WAITS
    except StopIteration as stop:
        first.kind, first.value = _RETURNED, stop.value
    except BaseException as exc:
        first.kind, first.value = _RAISED, exc
    finally:
        _leave_task(loop, task)
        if caller is not None:
            _enter_task(loop, caller)
    return task, first


def _retrieve(task: asyncio.Future[Any]) -> None:
    """(Its exception was raised to the caller already.)"""
    if not task.cancelled():
        task.exception()


def _abandon(task: asyncio.Future[Any], owner: Concurrency) -> None:
    if task.done():
        return
    task.cancel()
    owner.keep(task)  # (until it ends, if it swallows the cancellation)
    task.add_done_callback(_consume)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.info("a call past its time limit ended with %r", task.exception())


# ----- authorisation -------------------------------------------------------------------------


def _check(prepared: PreparedCall, owner: Concurrency, expose_errors: bool) -> Reply | None:
    """Ask the entry's hook from sync code (an async hook runs on the background loop)."""
    hook = prepared.entry.authorize
    if hook is None:
        return None
    try:
        ok = allowed(hook, owner, prepared.context or RequestContext(), prepared.arguments)
    except NavaiError as exc:
        return _denied_reply(prepared, exc)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors, what="authorisation hook of")
    return None if ok else _denied_reply(prepared, None)


async def _acheck(prepared: PreparedCall, owner: Concurrency, expose_errors: bool) -> Reply | None:
    """Ask the entry's hook from async code (a sync hook runs on one of the owner's hook
    threads)."""
    hook = prepared.entry.authorize
    if hook is None:
        return None
    try:
        ok = await aallowed(hook, owner, prepared.context or RequestContext(), prepared.arguments)
    except NavaiError as exc:
        return _denied_reply(prepared, exc)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors, what="authorisation hook of")
    return None if ok else _denied_reply(prepared, None)


def _denied_reply(prepared: PreparedCall, exc: NavaiError | None) -> Reply:
    """403 ``{"ok": false, "function_name", "error": "Forbidden."}``, or the raised error's
    status, message, extra keys and headers in the same envelope."""
    name = prepared.entry.name
    logger.info("call of %s denied by its authorisation hook", name)
    if exc is None:
        return Reply(403, function_error(name, DENIED))
    body: dict[str, JsonValue] = {**exc.body(), **function_error(name)}
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
        function_error(
            entry.name, TIMED_OUT, f"{entry.name} did not finish within {limit:g} seconds."
        ),
    )


def _busy_reply(prepared: PreparedCall, limit: float | None) -> Reply:
    entry = prepared.entry
    logger.warning(
        "function %s (%s): no thread became free; answered 503", entry.name, entry.source
    )
    retry = str(min(max(math.ceil(limit or 1), 1), 60))
    return Reply(
        BUSY_STATUS,
        function_error(
            entry.name, BUSY, f"Too many calls of {entry.name} are running. Try again later."
        ),
        (("Retry-After", retry),),
    )


def _failure_reply(name: str, details: str) -> Reply:
    return Reply(
        FAILURE_STATUS,
        function_error(name, EXECUTION_FAILED, details),
    )
