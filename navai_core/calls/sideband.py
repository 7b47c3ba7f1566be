"""The tool loop of a call's control connection (the "sideband"), as a pure state machine.

Feed it each server event; it answers with actions: run a function (``RunFunction``) or
send an event (``SendEvent``). Tell it when a function's output is ready; it answers with
the events to send. It knows nothing of sockets, transports (WebRTC, SIP, ...) or how a
function runs, so every rule of CONTRACT.md section 8 about *which* calls run and *when* a
``response.create`` goes out is here, unit-tested without I/O:

- a function call runs exactly once per call id, whether it is announced by
  ``response.function_call_arguments.done``, by a ``response.done`` output item, or both;
- one ``response.create`` follows a ``completed`` response that held function calls, once
  ``response.done`` has arrived *and* every one of its calls has its output;
- a ``cancelled``, ``incomplete`` or ``failed`` response: calls not started are not run,
  outputs of started calls are still sent, and no ``response.create`` follows;
- token usage is summed from ``response.done``; events it does not use, and garbage, are
  ignored;
- what a call keeps is bounded whatever the upstream sends: at most ``MAX_OPEN_RESPONSES``
  responses without their ``response.done`` (past it the oldest is closed: its calls' outputs
  are still sent, no ``response.create`` follows), and the last ``SEEN_MEMORY`` call ids.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

import attrs

from .._errors import BadRequest
from .._json import JsonObject, JsonValue, loads_text
from ..functions.envelope import function_error

COMPLETED = "completed"
# Responses remembered after they closed, so a repeated response.done is recognised.
CLOSED_MEMORY = 256
# Responses open at once (no response.done yet); past it the oldest is closed. The same
# bound as the GPT-Live tool loop's open delegations.
MAX_OPEN_RESPONSES = 64
# Function call ids remembered so that none runs twice.
SEEN_MEMORY = 4096


@attrs.frozen
class RunFunction:
    """Run function ``name`` with the model's JSON ``arguments`` text, for ``call_id``."""

    call_id: str
    name: str
    arguments: str = attrs.field(repr=False)
    response_id: str = ""


@attrs.frozen
class SendEvent:
    """Send this client event on the call's control connection."""

    event: JsonObject


Action: TypeAlias = "RunFunction | SendEvent"

RESPONSE_CREATE: Mapping[str, JsonValue] = MappingProxyType({"type": "response.create"})


@attrs.define
class _Response:
    started: set[str] = attrs.field(factory=set)
    pending: set[str] = attrs.field(factory=set)
    done: bool = False
    status: str = ""


class ToolLoop:
    """The decisions of one call's sideband (one instance per call; not thread-safe)."""

    def __init__(self) -> None:
        # Call ids run or skipped: never run again (the last SEEN_MEMORY, oldest first).
        self._seen: dict[str, None] = {}
        self._responses: dict[str, _Response] = {}  # open responses by id
        self._running: dict[str, str] = {}  # call id -> response id, while it runs
        self._closed: collections.deque[str] = collections.deque(maxlen=CLOSED_MEMORY)
        self.usage: dict[str, JsonValue] = {}
        self.function_calls = 0
        self.responses_created = 0

    @property
    def running(self) -> int:
        """Function calls started whose output has not been handed back yet."""
        return len(self._running)

    def feed(self, event: object) -> list[Action]:
        """The actions a server event calls for (none for events navai does not use)."""
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "response.function_call_arguments.done":
            return self._arguments_done(event)
        if kind == "response.done":
            return self._response_done(event.get("response"))
        return []

    def output_ready(self, call_id: str, output: str) -> list[Action]:
        """A started function finished with ``output`` (the JSON text of its answer)."""
        actions: list[Action] = [
            SendEvent(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": call_id, "output": output},
                }
            )
        ]
        response_id = self._running.pop(call_id, None)
        if response_id is not None and (state := self._responses.get(response_id)) is not None:
            state.pending.discard(call_id)
            actions += self._settle(response_id, state)
        return actions

    # ----- events ----------------------------------------------------------------------------

    def _arguments_done(self, event: Mapping[str, Any]) -> list[Action]:
        call_id, name = event.get("call_id"), event.get("name")
        if not (isinstance(call_id, str) and call_id and isinstance(name, str)):
            return []
        response_id = _text(event.get("response_id"))
        if call_id in self._seen:
            return []
        if response_id in self._closed:
            self._remember(call_id)  # its response already ended: too late to start
            return []
        state = self._open(response_id)
        if state.done and state.status != COMPLETED:
            self._remember(call_id)
            return []
        return [self._start(response_id, state, call_id, name, event.get("arguments"))]

    def _response_done(self, response: object) -> list[Action]:
        if not isinstance(response, dict):
            return []
        response_id = _text(response.get("id"))
        if response_id in self._closed:
            return []  # a repeated response.done
        state = self._open(response_id)
        if state.done:
            return []
        usage = response.get("usage")
        if isinstance(usage, dict):
            add_usage(self.usage, usage)
        state.done = True
        state.status = _text(response.get("status"))
        actions: list[Action] = []
        output = response.get("output")
        for item in output if isinstance(output, list) else ():
            if not (isinstance(item, dict) and item.get("type") == "function_call"):
                continue
            call_id, name = item.get("call_id"), item.get("name")
            if not (isinstance(call_id, str) and call_id and isinstance(name, str)):
                continue
            if call_id in self._seen:
                continue
            if state.status == COMPLETED:
                actions.append(
                    self._start(response_id, state, call_id, name, item.get("arguments"))
                )
            else:
                self._remember(call_id)  # interrupted before it started: never run
        return actions + self._settle(response_id, state)

    def _start(
        self, response_id: str, state: _Response, call_id: str, name: str, arguments: object
    ) -> RunFunction:
        self._remember(call_id)
        state.started.add(call_id)
        state.pending.add(call_id)
        self._running[call_id] = response_id
        self.function_calls += 1
        text = arguments if isinstance(arguments, str) else "{}"
        return RunFunction(call_id, name, text, response_id)

    def _open(self, response_id: str) -> _Response:
        """The state of response ``response_id``, opened if new (closing the oldest open one
        past ``MAX_OPEN_RESPONSES``)."""
        state = self._responses.get(response_id)
        if state is None:
            if len(self._responses) >= MAX_OPEN_RESPONSES:
                oldest = next(iter(self._responses))
                del self._responses[oldest]
                self._closed.append(oldest)
            state = self._responses[response_id] = _Response()
        return state

    def _remember(self, call_id: str) -> None:
        self._seen[call_id] = None
        if len(self._seen) > SEEN_MEMORY:
            del self._seen[next(iter(self._seen))]

    def _settle(self, response_id: str, state: _Response) -> list[Action]:
        """Close a response that has ended and has every output; maybe ask for the next."""
        if not state.done or state.pending:
            return []
        del self._responses[response_id]
        self._closed.append(response_id)
        if state.status == COMPLETED and state.started:
            self.responses_created += 1
            return [SendEvent(dict(RESPONSE_CREATE))]
        return []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def add_usage(total: dict[str, JsonValue], usage: Mapping[str, Any]) -> None:
    """Add every integer of ``usage`` (nested objects too) into ``total``."""
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            below = total.get(key)
            total[key] = (below if isinstance(below, int) else 0) + value
        elif isinstance(value, dict):
            below = total.get(key)
            nested: dict[str, JsonValue] = below if isinstance(below, dict) else {}
            add_usage(nested, value)
            if nested:
                total[key] = nested


INVALID_ARGUMENTS = "Invalid arguments."


def execute_body(name: str, arguments: str) -> JsonObject:
    """The execute route's body for a model's function call: ``{"function_name": name,
    "payload": <the JSON arguments>}``; arguments that are not JSON (NaN included) are a 400
    in the execute route's envelope (the strict rules of a request body: no ``1e999``, no
    lone surrogate)."""
    try:
        payload = loads_text(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):
        raise BadRequest(
            INVALID_ARGUMENTS,
            extra=function_error(name, details="The function call arguments are not valid JSON."),
        ) from None
    return {"function_name": name, "payload": payload}
