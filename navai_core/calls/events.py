"""What a call is and what happens on it, as the call manager sees it.

:class:`LiveCall` (a call held now) and :class:`CallSummary` (how it ended) are public.
:class:`CallEvents` is what the manager tells as a call goes: it started, a server event
arrived, a tool ran (:class:`ToolRun`: name, arguments, ok, the error the model got, ms), it
ended, or it was handed over to another worker (which tells its end). :class:`CallLog`
writes those as log lines; a call record (transcript, tools, cost) is one more
:class:`CallEvents` (``records/events.py``), fed the same way: at the end it adds its fields
to the summary (:meth:`CallEvents.finish`) before ``ended`` and the ``on_call_end`` hook see
it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import attrs

from .._json import JsonValue

logger = logging.getLogger("navai")

# End reasons.
ENDED = "ended"  # the caller hung up: the control connection closed normally, or is refused
HANGUP = "hangup"  # hung up through navai (the hangup route or CallManager.hangup)
MAX_SECONDS = "max_seconds"
BUDGET = "budget"
LOST = "lost"  # the control connection could not be re-established (navai hangs up)
REFUSED = "refused"  # the control connection was refused: navai cannot hold the call
SHUTDOWN = "shutdown"  # the server stopped (navai hangs the call up)
# The reasons for which navai hangs the call up upstream itself.
NAVAI_ENDS = frozenset((HANGUP, MAX_SECONDS, BUDGET, LOST, REFUSED, SHUTDOWN))


@attrs.frozen
class LiveCall:
    """A call this process holds now."""

    call_id: str
    key: str
    started_at: float
    transport: str
    function_calls: int
    model: str | None = None  # the model navai asked for, when it knows it


@attrs.frozen
class CallSummary:
    """What happened on one call, handed to ``on_call_end`` and logged when it ends."""

    call_id: str
    key: str
    started_at: float  # Unix time
    ended_at: float
    seconds: float
    end_reason: str
    function_calls: int  # run (not counting those refused at once)
    usage: Mapping[str, JsonValue] = attrs.field(factory=dict)
    transport: str = "webrtc"
    runtime: str = "realtime"
    # GPT-Live: the reason OpenAI closed the session (session.closed) and the seconds it
    # bills; None on Realtime (billed by token: ``usage``) or when OpenAI did not say.
    close_reason: str | None = None
    billed_seconds: float | None = None
    # Times navai put its session back after a browser changed it (the session guard).
    session_restored: int = 0
    refused: int = 0  # function calls refused at once (too many pending)
    # The call record (CONTRACT section 12), filled in by the record's CallEvents.
    model: str | None = None
    transcript: list[dict[str, JsonValue]] = attrs.field(factory=list)
    tools: list[dict[str, JsonValue]] = attrs.field(factory=list)
    cost_usd: float | None = None
    # How many worker processes held the call in turn (section 13: a takeover adds one).
    workers: int = 1


@attrs.frozen
class ToolRun:
    """One function call of a call, once its output is ready."""

    call_id: str  # the model's function call id
    name: str
    arguments: str = attrs.field(repr=False)  # the model's JSON text
    ok: bool
    error: str | None  # what the model got instead of a result (the envelope's details)
    ms: float  # from its start (a free slot) to its output


class CallEvents(Protocol):
    """What happens on one call, in order: ``started`` once, then ``event`` for each server
    event (parsed JSON) and ``tool_ran`` for each function call, then ``ended`` once, or
    ``handed_over`` once instead. Each runs on the call's event loop and must not block."""

    def started(self, call: LiveCall) -> None: ...

    def event(self, call_id: str, event: object) -> None: ...

    def tool_ran(self, call_id: str, run: ToolRun) -> None: ...

    def finish(self, summary: CallSummary) -> CallSummary:
        """The summary with what these events add to it (the call record's fields)."""
        ...

    def ended(self, summary: CallSummary) -> Awaitable[Any] | None:
        """The call ended (``summary`` as :meth:`finish` made it); an awaitable it returns
        (writing the call log) is awaited before the ``on_call_end`` hook runs."""
        ...

    def handed_over(self) -> None:
        """Another worker goes on with the call (and tells its end): no summary, no record
        here; what these events hold for the call is let go."""
        ...


class CallLog:
    """Log lines (logger ``navai``, INFO) when a call starts, when each tool runs and when the
    call ends."""

    def started(self, call: LiveCall) -> None:
        logger.info("call %s started (%s), key %s", call.call_id, call.transport, call.key)

    def event(self, call_id: str, event: object) -> None:
        pass

    def tool_ran(self, call_id: str, run: ToolRun) -> None:
        logger.info(
            "call %s: function %s %s in %.1f ms",
            call_id,
            run.name,
            "ok" if run.ok else "failed",
            run.ms,
        )

    def finish(self, summary: CallSummary) -> CallSummary:
        return summary

    def handed_over(self) -> None:
        pass

    def ended(self, summary: CallSummary) -> None:
        logger.info(
            "call %s ended (%s) after %.1f s: %d function call(s), %s tokens, key %s",
            summary.call_id,
            summary.end_reason,
            summary.seconds,
            summary.function_calls,
            summary.usage.get("total_tokens", 0),
            summary.key,
        )
