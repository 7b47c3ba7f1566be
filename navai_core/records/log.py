"""The call log: ``NAVAI_CALL_LOG=<path>`` gets one JSON line per ended call (CONTRACT §12).

Each line is written with one ``os.write`` of the whole line on a descriptor opened with
``O_APPEND``: the kernel moves to the end and writes in one step, so several worker processes
appending to the same local file never tear or interleave a line (network file systems such as
NFS do not promise this). The file is opened for each line, so a rotation (``logrotate`` moving
the file away) needs no signal, and created ``0600``: it holds what callers said.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("navai")

FILE_MODE = 0o600


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One record as one line of UTF-8 JSON, newline included (no newline inside: JSON
    escapes them in strings)."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8", "replace") + b"\n"


class CallLog:
    """Appends records to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, record: Mapping[str, Any]) -> bool:
        """Write ``record`` as one line; False (and a warning) when it could not be written
        whole. Never raises for the file's sake: a full disk must not break a call's end."""
        line = encode_line(record)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            logger.warning("call log %s cannot be opened: %s", self.path, exc)
            return False
        try:
            written = os.write(fd, line)
        except OSError as exc:
            logger.warning("call log %s: the record was not written: %s", self.path, exc)
            return False
        finally:
            os.close(fd)
        if written != len(line):
            logger.warning(
                "call log %s: only %d of %d bytes of a record were written",
                self.path,
                written,
                len(line),
            )
            return False
        return True

    async def aappend(self, record: Mapping[str, Any]) -> bool:
        """:meth:`append` in a worker thread (a slow disk never holds the event loop)."""
        return await asyncio.to_thread(self.append, record)
