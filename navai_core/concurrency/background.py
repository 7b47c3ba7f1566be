"""A background event loop: where sync code runs coroutines.

A WSGI server (or any sync caller) has no event loop, yet async backend functions, async
hooks and upstream calls need one. A :class:`BackgroundLoop` runs one long-lived loop in a
daemon thread, started on first use:

    value = background.run(coroutine)                 # from sync code: wait for the result
    value = background.run(coroutine, timeout=2.0)    # ...or stop waiting (cancel it) after 2 s
    future = background.submit(coroutine)             # a concurrent.futures.Future
    background.loop()                                 # the loop itself (starts it if needed)

Each ``Navai`` owns one, through its :class:`~navai_core.concurrency.owner.Concurrency`
(there is no process-wide loop). Why not anyio's blocking portal: a round trip through
``portal.call`` measured 75 us against 48 us for ``asyncio.run_coroutine_threadsafe``
(``benchmarks/bench_concurrency.py``, docs/performance.md), on a path every WSGI mint and
async function takes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundTimeout(Exception):
    """``run(..., timeout=...)`` stopped waiting; the coroutine was cancelled."""


class BackgroundLoop:
    """One daemon thread running one event loop, started on first use and reused."""

    def __init__(self, name: str = "navai-background-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def inside(self) -> bool:
        """Whether the current thread is the loop's own (where ``run`` would deadlock)."""
        return threading.current_thread() is self._thread

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started if it is not running."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_serve, args=(loop,), name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coroutine`` on the loop; its future (cancel it to cancel the task)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop())

    def run(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await ``awaitable`` on the loop from sync code and return its result.

        With ``timeout``, stop waiting after that many seconds: the task is cancelled and
        :class:`BackgroundTimeout` raised (whether the coroutine lets itself be cancelled
        or not). Refused (``RuntimeError``) from the loop's own thread.
        """
        if self.inside():
            _discard(awaitable)
            raise RuntimeError(
                "called from navai's background loop, which cannot wait for itself: await "
                "instead (aexecute() rather than execute())"
            )
        coroutine: Coroutine[Any, Any, T] = (
            awaitable if inspect.iscoroutine(awaitable) else _awaited(awaitable)
        )
        future = self.submit(coroutine)
        if timeout is None:
            return future.result()
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():
                raise  # the coroutine's own TimeoutError
            future.cancel()
            raise BackgroundTimeout from None

    def close(self, *, wait: bool = True) -> None:
        """Stop the loop; it starts again on next use.

        With ``wait`` (refused from the loop's own thread), what runs on it is cancelled
        (its callers get CancelledError) and the loop is stopped and closed before this
        returns. Without, the loop stops by itself once what runs on it has ended (a call
        left behind past its time limit included); nothing is cancelled.
        """
        if wait and self.inside():
            raise RuntimeError("navai's background loop cannot be closed from itself")
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if not wait:
            asyncio.run_coroutine_threadsafe(_stop_when_idle(loop), loop)
            return
        asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's thread: run until stopped; a loop stopped by ``close(wait=False)`` is
    closed here (``close()`` closes its own once the thread has ended)."""
    loop.run_forever()
    if getattr(loop, "_navai_idle_stop", False):
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _stop_when_idle(loop: asyncio.AbstractEventLoop) -> None:
    me = asyncio.current_task()
    while tasks := [t for t in asyncio.all_tasks() if t is not me]:
        await asyncio.wait(tasks)
    loop._navai_idle_stop = True  # type: ignore[attr-defined]
    loop.stop()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _cancel_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
