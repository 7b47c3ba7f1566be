"""The ``navai`` logger, with a filter that keeps configured keys out of every record.

Keys never reach a log line through navai's own code; the filter is the second line of
defence for text navai does not control, such as the message of an exception a backend
function raised, which is logged with its traceback.
"""

from __future__ import annotations

import logging
import threading

REDACTED = "[redacted]"


class SecretFilter(logging.Filter):
    """Replaces every registered secret in a record's message and traceback text."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            self._secrets = self._secrets | {s for s in secrets if s and len(s) >= 8}

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


logger = logging.getLogger("navai")
secret_filter = SecretFilter()
logger.addFilter(secret_filter)
