"""One owner for where navai runs code: :class:`Concurrency`.

Each ``Navai`` makes one and passes it down to whatever runs code that is not navai's own:

- ``background``: the event loop of sync callers (a WSGI server has none): async functions,
  async hooks and held calls run there (:class:`BackgroundLoop`, started on first use);
- ``functions``: the thread budget of sync backend functions (:class:`FunctionThreads`:
  bounded, one function at most half of it, hung calls left behind but counted);
- ``hooks``: the thread budget of every other sync user callable awaited from async code
  (authorisation hooks, event hooks, ``on_incoming_call``, building the function registry),
  so a hung function never starves the hooks, nor the other way round.

From async code every sync user callable goes through :meth:`Concurrency.run_sync` (as
Starlette's ``run_in_threadpool``): there is no other thread pool (not anyio's, not
asyncio's default executor). ``close()`` stops the loop and lets idle threads end; the
owner stays usable (the loop starts again on next use).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .background import BackgroundLoop
from .threads import DEFAULT_FUNCTION_THREADS, FunctionThreads, Overran

T = TypeVar("T")

#: Sync hooks (and other user callables but functions) running at once, per owner.
DEFAULT_HOOK_THREADS = 40
#: How long a call without a time limit waits for a free thread (then ``Busy``).
DEFAULT_WAIT_SECONDS = 30.0


class Concurrency:
    """The background loop and the thread budgets of one ``Navai`` (see the module)."""

    def __init__(
        self,
        function_threads: int = DEFAULT_FUNCTION_THREADS,
        *,
        hook_threads: int | None = None,
        threads: FunctionThreads | None = None,
        finalize: bool = False,
    ) -> None:
        self.background = BackgroundLoop()
        self._owns_functions = threads is None
        self.functions = FunctionThreads(function_threads) if threads is None else threads
        self.hooks = FunctionThreads(DEFAULT_HOOK_THREADS if hook_threads is None else hook_threads)
        # Async calls past their time limit that did not stop when cancelled: kept (a
        # strong reference) until they end.
        self.overdue: set[asyncio.Future[Any]] = set()
        if finalize:  # (an owner nobody closes: its loop stops once it is garbage)
            weakref.finalize(self, self.background.close, wait=False)

    def __repr__(self) -> str:
        return f"Concurrency(functions={self.functions!r}, hooks={self.hooks!r})"

    # ----- the background loop (sync callers) ---------------------------------------------

    def loop(self) -> asyncio.AbstractEventLoop:
        """The background loop (started on first use)."""
        return self.background.loop()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coroutine`` on the background loop; its future."""
        return self.background.submit(coroutine)

    def run(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await ``awaitable`` on the background loop from sync code (BackgroundLoop.run)."""
        return self.background.run(awaitable, timeout)

    def inside(self) -> bool:
        """Whether this thread is the background loop's own."""
        return self.background.inside()

    # ----- threads (async callers) ----------------------------------------------------------

    async def run_sync(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        name: str | None = None,
        wait: float = DEFAULT_WAIT_SECONDS,
        limit: float | None = None,
        threads: FunctionThreads | None = None,
    ) -> T:
        """Call sync ``fn(*args)`` on a thread of ``threads`` (default: the hooks' budget)
        and await its value; the thread sees a copy of the caller's context.

        ``name`` is what the budget counts calls by (default: the callable's name). A call
        waits for a free thread at most ``wait`` seconds, then raises
        :class:`~navai_core.concurrency.threads.Busy`. With ``limit`` it raises
        :class:`~navai_core.concurrency.threads.Overran` that many seconds after it started;
        the function runs on, holding its thread (Python cannot stop a thread), as it does
        when the caller is cancelled.
        """
        pool = self.hooks if threads is None else threads
        key = name if name is not None else _name_of(fn)
        await pool.aacquire(key, wait)
        call = functools.partial(fn, *args) if args else fn
        # (A cancelled caller stops waiting; the call, handed over, still runs.)
        running = pool.astart(key, call, asyncio.get_running_loop())
        if limit is None:
            return await running
        try:
            async with asyncio.timeout(limit) as scope:
                return await running
        except TimeoutError:
            if scope.expired():
                raise Overran(key) from None
            raise  # the function's own TimeoutError

    def keep(self, task: asyncio.Future[Any]) -> None:
        """Hold ``task`` (a call left behind past its time limit) until it ends."""
        self.overdue.add(task)
        task.add_done_callback(self.overdue.discard)

    # ----- shutdown -----------------------------------------------------------------------

    def close(self, *, wait: bool = True) -> None:
        """Stop the background loop (see BackgroundLoop.close; from the loop's own thread,
        it stops once idle) and let idle threads end. The owner stays usable."""
        self.background.close(wait=wait and not self.background.inside())
        if self._owns_functions:  # (a budget passed in is its owner's to close)
            self.functions.close()
        self.hooks.close()


def _name_of(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def close_background_loop(owner: Any = None) -> None:
    """Deprecated: each ``Navai`` owns its background loop and closes it in ``close()`` /
    ``aclose()``; a call of ``execute()`` without an owner closes its own.

    With ``owner`` (a ``Navai`` or a :class:`Concurrency`), closes that owner's loop and
    lets its idle threads end (see :meth:`Concurrency.close`). Without, there is no
    process-wide loop to close any more: it only warns (``DeprecationWarning``).
    """
    warnings.warn(
        "close_background_loop() is deprecated: Navai.close()/aclose() close the background "
        "loop of that instance",
        DeprecationWarning,
        stacklevel=2,
    )
    if owner is None:
        return
    concurrency = owner if isinstance(owner, Concurrency) else owner.concurrency
    concurrency.close()
