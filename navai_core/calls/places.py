"""The places of the calls one process holds (``NAVAI_CALL_MAX_LIVE``), counted so that no
call is created upstream without somewhere to go.

A new call *reserves* a place before anything reaches OpenAI (:meth:`Places.reserve`: 503
when held calls and reservations fill the cap). The place becomes the call's when it is
attached (:meth:`Places.hold`), or is given back when the create fails or the call is hung up
instead (:meth:`Place.release`). While the server shuts down no place is given, and a place
reserved before the shutdown began is never held: a create answered then is hung up by its
requester (:meth:`Places.settled` tells the shutdown when the creates in flight are done).
"""

from __future__ import annotations

import threading
import time

from .._errors import CallsFull

FULL = "Too many calls in progress. Try again in {seconds} seconds."
STOPPING = "The server is stopping. Try again in {seconds} seconds."
NOT_HELD = "The call could not be held. Try again in {seconds} seconds."
FULL_RETRY_SECONDS = 10


def calls_full(message: str = FULL) -> CallsFull:
    """503 with ``Retry-After``: no place for a new call (``message`` says why)."""
    seconds = FULL_RETRY_SECONDS
    return CallsFull(
        message.format(seconds=seconds),
        extra={"retry_after": seconds},
        headers=[("Retry-After", str(seconds))],
    )


class Place:
    """A place reserved for a call being created (see :class:`Places`)."""

    __slots__ = ("_places", "generation", "used")

    def __init__(self, places: Places, generation: int) -> None:
        self._places = places
        self.generation = generation
        self.used = False  # held by the call, or given back

    def release(self) -> None:
        """Give the place back unless the call holds it (idempotent)."""
        self._places.release(self)


class Places:
    """Held calls and reservations of one process, at most ``max_live`` (thread-safe)."""

    def __init__(self, max_live: int) -> None:
        self.max_live = max_live
        self._lock = threading.Condition()
        self.held = 0
        self.reserved = 0
        self.closing = False
        self.generation = 0  # one more at each shutdown: older places are never held
        self.deadline: float | None = None  # during a shutdown: when its grace ends

    def check(self) -> None:
        """503 when there is no place left (or the server is stopping)."""
        with self._lock:
            self._check()

    def reserve(self) -> Place:
        """A place for a call about to be created upstream, or 503."""
        with self._lock:
            self._check()
            self.reserved += 1
            return Place(self, self.generation)

    def hold(self, place: Place | None) -> None:
        """A call is attached: it takes its reserved ``place``, or a free one (503 when there
        is none, while stopping, or for a place reserved before a shutdown)."""
        with self._lock:
            if place is None or place.used:
                self._check()
            elif self.closing or place.generation != self.generation:
                raise calls_full(STOPPING)
            else:
                place.used = True
                self.reserved -= 1
            self.held += 1

    def leave(self) -> None:
        """A held call has ended."""
        with self._lock:
            self.held -= 1
            self._lock.notify_all()

    def release(self, place: Place) -> None:
        with self._lock:
            if not place.used:
                place.used = True
                self.reserved -= 1
                self._lock.notify_all()

    def begin_close(self, deadline: float) -> None:
        """The server stops, until ``deadline`` (``time.monotonic()``): no new place; places
        reserved until now are never held."""
        with self._lock:
            self.closing = True
            self.generation += 1
            self.deadline = deadline

    def end_close(self) -> None:
        """The shutdown is over: the instance may be used again."""
        with self._lock:
            self.closing = False
            self.deadline = None

    def settled(self, deadline: float) -> bool:
        """Wait (from sync code) until no create is in flight, or until ``deadline``."""
        with self._lock:
            while self.reserved:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
            return True

    def _check(self) -> None:
        if self.closing:
            raise calls_full(STOPPING)
        if self.held + self.reserved >= self.max_live:
            raise calls_full()
