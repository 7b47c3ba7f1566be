"""Who holds which call: the calls a process holds, kept where another process can read them.

A worker process of ``navai serve --workers N`` that dies (``kill -9``, out of memory) cannot
hang up the calls it held: its supervisor does, from what the worker recorded here. The
:class:`CallRegistry` protocol is the one interface; the call manager records each call it
holds (:meth:`CallRegistry.hold`, when it attaches the call) and forgets it once ended
(:meth:`CallRegistry.forget`, after the upstream hangup) or handed over to another worker:

- :class:`NoRegistry` (the default): records nothing (one process, or an embedded app);
- :class:`FileCallRegistry`: one small file per worker in a private folder its supervisor
  owns (see below); :func:`read_held` reads it back after the worker's death.

A shared store (Redis) that lets another worker take a call over keeps leases instead
(``calls/leases.py``, CONTRACT §13). :class:`HeldCalls` fronts both for the call manager: the
one place it tells that a call is held, ends, is hung up or is handed over.

The file is an append-only log of one-line records, ``+ <call id> <key fingerprint>`` when a
call is held and ``- <call id>`` when it ends, each written with one ``os.write`` on an
``O_APPEND`` descriptor: a process killed at any point leaves whole lines (the kernel finishes
a write before the process dies). It never holds a key, only a fingerprint (the first 16 hex
digits of its SHA-256) so that the supervisor knows whether its own key can hang the call up.
When the log grows past ``COMPACT_FACTOR`` times the live calls (and ``COMPACT_MIN_LINES``),
it is rewritten with the live calls only, to a temporary file renamed over it (atomic).
Writes are small and local (microseconds): they are made in place, on the caller's thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from typing import Any, Protocol

import attrs

from .leases import CallHolds, Resume
from .plans import valid_call_id

logger = logging.getLogger("navai")

COMPACT_FACTOR = 4
COMPACT_MIN_LINES = 256
FILE_MODE = 0o600


def key_fingerprint(key: str) -> str:
    """A key's fingerprint: never the key, enough to tell two keys apart."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16]


@attrs.frozen
class HeldCall:
    """A call a process held when it was last heard of."""

    call_id: str
    key_fingerprint: str  # of the key that created the call (its hangup needs that key)


class CallRegistry(Protocol):
    """Where a process records the calls it holds (see the module)."""

    def hold(self, call_id: str, key: str) -> None:
        """``call_id``, created with ``key``, is held here now."""

    def forget(self, call_id: str) -> None:
        """``call_id`` has ended (hung up where it had to be), or another worker holds it."""


class NoRegistry:
    """Records nothing."""

    def hold(self, call_id: str, key: str) -> None:
        return None

    def forget(self, call_id: str) -> None:
        return None


class FileCallRegistry:
    """The calls of one process, in one file (see the module). Thread-safe; never raises
    for the file's sake (a full disk must not break a call: it logs once)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}
        self._lines = 0
        self._failed = False
        self._write(b"", truncate=True)

    def hold(self, call_id: str, key: str) -> None:
        fingerprint = key_fingerprint(key)
        with self._lock:
            self._held[call_id] = fingerprint
            self._append(f"+ {call_id} {fingerprint}\n")

    def forget(self, call_id: str) -> None:
        with self._lock:
            if self._held.pop(call_id, None) is None:
                return
            self._append(f"- {call_id}\n")

    def close(self) -> None:
        """Remove the file once no call is held (the process ended its calls); a call still
        held is left for the supervisor to hang up."""
        with self._lock:
            if not self._held:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)

    def _append(self, line: str) -> None:
        self._lines += 1
        if self._lines > max(COMPACT_MIN_LINES, COMPACT_FACTOR * len(self._held)):
            self._compact()
        else:
            self._write(line.encode())

    def _compact(self) -> None:
        text = "".join(f"+ {c} {f}\n" for c, f in self._held.items())
        temporary = f"{self.path}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as exc:
            self._warn(exc)
            return
        self._lines = len(self._held)

    def _write(self, data: bytes, *, truncate: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
        try:
            fd = os.open(self.path, flags, FILE_MODE)
            try:
                if data:
                    os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            self._warn(exc)

    def _warn(self, exc: OSError) -> None:
        if not self._failed:
            self._failed = True
            logger.warning("the list of held calls %s cannot be written: %s", self.path, exc)


class HeldCalls:
    """Where the calls this process holds are recorded, for whoever must end or take them
    over if the process dies: ``registry``, a worker supervisor's :class:`CallRegistry`
    (nothing by default), and ``leases``, a shared store's :class:`CallHolds` (set by the
    Navai with a shared store; else None)."""

    def __init__(self) -> None:
        self.registry: CallRegistry = NoRegistry()
        self.leases: CallHolds | None = None

    def hold(self, call: Any, *, runtime: str, model: str | None, resume: Resume | None) -> None:
        """``call`` (a manager's call: id, key, target, dispatch) is held here now; with
        leases its function calls are tracked (``call.dispatch`` wrapped)."""
        if self.leases is not None:  # a shared store: the call may outlive this worker
            call.dispatch = self.leases.track(call.call_id, call.dispatch)
            self.leases.register(call, runtime=runtime, model=model or "", resume=resume)
        else:  # (with a store, another worker takes it over: no supervisor must hang it up)
            self.registry.hold(call.call_id, call.target.key)

    def ending(self, call_id: str) -> int:
        """``call_id`` ends (before its hangup): its lease is let go; how many workers held
        it (1 without a store)."""
        return self.leases.forget(call_id) if self.leases is not None else 1

    def ended(self, call_id: str) -> None:
        """``call_id`` has ended and was hung up where it had to be."""
        self.registry.forget(call_id)

    def owns(self, call_id: str) -> bool:
        """Whether ``call_id`` is this worker's still (its lease not taken by another
        worker); always without a shared store."""
        return self.leases is None or call_id in self.leases.held()

    def handed_over(self, call_id: str) -> None:
        """Another worker holds ``call_id`` now (or will): its lease lapses at once, and the
        supervisor forgets it (this worker's death must not hang it up)."""
        self.registry.forget(call_id)
        if self.leases is not None:
            self.leases.release(call_id)


def read_held(path: str) -> list[HeldCall]:
    """The calls the log at ``path`` says are held, oldest first (none when it is missing)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return []
    held: dict[str, str] = {}
    for line in lines:
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "+" and valid_call_id(parts[1]):
            held[parts[1]] = parts[2]
        elif len(parts) == 2 and parts[0] == "-":
            held.pop(parts[1], None)
    return [HeldCall(call_id, fingerprint) for call_id, fingerprint in held.items()]


__all__ = [
    "CallRegistry",
    "FileCallRegistry",
    "HeldCall",
    "HeldCalls",
    "NoRegistry",
    "key_fingerprint",
    "read_held",
]
