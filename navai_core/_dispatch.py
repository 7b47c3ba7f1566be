"""Running a backend function: one shared ``prepare_call``, two short tails.

``prepare_call`` makes every decision (400, 404, argument rules, validation) with no I/O;
``execute`` (sync code) and ``aexecute`` (async code) only run the prepared call and turn
the outcome into a :class:`Reply`. Async functions called from sync code run on one
long-lived background event loop; sync functions called from async code run in a worker
thread, so an event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Mapping
from typing import Any

import anyio.to_thread
import attrs

from ._errors import BadRequest, NavaiError, NotFound
from ._functions import FunctionEntry, FunctionError, FunctionRegistry
from ._http import Reply, RequestContext
from ._json import JsonValue
from ._schema import CallSpec, InvalidArguments, UnconvertibleResult, to_json

logger = logging.getLogger("navai")

EXECUTION_FAILED = "Function execution failed."
GENERIC_DETAILS = "The function raised an error."
FAILURE_STATUS = 500


@attrs.frozen
class PreparedCall:
    """A call that passed every check: the entry and its final arguments."""

    entry: FunctionEntry
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    init_args: tuple[Any, ...] = ()
    init_kwargs: Mapping[str, Any] = attrs.field(factory=dict)

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
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.")
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
    if init_spec is not None:
        payload = dict(payload)
        raw_init = payload.pop("constructorArgs", None)
        init_args, init_kwargs = _bind(init_spec, raw_init, context, problems, "constructorArgs.")
        source = payload.get("methodArgs", payload)
    else:
        source = payload
    call_args, call_kwargs = _bind(call_spec, source, context, problems, "")
    if problems:
        raise BadRequest(
            "Invalid arguments.",
            extra={"ok": False, "function_name": name, "details": list[JsonValue](problems)},
        )
    return PreparedCall(entry, call_args, call_kwargs, init_args, init_kwargs)


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
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Bind and validate ``source`` (a payload, ``constructorArgs`` or ``methodArgs``)."""
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
        return (), {}
    return spec.call_arguments(values, context)


# ----- the two tails -------------------------------------------------------------------------


def execute(prepared: PreparedCall, *, expose_errors: bool = False) -> Reply:
    """Run a prepared call from sync code (an async function runs on the background loop)."""
    try:
        result = prepared.start()
        if inspect.isawaitable(result):
            result = _background.run(result)
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors)
    return _success(prepared, result)


async def aexecute(prepared: PreparedCall, *, expose_errors: bool = False) -> Reply:
    """Run a prepared call from async code (a sync function runs in a worker thread)."""
    try:
        if prepared.entry.is_async:
            result = prepared.start()
        else:
            result = await anyio.to_thread.run_sync(prepared.start)
        if inspect.isawaitable(result):
            result = await result
    except (Exception, SystemExit) as exc:
        return _failure(prepared, exc, expose_errors)
    return _success(prepared, result)


def _success(prepared: PreparedCall, result: object) -> Reply:
    entry = prepared.entry
    try:
        value = to_json(result)
    except UnconvertibleResult as exc:
        logger.error("navai: function %s (%s): %s", entry.name, entry.source, exc)
        return _failure_reply(entry.name, str(exc))
    return Reply(
        200, {"ok": True, "function_name": entry.name, "source": entry.source, "result": value}
    )


def _failure(prepared: PreparedCall, exc: BaseException, expose_errors: bool) -> Reply:
    entry = prepared.entry
    if isinstance(exc, FunctionError):
        logger.warning("navai: function %s (%s) failed: %s", entry.name, entry.source, exc)
        return _failure_reply(entry.name, exc.message)
    logger.error("navai: function %s (%s) raised", entry.name, entry.source, exc_info=exc)
    details = f"{type(exc).__name__}: {exc}" if expose_errors else GENERIC_DETAILS
    return _failure_reply(entry.name, details)


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

    def run(self, awaitable: Awaitable[Any]) -> Any:
        loop = self._loop or self._start()
        if threading.current_thread() is self._thread:
            _discard(awaitable)
            raise RuntimeError("execute() was called from navai's background loop; use aexecute()")
        return asyncio.run_coroutine_threadsafe(_await(awaitable), loop).result()

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


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


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
