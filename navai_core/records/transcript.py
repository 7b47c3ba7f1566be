"""What was said and which tools ran on one call: a pure accumulator fed the sideband's events.

``transcript``: ``{"role": "user"|"assistant", "text", "at"}`` turns, ``at`` in seconds from the
call's start (millisecond precision).

- Realtime: one user turn per ``conversation.item.input_audio_transcription.completed``
  (its ``transcript``), one assistant turn per ``response.output_audio_transcript.done``
  (``transcript``) or ``response.output_text.done`` (``text``); ``at`` is when the event
  arrived.
- Live: ``session.input_transcript.delta`` (user) and ``session.output_transcript.delta``
  (assistant) fragments carry no turn boundaries, so navai joins them: a role's fragments
  make one turn until that role pauses for more than :data:`TURN_GAP_MS` (the next fragment
  starts that long after the last one ended) or the other role speaks after it (a fragment of
  the other role starts after this turn's last fragment ended; talking over each other does
  not end a turn), or the call ends. ``at`` is the turn's first fragment's ``start_ms`` on the
  session timeline. Turns are listed by ``at``.

``tools``: ``{"call_id", "name", "arguments", "ok", "error", "ms"}`` in the order the runs
finished, ``arguments`` the JSON text cut to :data:`MAX_ARGUMENT_BYTES` UTF-8 bytes at a
character boundary, ``error`` the text the model got (the envelope's ``details``, else its
``error``; None on success).

Privacy: with ``keep_text=False`` no text is kept (``transcript`` empty, ``arguments`` "");
a ``redact(text) -> text`` hook runs on every transcript and argument text before it is kept
(a hook that raises keeps :data:`REDACTION_FAILED` instead of the text).

Each turn and tool run is kept as its JSON text (a ``str``), not a dict: a call keeps adding
them for as long as it runs, and a thousand calls' worth of dicts would be that many more
objects for Python's garbage collector to count and walk (at 1,000 calls with a tool call a
second each, a collection every few seconds and a 90 ms one within 20 s; strings are not
tracked). ``turns`` and ``tools`` decode them.

Bounded memory per call: at most :data:`MAX_TURNS` turns and :data:`MAX_TRANSCRIPT_BYTES` of
transcript text (a turn's text cut to :data:`MAX_TURN_BYTES`), at most :data:`MAX_TOOLS` tool
runs; past a cap, later turns or runs are counted in ``dropped_turns``/``dropped_tools``, not
kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .._json import JsonValue, encode_text

logger = logging.getLogger("navai")

MAX_ARGUMENT_BYTES = 4096
MAX_TURN_BYTES = 16 * 1024
MAX_TRANSCRIPT_BYTES = 256 * 1024
MAX_TURNS = 1000
MAX_TOOLS = 500
TURN_GAP_MS = 1500
REDACTION_FAILED = "[redaction failed]"

USER_DONE = "conversation.item.input_audio_transcription.completed"
AUDIO_DONE = "response.output_audio_transcript.done"
TEXT_DONE = "response.output_text.done"
LIVE_INPUT = "session.input_transcript.delta"
LIVE_OUTPUT = "session.output_transcript.delta"

Redact = Callable[[str], str]


def cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def tool_outcome(output: str) -> tuple[bool, str | None]:
    """``(ok, error)`` of a function call's output text (the execute route's envelope)."""
    try:
        body = json.loads(output)
    except (ValueError, RecursionError):
        return False, None
    if not isinstance(body, dict):
        return False, None
    if body.get("ok") is True:
        return True, None
    for key in ("details", "error"):
        value = body.get(key)
        if isinstance(value, str):
            return False, value
        if value is not None:
            return False, json.dumps(value, ensure_ascii=False)
    return False, None


class _LiveTurn:
    __slots__ = ("end_ms", "parts", "size", "start_ms")

    def __init__(self, start_ms: int, end_ms: int) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.parts: list[str] = []
        self.size = 0


class Transcript:
    """Turns and tool runs of one call, from its events; ``keep_text`` and ``redact`` as the
    module says."""

    def __init__(self, *, keep_text: bool = True, redact: Redact | None = None) -> None:
        self.keep_text = keep_text
        self.redact = redact
        self._turns: list[str] = []  # each turn's JSON text (see the module)
        self._tools: list[str] = []  # each tool run's JSON text
        self.dropped_turns = 0
        self.dropped_tools = 0
        self._bytes = 0
        self._open: dict[str, _LiveTurn] = {}

    # ----- text -------------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        if self.redact is not None:
            try:
                text = self.redact(text)
            except Exception:
                logger.exception("the redact hook raised; the text is not kept")
                return REDACTION_FAILED
            if not isinstance(text, str):
                return REDACTION_FAILED
        return text

    def _keep(self, role: str, text: str, at: float) -> None:
        if not self.keep_text or not text.strip():
            return
        text = cut_utf8(self._clean(text), MAX_TURN_BYTES)
        size = len(text.encode("utf-8", "surrogatepass"))
        if len(self._turns) >= MAX_TURNS or self._bytes + size > MAX_TRANSCRIPT_BYTES:
            self.dropped_turns += 1
            return
        self._bytes += size
        self._turns.append(encode_text({"role": role, "text": text, "at": round(max(at, 0.0), 3)}))

    @property
    def turns(self) -> list[dict[str, JsonValue]]:
        """The turns kept so far, in the order they were kept."""
        return [json.loads(turn) for turn in self._turns]

    @property
    def turn_count(self) -> int:
        return len(self._turns)

    def turn_texts(self, start: int = 0) -> list[str]:
        """The JSON text of each turn kept, from the ``start``-th on."""
        return self._turns[start:]

    @property
    def tools(self) -> list[dict[str, JsonValue]]:
        """The tool runs kept so far, in the order they finished."""
        return [json.loads(tool) for tool in self._tools]

    # ----- events -----------------------------------------------------------------------------

    def on_event(self, event: Mapping[str, Any], at: float) -> None:
        """One server event of the call's sideband; ``at``: seconds since the call started."""
        kind = event.get("type")
        if kind in (LIVE_INPUT, LIVE_OUTPUT):
            self._fragment("user" if kind == LIVE_INPUT else "assistant", event)
        elif kind == USER_DONE:
            self._text_of(event, "transcript", "user", at)
        elif kind == AUDIO_DONE:
            self._text_of(event, "transcript", "assistant", at)
        elif kind == TEXT_DONE:
            self._text_of(event, "text", "assistant", at)

    def _text_of(self, event: Mapping[str, Any], key: str, role: str, at: float) -> None:
        text = event.get(key)
        if isinstance(text, str):
            self._keep(role, text, at)

    def _fragment(self, role: str, event: Mapping[str, Any]) -> None:
        if not self.keep_text:
            return
        delta, start, end = event.get("delta"), event.get("start_ms"), event.get("end_ms")
        if not isinstance(delta, str) or not isinstance(start, int) or isinstance(start, bool):
            return
        end = end if isinstance(end, int) and not isinstance(end, bool) and end >= start else start
        other = self._open.get("assistant" if role == "user" else "user")
        if other is not None and start > other.end_ms:
            self._close("assistant" if role == "user" else "user")
        turn = self._open.get(role)
        if turn is not None and start - turn.end_ms > TURN_GAP_MS:
            self._close(role)
            turn = None
        if turn is None:
            turn = self._open[role] = _LiveTurn(start, end)
        turn.end_ms = max(turn.end_ms, end)
        if turn.size < MAX_TURN_BYTES:
            turn.parts.append(delta)
            turn.size += len(delta)

    def _close(self, role: str) -> None:
        turn = self._open.pop(role, None)
        if turn is not None:
            self._keep(role, "".join(turn.parts), turn.start_ms / 1000)

    # ----- tools ------------------------------------------------------------------------------

    def tool_done(
        self, call_id: str, name: str, arguments: str, output: str, ms: float
    ) -> dict[str, JsonValue] | None:
        """A function call ran (or was refused): its entry, or None past :data:`MAX_TOOLS`."""
        ok, error = tool_outcome(output)
        return self.tool_entry(call_id, name, arguments, ok, error, ms)

    def tool_entry(
        self, call_id: str, name: str, arguments: str, ok: bool, error: str | None, ms: float
    ) -> dict[str, JsonValue] | None:
        """Like :meth:`tool_done`, the outcome already read (``ok``, the ``error`` text the
        model got)."""
        if len(self._tools) >= MAX_TOOLS:
            self.dropped_tools += 1
            return None
        kept = cut_utf8(self._clean(arguments), MAX_ARGUMENT_BYTES) if self.keep_text else ""
        entry: dict[str, JsonValue] = {
            "call_id": call_id,
            "name": name,
            "arguments": kept,
            "ok": ok,
            "error": None if error is None else cut_utf8(error, MAX_ARGUMENT_BYTES),
            "ms": round(max(ms, 0.0), 1),
        }
        self._tools.append(encode_text(entry))
        return entry

    # ----- end --------------------------------------------------------------------------------

    def finish(self) -> list[dict[str, JsonValue]]:
        """Close open Live turns; the turns by ``at``."""
        for role in list(self._open):
            self._close(role)
        turns = self.turns
        turns.sort(key=lambda turn: turn["at"])  # type: ignore[arg-type,return-value]
        return turns
