"""One call's record, built while the call runs and handed out when it ends (CONTRACT §12).

A :class:`Recorder` belongs to a ``Navai`` (its settings, its :class:`PriceTable` with the set
of models already warned about, its call log); it starts one :class:`CallRecord` per call.
The call's owner feeds the record and asks for its fields at the end::

    record = recorder.start(call_id, runtime="realtime", model=..., transport="webrtc")
    record.on_event(event, time.monotonic())         # every server event of the sideband
    record.tool_done(call_id, name, arguments, output, ms, time.monotonic())  # each run
    fields = record.finish()    # {"runtime", "model", "transcript", "tools", "cost_usd"}
    summary = CallSummary(..., **fields)
    await recorder.apublish(attrs.asdict(summary), record)   # log line + spans

Everything here is pure but :meth:`Recorder.publish` (the file and the spans).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._json import JsonValue
from ..calls.sideband import add_usage
from . import tracing
from .cost import PriceTable
from .log import CallLog
from .transcript import Redact, Transcript

if TYPE_CHECKING:
    from .._config import NavaiConfig


class Watched(Protocol):
    """A live call's events as the events route sees them (``records/events.py``)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def stream(self) -> AsyncIterator[bytes]: ...


#: Events a watcher may leave unread before it is disconnected (records/events.py).
WATCH_LIMIT = 256
#: A comment line at least this often keeps proxies from closing an idle stream.
PING_SECONDS = 15.0

REALTIME = "realtime"
LIVE = "live"

LIVE_USAGE_EVENTS = frozenset({"session.usage.updated", "session.closed"})


class CallRecord:
    """The transcript, tool runs and usage of one call."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        runtime: str,
        model: str | None,
        started_at: float,
        started: float,
        backend_model: str | None = None,
    ) -> None:
        self.recorder = recorder
        self.runtime = runtime
        self.model = model
        self.backend_model = backend_model
        self.started_at = started_at  # Unix time
        self.started = started  # time.monotonic() at the same moment
        self.transcript = Transcript(keep_text=recorder.keep_text, redact=recorder.redact)
        # Realtime: response.done usage summed; Live: the backend's response.completed usage.
        self.usage: dict[str, JsonValue] = {}
        self.billed_seconds: float | None = None  # Live: the last usage.seconds
        self.paused_seconds = 0.0
        # Unix start and end of each tool entry, one after the other (floats: no object per
        # entry for the garbage collector, as the transcript's texts).
        self._tool_times = array("d")

    def _at(self, now: float) -> float:
        return now - self.started

    def on_event(self, event: Mapping[str, Any], now: float) -> None:
        """A server event of the call's sideband; ``now``: ``time.monotonic()``."""
        kind = event.get("type")
        if kind == "response.done":
            response = event.get("response")
            usage = response.get("usage") if isinstance(response, Mapping) else None
            if isinstance(usage, Mapping):
                add_usage(self.usage, usage)
        elif kind == "response.event":
            nested = event.get("event")
            if isinstance(nested, Mapping) and nested.get("type") == "response.completed":
                response = nested.get("response")
                usage = response.get("usage") if isinstance(response, Mapping) else None
                if isinstance(usage, Mapping):
                    add_usage(self.usage, usage)
        elif kind in LIVE_USAGE_EVENTS:
            usage = event.get("usage")
            if isinstance(usage, Mapping):
                seconds, paused = usage.get("seconds"), usage.get("paused_seconds")
                if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
                    self.billed_seconds = float(seconds)
                if isinstance(paused, (int, float)) and not isinstance(paused, bool):
                    self.paused_seconds = float(paused)
        else:
            self.transcript.on_event(event, self._at(now))

    def tool_done(
        self, call_id: str, name: str, arguments: str, output: str, ms: float, now: float
    ) -> None:
        """A function call of the model ran (or was refused): its output text (the execute
        route's envelope, as sent to the model) and how long it took; ``now``:
        ``time.monotonic()`` when it ended."""
        if self.transcript.tool_done(call_id, name, arguments, output, ms) is not None:
            self._tool_time(ms, now)

    def tool_ran(
        self,
        call_id: str,
        name: str,
        arguments: str,
        ok: bool,
        error: str | None,
        ms: float,
        now: float,
    ) -> dict[str, JsonValue] | None:
        """:meth:`tool_done` with the outcome already read (a ``ToolRun``); its entry."""
        entry = self.transcript.tool_entry(call_id, name, arguments, ok, error, ms)
        if entry is not None:
            self._tool_time(ms, now)
        return entry

    def _tool_time(self, ms: float, now: float) -> None:
        ended = self.started_at + self._at(now)
        self._tool_times.extend((ended - ms / 1000, ended))

    @property
    def tool_times(self) -> list[tuple[float, float]]:
        """``(start, end)`` Unix times of each entry of the transcript's ``tools``."""
        times = self._tool_times
        return [(times[i], times[i + 1]) for i in range(0, len(times), 2)]

    def cost(self, seconds: float | None = None) -> float | None:
        prices = self.recorder.prices
        if self.runtime == LIVE:
            billed = self.billed_seconds if self.billed_seconds is not None else seconds
            if billed is None:
                return None
            return prices.live_cost(
                self.model, billed, self.paused_seconds, self.backend_model, self.usage
            )
        return prices.realtime_cost(self.model, self.usage)

    def finish(self, seconds: float | None = None) -> dict[str, Any]:
        """The record's fields of the call's ``CallSummary``. ``seconds``: the call's length,
        used for a Live call's cost when OpenAI reported no billed seconds."""
        return {
            "runtime": self.runtime,
            "model": self.model,
            "transcript": self.transcript.finish(),
            "tools": self.transcript.tools,
            "cost_usd": self.cost(seconds),
        }


class Recorder:
    """Starts call records and publishes ended ones (log line, spans)."""

    def __init__(
        self,
        *,
        keep_text: bool = True,
        redact: Redact | None = None,
        prices: PriceTable | None = None,
        log_path: str | None = None,
        tracing_on: bool = True,
    ) -> None:
        self.keep_text = keep_text
        self.redact = redact
        self.prices = prices if prices is not None else PriceTable()
        self.log = CallLog(log_path) if log_path else None
        self.tracing_on = tracing_on
        # The live calls' events (records/events.py), by call id: what the events route
        # streams. Set and removed on each call's loop; looked up from any thread.
        self.calls: dict[str, Watched] = {}
        self.watch_limit = WATCH_LIMIT
        self.ping_seconds = PING_SECONDS

    @classmethod
    def from_config(cls, config: NavaiConfig) -> Recorder:
        """``NAVAI_CALL_TRANSCRIPTS``, ``redact``, ``NAVAI_PRICES_FILE``, ``NAVAI_CALL_LOG``.
        A prices file that cannot be read leaves the shipped table (``problems()`` says why)."""
        try:
            prices = PriceTable(file=config.prices_file)
        except ValueError:
            prices = PriceTable()
        return cls(
            keep_text=config.call_transcripts,
            redact=config.redact,
            prices=prices,
            log_path=config.call_log,
        )

    def start(
        self,
        *,
        runtime: str = REALTIME,
        model: str | None = None,
        backend_model: str | None = None,
        started_at: float | None = None,
        started: float | None = None,
    ) -> CallRecord:
        return CallRecord(
            self,
            runtime=runtime,
            model=model,
            backend_model=backend_model,
            started_at=time.time() if started_at is None else started_at,
            started=time.monotonic() if started is None else started,
        )

    def publish(self, summary: Mapping[str, Any], record: CallRecord | None = None) -> None:
        """The ended call's log line and spans. ``summary``: the ``CallSummary`` fields."""
        if self.log is not None:
            self.log.append(summary)
        if self.tracing_on:
            tracing.trace_call(summary, record.tool_times if record is not None else ())

    async def apublish(self, summary: Mapping[str, Any], record: CallRecord | None = None) -> None:
        """:meth:`publish` from async code: the file is written in a worker thread."""
        if self.log is not None:
            await self.log.aappend(summary)
        if self.tracing_on:
            tracing.trace_call(summary, record.tool_times if record is not None else ())
