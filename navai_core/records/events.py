"""A call's record as it goes: the :class:`CallEvents` that feeds it, and its watchers.

:class:`RecordEvents` is what the call manager tells of one call (``calls/events.py``): it
writes the call's log lines (:class:`CallLog`), feeds the call's :class:`CallRecord`, adds the
record's fields to the summary at the end, publishes it (``NAVAI_CALL_LOG`` line, spans) and
tells the call's watchers (CONTRACT section 14) as things happen:

- ``transcript`` ``{"role", "text", "at"}`` for each turn the record keeps;
- ``tool`` ``{"call_id", "name", "ok", "error", "ms"}`` when a tool run ends;
- ``cost`` ``{"cost_usd", "usage"}`` after each model response;
- ``end``: the whole record, after which the stream closes.

A call handed over to another worker (which writes its one record) closes its watchers'
streams with the comment ``: handed over`` and no ``end``.

A watcher is a bounded queue on the call's event loop. The call never waits for a watcher:
an event is put without waiting, and a watcher that has ``Recorder.watch_limit`` (256)
events not yet read is disconnected (its stream ends with the comment ``: too slow``), so
a reader that never reads costs the call nothing but that queue. Everything here runs on
the call's loop but the look-up of a live call's events in ``Recorder.calls`` (the events route).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING

import attrs

from .._json import encode_text
from ..calls.events import CallLog, CallSummary, LiveCall, ToolRun
from .record import LIVE_USAGE_EVENTS, CallRecord

if TYPE_CHECKING:
    from .record import Recorder

logger = logging.getLogger("navai")

PING = b": ping\n\n"
TOO_SLOW = b": too slow\n\n"
HANDED_OVER = b": handed over\n\n"
USAGE_EVENTS = frozenset({"response.done", *LIVE_USAGE_EVENTS})
_LOG = CallLog()
_CLOSE = None  # the queue item that ends a stream


def sse(kind: str, data: object) -> bytes:
    """One server-sent event: ``event: <kind>`` and its data as one JSON line."""
    return sse_text(kind, encode_text(data))


def sse_text(kind: str, data: str) -> bytes:
    """:func:`sse` of data already JSON text."""
    return b"event: " + kind.encode() + b"\ndata: " + data.encode() + b"\n\n"


class _Watcher:
    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()


class RecordEvents:
    """The events of one call: log lines, the record, its watchers (on the call's loop)."""

    __slots__ = ("call_id", "final", "loop", "record", "recorder", "watchers")

    def __init__(
        self,
        recorder: Recorder,
        call_id: str,
        record: CallRecord,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.recorder = recorder
        self.loop = loop  # the call's
        self.call_id = call_id
        self.record = record
        self.watchers: list[_Watcher] | None = None  # none until someone watches
        # What a watcher gets last: the ``end`` event once the call ended (HANDED_OVER when
        # another worker goes on with it); None while the call is held here.
        self.final: bytes | None = None

    # ----- CallEvents ---------------------------------------------------------------------

    def started(self, call: LiveCall) -> None:
        _LOG.started(call)

    def event(self, call_id: str, event: object) -> None:
        if not isinstance(event, Mapping):
            return
        transcript = self.record.transcript
        before = transcript.turn_count
        self.record.on_event(event, time.monotonic())
        if not self.watchers:
            return
        for turn in transcript.turn_texts(before):
            self._tell(sse_text("transcript", turn))
        if event.get("type") in USAGE_EVENTS:
            cost = {"cost_usd": self.record.cost(), "usage": self.record.usage}
            self._tell(sse("cost", cost))

    def tool_ran(self, call_id: str, run: ToolRun) -> None:
        _LOG.tool_ran(call_id, run)
        record = self.record
        record.tool_ran(
            run.call_id, run.name, run.arguments, run.ok, run.error, run.ms, time.monotonic()
        )
        if self.watchers:
            tool = {
                "call_id": run.call_id,
                "name": run.name,
                "ok": run.ok,
                "error": run.error,
                "ms": round(max(run.ms, 0.0), 1),
            }
            self._tell(sse("tool", tool))

    def finish(self, summary: CallSummary) -> CallSummary:
        return attrs.evolve(summary, **self.record.finish(seconds=summary.seconds))

    def handed_over(self) -> None:
        self._close(HANDED_OVER)

    def ended(self, summary: CallSummary) -> Awaitable[None]:
        _LOG.ended(summary)
        return self._publish(summary)

    async def _publish(self, summary: CallSummary) -> None:
        fields = attrs.asdict(summary)
        try:
            await self.recorder.apublish(fields, self.record)
        except Exception:
            logger.exception("call %s: its record could not be published", self.call_id)
        finally:
            self._close(sse("end", fields))

    def _close(self, final: bytes) -> None:
        """The call is no longer held here: out of ``Recorder.calls``, each stream told
        ``final`` and closed."""
        if self.recorder.calls.get(self.call_id) is self:  # never another call's entry
            del self.recorder.calls[self.call_id]
        self.final = final
        for watcher in self.watchers or ():
            watcher.queue.put_nowait(final)
            watcher.queue.put_nowait(_CLOSE)
        self.watchers = None

    # ----- watchers -----------------------------------------------------------------------

    def _tell(self, chunk: bytes) -> None:
        for watcher in list(self.watchers or ()):
            queue = watcher.queue
            if queue.qsize() < self.recorder.watch_limit:
                queue.put_nowait(chunk)
                continue
            # Fallen behind: disconnected, and what it had not read is let go.
            logger.info("call %s: a watcher of its events fell behind; disconnected", self.call_id)
            self._drop(watcher)
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(TOO_SLOW)
            queue.put_nowait(_CLOSE)

    def _drop(self, watcher: _Watcher) -> None:
        if self.watchers is not None and watcher in self.watchers:
            self.watchers.remove(watcher)

    async def stream(self) -> AsyncIterator[bytes]:
        """One watcher's events stream (runs on the call's loop): a first comment, then the
        call's events as they happen, ``: ping`` when idle, ``end`` and the close."""
        watcher = _Watcher()
        if self.final is None:
            if self.watchers is None:
                self.watchers = []
            self.watchers.append(watcher)
        else:
            watcher.queue.put_nowait(self.final)
            watcher.queue.put_nowait(_CLOSE)
        ping = self.recorder.ping_seconds
        try:
            yield b": navai call " + self.call_id.encode() + b"\n\n"
            while True:
                try:
                    chunk = await asyncio.wait_for(watcher.queue.get(), ping)
                except TimeoutError:
                    yield PING
                    continue
                if chunk is _CLOSE:
                    return
                yield chunk
        finally:
            self._drop(watcher)


def record_events(
    recorder: Recorder,
    call: LiveCall,
    *,
    runtime: str,
    model: str | None,
    backend_model: str | None = None,
) -> RecordEvents:
    """The :class:`RecordEvents` of a call starting now (the call manager's events factory,
    called on the loop that holds the call)."""
    now, monotonic = time.time(), time.monotonic()
    record = recorder.start(
        runtime=runtime,
        model=model,
        backend_model=backend_model,
        started_at=call.started_at,
        started=monotonic - max(now - call.started_at, 0.0),
    )
    events = RecordEvents(recorder, call.call_id, record, asyncio.get_running_loop())
    recorder.calls[call.call_id] = events
    return events
