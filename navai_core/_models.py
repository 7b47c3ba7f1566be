"""OpenAI models with an announced shutdown, and what navai recommends instead.

The one table to update when OpenAI announces another shutdown. Notices are logged on the
``navai.models`` logger, so a user who has read them can silence exactly them:
``logging.getLogger("navai.models").setLevel(logging.ERROR)``.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

models_logger = logging.getLogger("navai.models")


@attrs.frozen
class Deprecation:
    """A model OpenAI will shut down, the day it stops answering, and navai's replacement."""

    model: str
    shutdown: datetime.date
    replacement: str

    def notice(self, where: str) -> str:
        """One log line naming the model, the date and the replacement."""
        return (
            f'{where} uses model "{self.model}", which OpenAI shuts down on '
            f'{self.shutdown.isoformat()}; use "{self.replacement}" instead.'
        )


def _table(shutdown: datetime.date, replacements: Mapping[str, str]) -> dict[str, Deprecation]:
    return {m: Deprecation(m, shutdown, r) for m, r in replacements.items()}


# Source: the "Deprecated values" notes of the `model` fields in the official openai-python
# package 3.57.0: types/realtime/realtime_session_create_request_param.py (Realtime models,
# shutdown 2027-01-20) and types/realtime/audio_transcription_param.py (transcription models,
# shutdown 2027-02-26). The SDK names no replacements; these are navai's recommendation:
# the model OpenAI's SDKs default to (gpt-realtime-2.1), its mini twin for the mini and
# audio-mini models, and OpenAI's streaming transcription model for realtime transcription.
DEPRECATED_MODELS: Mapping[str, Deprecation] = MappingProxyType(
    {
        **_table(
            datetime.date(2027, 1, 20),
            {
                "gpt-realtime": "gpt-realtime-2.1",
                "gpt-realtime-2025-08-28": "gpt-realtime-2.1",
                "gpt-realtime-mini": "gpt-realtime-2.1-mini",
                "gpt-realtime-mini-2025-12-15": "gpt-realtime-2.1-mini",
                "gpt-audio-mini": "gpt-realtime-2.1-mini",
                "gpt-audio-mini-2025-12-15": "gpt-realtime-2.1-mini",
            },
        ),
        **_table(
            datetime.date(2027, 2, 26),
            {
                "whisper-1": "gpt-live-transcribe",
                "gpt-4o-transcribe": "gpt-live-transcribe",
                "gpt-4o-mini-transcribe": "gpt-live-transcribe",
                "gpt-4o-mini-transcribe-2025-12-15": "gpt-live-transcribe",
                "gpt-4o-transcribe-diarize": "gpt-live-transcribe",
            },
        ),
    }
)


def deprecation(model: object) -> Deprecation | None:
    """The announced shutdown of ``model`` (trimmed, any case), or None."""
    if not isinstance(model, str):
        return None
    return DEPRECATED_MODELS.get(model.strip().lower())


def deprecation_notices(named_models: Iterable[tuple[str, object]]) -> list[str]:
    """A notice for each ``(where, model)`` whose model has an announced shutdown."""
    found = []
    for where, model in named_models:
        if (gone := deprecation(model)) is not None:
            found.append(gone.notice(where))
    return found


class ModelNotices:
    """Logs a request's deprecated model once per model for the life of this object."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def requested(self, model: str | None) -> None:
        gone = deprecation(model)
        if gone is None or gone.model in self._seen:
            return
        with self._lock:
            if gone.model in self._seen:
                return
            self._seen.add(gone.model)
        models_logger.warning("%s", gone.notice("A request"))
