"""The session guard of a Realtime call: the browser may watch, not steer (CONTRACT.md
section 8), as a pure state machine.

A Realtime call's browser holds a data channel that can send ``session.update`` too (OpenAI's
Agents SDK does on its own: its instructions, its tools replacing navai's). The sideband sees
the result as ``session.updated``; :class:`SessionGuard` compares what navai set with what the
session now is and answers:

- :data:`KEEP`: nothing navai set was changed;
- :data:`RESTORE`: something was: send :attr:`SessionGuard.restore_event` (navai's own
  ``session.update`` putting back what it set), once per change: a ``session.updated`` that
  differs in the very same way again (OpenAI refusing a value, say) is not answered again;
- :data:`HANG_UP`: something was, and the mode is ``hangup`` (``NAVAI_CALL_ON_CLIENT_UPDATE``).

What navai guards: the instructions, the tools, the tool choice (``auto`` when navai set
none) and the model settings the session sets (output modalities, output voice, output
token limit). GPT-Live needs no guard: its browser may send no event at all
(``allowed_client_events: []``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .._json import JsonObject, dumps

KEEP: Final = "keep"
RESTORE: Final = "restore"
HANG_UP: Final = "hangup"
GUARD_MODES = (RESTORE, HANG_UP)

# Top-level fields of the session compared and restored when navai set them.
_FIELDS = ("instructions", "tools", "tool_choice", "output_modalities", "max_output_tokens")
_TOOL_KEYS = ("type", "name", "description", "parameters")


def guarded(session: Mapping[str, Any]) -> JsonObject:
    """What the guard keeps of navai's session: the fields above (``tool_choice`` ``auto``
    when navai set tools and no choice) and ``audio.output.voice``."""
    kept: JsonObject = {"type": "realtime"}
    for name in _FIELDS:
        if name in session:
            kept[name] = session[name]
    if "tool_choice" not in kept and session.get("tools"):
        kept["tool_choice"] = "auto"
    voice = _voice(session)
    if voice is not None:
        kept["audio"] = {"output": {"voice": voice}}
    return kept


def _voice(session: Mapping[str, Any]) -> Any:
    audio = session.get("audio")
    output = audio.get("output") if isinstance(audio, Mapping) else None
    return output.get("voice") if isinstance(output, Mapping) else None


def _tools(value: Any) -> Any:
    """Tools compared by what the model sees of each (OpenAI may add fields to its echo)."""
    if not isinstance(value, list):
        return value
    return [
        {k: tool.get(k) for k in _TOOL_KEYS} if isinstance(tool, Mapping) else tool
        for tool in value
    ]


def changes(kept: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The names of the guarded fields whose value in ``now`` (a ``session.updated``'s
    session) differs from ``kept``; a field ``now`` does not show is not judged."""
    changed = []
    for name in _FIELDS:
        if name not in kept or name not in now:
            continue
        ours, theirs = kept[name], now[name]
        if name == "tools":
            ours, theirs = _tools(ours), _tools(theirs)
        if ours != theirs:
            changed.append(name)
    if "audio" in kept:
        theirs = _voice(now)
        if theirs is not None and theirs != _voice(kept):
            changed.append("voice")
    return changed


class SessionGuard:
    """Keeps the session navai set on one call (one instance per call)."""

    __slots__ = ("_last", "kept", "mode", "restored")

    def __init__(self, session: Mapping[str, Any], mode: str = RESTORE) -> None:
        self.kept = guarded(session)
        self.mode = mode if mode in GUARD_MODES else RESTORE
        self.restored = 0  # session.update events navai sent to put its session back
        self._last: bytes | None = None  # how the last changed session differed

    @property
    def restore_event(self) -> JsonObject:
        return {"type": "session.update", "session": self.kept}

    def feed(self, event: object) -> tuple[str, list[str]]:
        """What to do about a server event, and the fields a client changed."""
        if not isinstance(event, dict) or event.get("type") != "session.updated":
            return KEEP, []
        session = event.get("session")
        if not isinstance(session, dict):
            return KEEP, []
        changed = changes(self.kept, session)
        if not changed:
            self._last = None
            return KEEP, []
        if self.mode == HANG_UP:
            return HANG_UP, changed
        seen = dumps({name: session.get(name) for name in changed} | {"voice": _voice(session)})
        if seen == self._last:
            return KEEP, changed  # the same change again: answered once already
        self._last = seen
        self.restored += 1
        return RESTORE, changed
