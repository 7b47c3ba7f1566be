"""The tool runner of a call: the runtime's :class:`ToolProtocol` decides, the functions run
through the very dispatch of the execute route.

:class:`ToolRunner` feeds each server event to the protocol and carries out its actions: a
function call runs in a task of its own (at most ``MAX_PARALLEL_FUNCTIONS`` at a time, at
most ``MAX_PENDING_FUNCTIONS`` running or waiting: past that it gets an error output at
once), an event goes out through ``send``. :class:`FunctionDispatch` is how one function call
runs: ``prepare_call`` + the server's executor (validation, per-function authorisation hook
with a context naming the call, time limit, error envelope).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from .._errors import NavaiError
from .._http import Reply, RequestContext
from .._json import JsonValue, dumps
from ..functions.dispatch import PreparedCall, prepare_call
from ..functions.envelope import function_error
from ..functions.registry import FunctionRegistry
from .events import CallEvents, LiveCall, ToolRun
from .runtime import ToolProtocol
from .sideband import RunFunction, SendEvent, execute_body

logger = logging.getLogger("navai")

MAX_PARALLEL_FUNCTIONS = 8
# Function calls of one call running or waiting for a slot; past it one gets an error output.
MAX_PENDING_FUNCTIONS = 64

TOO_MANY_FUNCTIONS = "Too many function calls at once."
TOO_MANY_DETAILS = "This call has {n} function calls pending; try again when they are done."

UNEXPECTED_ERROR = "Function execution failed."
UNEXPECTED_DETAILS = "The function call could not be run."

#: Runs a prepared function call the way the execute route does (options, threads, time limit).
Executor = Callable[[PreparedCall], Awaitable[Reply]]


class FunctionDispatch:
    """How a call's function call runs: the execute route's answer to it, with a
    :class:`RequestContext` naming the call (method ``CALL``, path ``<calls path>/<call id>``)."""

    def __init__(
        self,
        registry: Callable[[], Awaitable[FunctionRegistry]],
        execute: Executor,
        calls_path: str,
    ) -> None:
        self._registry = registry
        self._execute = execute
        self._calls_path = calls_path

    async def __call__(self, call: LiveCall, action: RunFunction) -> Reply:
        try:
            registry = await self._registry()
            body = execute_body(action.name, action.arguments)
            prepared = prepare_call(registry, body, self.context(call, action))
            return await self._execute(prepared)
        except NavaiError as exc:
            return exc.to_reply()
        except Exception:
            logger.exception("call %s: function call %s failed", call.call_id, action.name)
            return Reply(500, function_error(action.name, UNEXPECTED_ERROR, UNEXPECTED_DETAILS))

    def context(self, call: LiveCall, action: RunFunction) -> RequestContext:
        """What the authorisation hook and a ``context`` parameter see: the call, by name."""
        return RequestContext(
            method="CALL",
            path=f"{self._calls_path}/{call.call_id}",
            headers={
                "x-navai-call-id": call.call_id,
                "x-navai-function-call-id": action.call_id,
                "x-navai-transport": call.transport,
            },
            client=call.key,
            raw=call,
        )


class FunctionRunner(Protocol):
    """Runs one function call of the call: the execute route's answer to it."""

    async def run_function(self, action: RunFunction) -> Reply: ...


class EventSender(Protocol):
    """Sends a client event on the call's control connection."""

    async def send(self, event: Mapping[str, Any]) -> None: ...


class ToolRunner:
    """Runs the function calls of one call (touched only on the call's loop)."""

    __slots__ = (
        "_events",
        "_runner",
        "_sender",
        "call_id",
        "functions",
        "protocol",
        "refused",
        "slots",
    )

    def __init__(
        self,
        call_id: str,
        protocol: ToolProtocol,
        *,
        runner: FunctionRunner,
        sender: EventSender,
        events: CallEvents,
    ) -> None:
        self.call_id = call_id
        self.protocol = protocol
        self._runner = runner
        self._sender = sender
        self._events = events
        self.functions: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_PARALLEL_FUNCTIONS)
        self.refused = 0  # function calls answered at once with TOO_MANY_FUNCTIONS

    @property
    def ran(self) -> int:
        """Function calls run (started by the protocol and not refused at once)."""
        return self.protocol.function_calls - self.refused

    async def feed(self, event: object) -> None:
        """Carry out what the protocol makes of a server event."""
        for action in self.protocol.feed(event):
            if isinstance(action, RunFunction):
                if len(self.functions) >= MAX_PENDING_FUNCTIONS:
                    await self._refuse(action)
                    continue
                task = asyncio.ensure_future(self._run_function(action))
                self.functions.add(task)
                task.add_done_callback(self.functions.discard)
            elif isinstance(action, SendEvent):
                await self._sender.send(action.event)

    async def stop(self) -> None:
        """Cancel the function calls still running, and wait for them."""
        for task in list(self.functions):
            task.cancel()
        await asyncio.gather(*self.functions, return_exceptions=True)

    async def _run_function(self, action: RunFunction) -> None:
        async with self.slots:
            started = time.perf_counter()
            reply = await self._runner.run_function(action)
            ms = (time.perf_counter() - started) * 1000
        self._events.tool_ran(self.call_id, _tool_run(action, reply.body, ms))
        await self._output_ready(action, reply.content.decode())

    async def _refuse(self, action: RunFunction) -> None:
        """Too many function calls pending: an error output at once, no task."""
        self.refused += 1
        details = TOO_MANY_DETAILS.format(n=len(self.functions))
        body = function_error(action.name, TOO_MANY_FUNCTIONS, details)
        self._events.tool_ran(self.call_id, _tool_run(action, body, 0.0))
        await self._output_ready(action, dumps(body).decode())

    async def _output_ready(self, action: RunFunction, output: str) -> None:
        for step in self.protocol.output_ready(action.call_id, output):
            if isinstance(step, SendEvent):
                await self._sender.send(step.event)


def _tool_run(action: RunFunction, body: JsonValue, ms: float) -> ToolRun:
    ok = isinstance(body, dict) and body.get("ok") is True
    error = None
    if not ok and isinstance(body, dict):
        text = body.get("details") or body.get("error")
        error = text if isinstance(text, str) else None
    return ToolRun(action.call_id, action.name, action.arguments, ok, error, ms)
