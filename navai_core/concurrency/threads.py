"""Bounded threads for sync backend functions, shared by sync and async callers.

Python cannot stop a thread: a sync function past its time limit runs on, unobserved, and
keeps its thread. So threads are a budget, not a pool to grow:

- at most ``max_threads`` threads run functions at once (calls past their limit included);
- one function may hold at most half of them, so a hung function leaves the other half to
  every other function;
- a call that finds no free thread waits for one (at most ``wait`` seconds, and never more
  than ``max_waiting`` calls wait), then gets :class:`Busy` (the caller answers 503);
- a function's time limit is counted by the caller from the moment it has a thread, not
  while it waits for one.

Idle threads are reused and end after ``IDLE_SECONDS``.

Sync callers (WSGI) use :meth:`FunctionThreads.run`: a call that has to wait leaves its
function in the queue of waiting calls, and the thread that frees up runs it at once, so the
caller is woken once, when its function is done (not once for the thread, then again for the
result); its outcome is a lock, lighter than a future. Async callers reserve a thread
(:meth:`aacquire`), then :meth:`astart` the function and await its future.

anyio's ``to_thread.run_sync(..., abandon_on_cancel=True)`` cannot give this: an abandoned
call gives its capacity token back while its thread runs on, so hung calls grow threads
without bound (measured: 1,928 threads after 2,000 calls of a hung function).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_FUNCTION_THREADS = 40
# How many calls may wait for a thread, per thread.
WAITING_PER_THREAD = 10

_Job = tuple[str, Callable[[], None]]


class Busy(Exception):
    """No thread became free in time for a call of ``name`` (or too many calls wait)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Overran(Exception):
    """A function ran past its time limit (never raised by a function itself)."""


class _Call(Generic[T]):
    """One call of a sync caller: the function, then its outcome (``done`` is released)."""

    __slots__ = ("context", "done", "error", "fn", "started", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.context = contextvars.copy_context()
        self.done = threading.Lock()
        self.done.acquire()
        self.started: float | None = None  # (set under the budget's lock)
        self.value: T | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        try:
            self.value = self.context.run(self.fn)
        except BaseException as exc:  # handed to the caller, who decides
            self.error = exc
        # ``done`` is released by the thread once it gave its place back: the caller, woken
        # then, does not wait for the GIL while the thread does its bookkeeping.


_Waiter = concurrent.futures.Future[None] | _Call[Any]


class FunctionThreads:
    """A budget of daemon threads for sync functions (see the module's docstring)."""

    IDLE_SECONDS = 60.0

    def __init__(
        self, max_threads: int = DEFAULT_FUNCTION_THREADS, per_function: int | None = None
    ) -> None:
        self.max_threads = max(1, max_threads)
        # (Default: half the budget, so one hung function leaves the rest to the others.)
        share = self.max_threads // 2 if per_function is None else per_function
        self.per_function = min(max(1, share), self.max_threads)
        self.max_waiting = WAITING_PER_THREAD * self.max_threads
        self._lock = threading.Lock()
        # What a caller that found a free thread waits on: already granted.
        self._granted: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._granted.set_result(None)
        self._busy = 0
        self._held: dict[str, int] = {}
        self._waiters: collections.deque[tuple[str, _Waiter]] = collections.deque()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"FunctionThreads(max_threads={self.max_threads}, busy={self._busy})"

    @property
    def busy(self) -> int:
        """Threads running a function now (calls past their limit included)."""
        return self._busy

    def close(self) -> None:
        """Let every thread end once it is idle (the budget stays usable: a later call
        starts a thread that ends after it)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._jobs.put(None)

    # ----- reserving a thread ----------------------------------------------------------

    def acquire(self, name: str, wait: float) -> None:
        """Reserve a thread for a call of ``name`` from sync code, or raise :class:`Busy`."""
        granted = self._reserve(name)
        if granted.done():
            return
        try:
            granted.result(wait)
        except concurrent.futures.TimeoutError:
            if not self._withdraw(name, granted):
                raise Busy(name) from None

    async def aacquire(self, name: str, wait: float) -> None:
        """Like :meth:`acquire` from async code (waiting does not block the loop)."""
        granted = self._reserve(name)
        if granted.done():
            return
        try:
            async with asyncio.timeout(wait):
                await asyncio.wrap_future(granted)
        except TimeoutError:
            if not self._withdraw(name, granted):
                raise Busy(name) from None
        except BaseException:
            if self._withdraw(name, granted):
                self._release(name)
            raise

    def _reserve(self, name: str) -> concurrent.futures.Future[None]:
        with self._lock:
            if self._room(name):
                self._take(name)
                return self._granted
            if len(self._waiters) >= self.max_waiting:
                raise Busy(name)
            granted: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._waiters.append((name, granted))
            return granted

    def _withdraw(self, name: str, granted: concurrent.futures.Future[None]) -> bool:
        """Stop waiting; True when the thread was granted meanwhile (the caller holds it)."""
        with self._lock:
            if not granted.cancel():
                return True
            with contextlib.suppress(ValueError):
                self._waiters.remove((name, granted))
            return False

    def _room(self, name: str) -> bool:
        return self._busy < self.max_threads and self._held.get(name, 0) < self.per_function

    def _take(self, name: str) -> None:
        self._busy += 1
        self._held[name] = self._held.get(name, 0) + 1

    def _release(self, name: str) -> None:
        with self._lock:
            spawn = self._give_back(name)
        self._spawn(spawn)

    def _give_back(self, name: str) -> list[_Job]:
        """(Lock held.) Free ``name``'s thread and hand free threads to waiting calls;
        returns the jobs that need a new thread (started by the caller, lock released)."""
        self._busy -= 1
        left = self._held[name] - 1
        if left:
            self._held[name] = left
        else:
            del self._held[name]
        spawn: list[_Job] = []
        if not self._waiters:
            return spawn
        still: collections.deque[tuple[str, _Waiter]] = collections.deque()
        while self._waiters and self._busy < self.max_threads:
            waiter, granted = self._waiters.popleft()
            if self._held.get(waiter, 0) >= self.per_function:
                still.append((waiter, granted))
            elif isinstance(granted, _Call):
                self._take(waiter)
                granted.started = time.monotonic()
                if not self._queue((waiter, granted)):
                    spawn.append((waiter, granted))
            elif granted.set_running_or_notify_cancel():
                self._take(waiter)
                granted.set_result(None)
        still.extend(self._waiters)
        self._waiters = still
        return spawn

    # ----- running a function ------------------------------------------------------------

    def run(self, name: str, fn: Callable[[], T], limit: float) -> tuple[T, float]:
        """Call ``fn`` on a thread from sync code and wait for it: at most ``limit`` seconds
        for a thread (then :class:`Busy`), then ``limit`` seconds from its start (then
        :class:`Overran`; the function runs on, holding its thread). Returns its value and
        when it started (``time.monotonic()``); re-raises what it raised."""
        call: _Call[T] = _Call(fn)
        with self._lock:
            waits = not self._room(name)
            if not waits:
                self._take(name)
                call.started = time.monotonic()
                queued = self._queue((name, call))
            elif len(self._waiters) >= self.max_waiting:
                raise Busy(name)
            else:
                self._waiters.append((name, call))
        if not waits and not queued:
            self._spawn([(name, call)])
        if not call.done.acquire(timeout=limit):
            with self._lock:
                started = call.started
                if started is None:  # still waiting for a thread
                    self._waiters.remove((name, call))
                    raise Busy(name)
            if not call.done.acquire(timeout=max(started + limit - time.monotonic(), 0.0)):
                raise Overran(name)
        assert call.started is not None
        if call.error is not None:
            raise call.error
        return call.value, call.started  # type: ignore[return-value]

    def astart(
        self, name: str, fn: Callable[[], T], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[T]:
        """Run ``fn`` on the thread reserved for ``name`` (by :meth:`acquire` or
        :meth:`aacquire`); its outcome arrives in a future of ``loop``. The thread is given
        back when ``fn`` returns; the call runs to its end even when that future is cancelled
        (the caller stopped waiting), its outcome then dropped. (One hop back to the loop per
        call: a ``concurrent.futures.Future`` wrapped for the loop costs two futures chained
        both ways.)"""
        waiter: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()

        def job() -> None:
            try:
                value = context.run(fn)
            except BaseException as exc:  # handed to the caller, who decides
                _deliver(loop, waiter, None, exc)
            else:
                _deliver(loop, waiter, value, None)

        with self._lock:
            queued = self._queue((name, job))
        if not queued:
            self._spawn([(name, job)])
        return waiter

    def _queue(self, job: _Job) -> bool:
        """(Lock held.) Hand ``job`` to an idle thread; False when there is none."""
        if self._idle <= 0:
            return False
        self._idle -= 1  # claimed: that thread takes the next job from the queue
        self._jobs.put(job)
        return True

    def _spawn(self, jobs: list[_Job]) -> None:
        """Start a thread for each job (its place taken). When the system refuses a thread,
        the job's place is given back, a sync caller's call fails with that error, and the
        first such error is raised here once every job is dealt with."""
        failure: BaseException | None = None
        while jobs:
            name, job = jobs.pop()
            try:
                threading.Thread(
                    target=self._work, args=((name, job),), name="navai-function", daemon=True
                ).start()
            except BaseException as exc:  # (RuntimeError: can't start new thread)
                failure = failure or exc
                with self._lock:
                    jobs.extend(self._give_back(name))
                if type(job) is _Call:
                    job.error = exc
                    job.done.release()
        if failure is not None:
            raise failure

    def _work(self, job: _Job) -> None:
        while True:
            name, run = job
            try:
                run()
            finally:
                try:
                    with self._lock:
                        if not self._closed:
                            self._idle += 1
                        spawn = self._give_back(name)
                    with contextlib.suppress(Exception):  # (each caller told: _spawn)
                        self._spawn(spawn)
                finally:
                    if type(run) is _Call:
                        run.done.release()
            if self._closed:
                return
            while True:
                try:
                    next_job = self._jobs.get(timeout=self.IDLE_SECONDS)
                    if next_job is None:  # (close)
                        return
                    job = next_job
                    break
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0:  # not claimed meanwhile: end this thread
                            self._idle -= 1
                            return


def _deliver(
    loop: asyncio.AbstractEventLoop,
    waiter: asyncio.Future[Any],
    value: Any,
    error: BaseException | None,
) -> None:
    """(From a function thread.) Settle ``waiter`` on its loop, unless the caller stopped
    waiting or the loop is gone."""
    with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile)
        loop.call_soon_threadsafe(_settle, waiter, value, error)


def _settle(waiter: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if waiter.done():  # (cancelled: the caller stopped waiting)
        return
    if error is None:
        waiter.set_result(value)
    else:
        waiter.set_exception(error)
