"""The ``navai`` logger, with a filter that keeps configured keys out of every record, and
the handler navai attaches when nothing else would show its records.

Keys never reach a log line through navai's own code; the filter is the second line of
defence for text navai does not control, such as the message of an exception a backend
function raised, which is logged with its traceback.
"""

from __future__ import annotations

import logging
import sys
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


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the ``sys.stderr`` of the moment (a server or a test may replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


#: navai's own handler, attached by :func:`ensure_handler` only when no handler would show
#: navai's records (``%(levelname)s:  navai: message``, the look of uvicorn's lines).
default_handler = _StderrHandler()
default_handler.setFormatter(logging.Formatter("%(levelname)s:  %(name)s: %(message)s"))


def has_level_handler(log: logging.Logger) -> bool:
    """Whether a handler of ``log`` or of a logger it propagates to takes its level."""
    level = log.getEffectiveLevel()
    current: logging.Logger | None = log
    while current is not None:
        if any(handler.level <= level for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def ensure_handler() -> None:
    """Show navai's INFO lines (a call accepted, a call ended) on stderr when the application
    has not configured logging, as Flask does for its app logger: nothing is attached when any
    handler would already show them (``logging.basicConfig``, Django's ``LOGGING`` with a root
    handler, ``dictConfig``). Configure logging before the app is built to opt out, or remove
    it: ``logging.getLogger("navai").removeHandler(navai_core.default_log_handler)``."""
    if default_handler in logger.handlers or has_level_handler(logger):
        return
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.addHandler(default_handler)
