"""The tool loop of a GPT-Live session's control connection, as a pure state machine
(CONTRACT.md section 11). The Realtime twin is :class:`navai_core.calls.sideband.ToolLoop`;
this one speaks the nested protocol of Live's Responses delegation:

- a function call arrives as ``{"type": "response.event", "delegation_id", "event": {"type":
  "response.output_item.done", "item": {"type": "function_call", "call_id", "name",
  "arguments"}}}`` and runs exactly once per call id (:class:`RunFunction`);
- its output goes back as ``{"type": "response.item.create", "item": {"type":
  "function_call_output", "call_id", "output"}}``;
- exactly one ``{"type": "response.create"}`` follows a nested ``response.completed`` whose
  response held calls, once it has arrived *and* every one of those calls has its output —
  never before (OpenAI refuses a create while outputs are missing);
- a nested ``response.failed`` or ``response.incomplete``: calls not started are not run
  (until a new ``response.created`` on that delegation), outputs of calls that ran are still
  sent, and no ``response.create`` follows;
- ``session.usage.updated`` and ``session.closed`` carry the billed seconds (cumulative: the
  last one counts); ``session.closed`` ends the call (:class:`EndCall` with OpenAI's reason);
- the backend's token usage is summed from the nested ``response.completed`` events.

Nested Responses events carry no response id on their items, so a response in progress is
keyed by its ``delegation_id``: a delegation runs one backend response at a time, the next
one only after navai's ``response.create``.

Bounds: at most ``MAX_OPEN_DELEGATIONS`` responses in progress and ``MAX_CALLS_PER_RESPONSE``
calls in one; a call past either gets an error output at once instead of running, so the
backend is never left waiting for it. Ended responses are remembered (``CLOSED_MEMORY``) so a
repeated end is ignored.

How a call manager drives it (one instance per call, one thread or event loop):

- for every message of the control connection, ``for action in loop.feed(event)``:
  :class:`SendEvent` → ``send(action.event)``; :class:`RunFunction` → run
  ``(action.call_id, action.name, action.arguments)`` through the execute route's dispatch,
  then ``loop.output_ready(action.call_id, output_text)`` and send what it returns;
  :class:`EndCall` → ``end(action.reason)``;
- when the connection closes without ``session.closed``, the call has ended all the same;
- for the summary: ``loop.usage`` (backend tokens), ``loop.seconds`` (billed seconds, or
  ``None``), ``loop.close_reason``, ``loop.function_calls``, ``loop.responses_created``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

import attrs

from .._json import JsonObject, JsonValue, dumps
from .sideband import RESPONSE_CREATE, RunFunction, SendEvent, add_usage

COMPLETED = "completed"
# Nested terminal events -> the status they end a response with.
_ENDINGS = MappingProxyType(
    {
        "response.completed": COMPLETED,
        "response.failed": "failed",
        "response.incomplete": "incomplete",
    }
)
CLOSED_MEMORY = 256
MAX_OPEN_DELEGATIONS = 64
MAX_CALLS_PER_RESPONSE = 64
TOO_MANY_CALLS = "Too many function calls."
TOO_MANY_CALLS_DETAILS = (
    "A response may hold at most {calls} function calls, and at most {responses} responses "
    "may be in progress at once."
)


@attrs.frozen
class EndCall:
    """The session closed (``session.closed``): end the call with OpenAI's ``reason``
    (``close_requested``, ``expired``, ``content``, ``remote_hangup``, ``connection_lost``)."""

    reason: str


Action: TypeAlias = "RunFunction | SendEvent | EndCall"


def output_event(call_id: str, output: str) -> JsonObject:
    """The client event that hands a function's output to the Live session's backend."""
    return {
        "type": "response.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


@attrs.define
class _Response:
    """The backend response in progress on one delegation."""

    started: set[str] = attrs.field(factory=set)
    pending: set[str] = attrs.field(factory=set)
    response_id: str = ""
    done: bool = False
    status: str = ""


class LiveToolLoop:
    """The decisions of one Live session's control connection (not thread-safe)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()  # call ids run or skipped: never run again
        self._open: dict[str, _Response] = {}  # by delegation id
        self._running: dict[str, str] = {}  # call id -> delegation id, while it runs
        self._closed: collections.deque[str] = collections.deque(maxlen=CLOSED_MEMORY)
        # Delegations whose last response failed or stopped: no new call starts there
        # until a new response is created on it.
        self._halted: collections.deque[str] = collections.deque(maxlen=CLOSED_MEMORY)
        self.usage: dict[str, JsonValue] = {}
        self.function_calls = 0
        self.responses_created = 0
        self.seconds: float | None = None
        self.close_reason: str | None = None
        self.closed = False

    @property
    def running(self) -> int:
        """Function calls started whose output has not been handed back yet."""
        return len(self._running)

    @property
    def open_responses(self) -> int:
        return len(self._open)

    def feed(self, event: object) -> list[Action]:
        """The actions a server event calls for (none for events navai does not use)."""
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "response.event":
            nested = event.get("event")
            if isinstance(nested, dict):
                return self._nested(_text(event.get("delegation_id")), nested)
            return []
        if kind == "session.usage.updated":
            self._billed(event.get("usage"))
            return []
        if kind == "session.closed":
            self._billed(event.get("usage"))
            if self.closed:
                return []
            self.closed = True
            self.close_reason = _text(event.get("reason")) or None
            return [EndCall(self.close_reason or "closed")]
        return []

    def output_ready(self, call_id: str, output: str) -> list[Action]:
        """A started function finished with ``output`` (the JSON text of its answer)."""
        actions: list[Action] = [SendEvent(output_event(call_id, output))]
        delegation = self._running.pop(call_id, None)
        if delegation is not None and (state := self._open.get(delegation)) is not None:
            state.pending.discard(call_id)
            actions += self._settle(delegation, state)
        return actions

    # ----- nested Responses events ---------------------------------------------------------------

    def _nested(self, delegation: str, event: Mapping[str, Any]) -> list[Action]:
        kind = event.get("type")
        if kind == "response.output_item.done":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                return self._call(delegation, item)
            return []
        if kind == "response.created":
            if delegation in self._halted:
                self._halted.remove(delegation)
            return []
        if isinstance(kind, str) and (status := _ENDINGS.get(kind)) is not None:
            response = event.get("response")
            return self._ended(delegation, response if isinstance(response, dict) else {}, status)
        return []

    def _call(self, delegation: str, item: Mapping[str, Any]) -> list[Action]:
        call_id, name = item.get("call_id"), item.get("name")
        if not (isinstance(call_id, str) and call_id and isinstance(name, str)):
            return []
        if call_id in self._seen or self.closed:
            return []
        self._seen.add(call_id)
        if delegation in self._halted:
            return []  # its response ended before the call could start: never run
        state = self._open.get(delegation)
        if state is None:
            if len(self._open) >= MAX_OPEN_DELEGATIONS:
                return [self._refuse(call_id, name)]
            state = self._open[delegation] = _Response()
        elif state.done and state.status != COMPLETED:
            return []
        if len(state.started) >= MAX_CALLS_PER_RESPONSE:
            return [self._refuse(call_id, name)]
        state.started.add(call_id)
        state.pending.add(call_id)
        self._running[call_id] = delegation
        self.function_calls += 1
        arguments = item.get("arguments")
        text = arguments if isinstance(arguments, str) else "{}"
        return [RunFunction(call_id, name, text, delegation)]

    def _ended(self, delegation: str, response: Mapping[str, Any], status: str) -> list[Action]:
        response_id = _text(response.get("id"))
        if response_id and response_id in self._closed:
            return []  # a repeated end
        state = self._open.get(delegation)
        if state is not None and state.done:
            return []  # a repeated end without an id
        if status == COMPLETED and isinstance(usage := response.get("usage"), dict):
            add_usage(self.usage, usage)
        if status != COMPLETED and delegation not in self._halted:
            self._halted.append(delegation)
        elif status == COMPLETED and delegation in self._halted:
            self._halted.remove(delegation)  # a later response on it ran to the end
        if state is None:
            if response_id:
                self._closed.append(response_id)
            return []
        state.done = True
        state.status = status
        state.response_id = response_id
        return self._settle(delegation, state)

    def _settle(self, delegation: str, state: _Response) -> list[Action]:
        """Close a response that has ended and has every output; maybe ask for the next."""
        if not state.done or state.pending:
            return []
        del self._open[delegation]
        if state.response_id:
            self._closed.append(state.response_id)
        if state.status == COMPLETED and state.started and not self.closed:
            self.responses_created += 1
            return [SendEvent(dict(RESPONSE_CREATE))]
        return []

    def _refuse(self, call_id: str, name: str) -> SendEvent:
        details = TOO_MANY_CALLS_DETAILS.format(
            calls=MAX_CALLS_PER_RESPONSE, responses=MAX_OPEN_DELEGATIONS
        )
        body = {"ok": False, "function_name": name, "error": TOO_MANY_CALLS, "details": details}
        return SendEvent(output_event(call_id, dumps(body).decode()))

    def _billed(self, usage: object) -> None:
        seconds = usage.get("seconds") if isinstance(usage, dict) else None
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
            self.seconds = float(seconds)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
