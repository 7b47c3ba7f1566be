"""How often a client may call a route: rate limits.

The facade asks the route's hook (``_hooks``) and :meth:`RateLimiter.check` /
:meth:`RateLimiter.acheck` before any other work is done.
Rate limiting uses the ``limits`` package (moving window), in process by default or in
Redis (``redis://...``) so that several workers or machines share one budget.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeAlias

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies

from ._errors import NavaiError
from ._http import RequestContext

KeyHook: TypeAlias = "Callable[[RequestContext], str | None]"


class TooManyRequests(NavaiError):
    status_code = 429


def parse_limit(text: str | None) -> limits.RateLimitItem | None:
    """``"10/minute"``, ``"100 per hour"``...; ``None``, blank, ``off`` or ``none`` turn it off."""
    if text is None or text.strip().lower() in ("", "off", "none", "0"):
        return None
    return limits.parse(text)


def limit_problem(name: str, text: str | None) -> str | None:
    try:
        parse_limit(text)
    except ValueError:
        return f'{name} is not a rate limit such as "10/minute". Received: {text!r}'
    return None


class RateLimiter:
    """Counts hits per (route, client key) and answers 429 with ``Retry-After`` past the limit."""

    def __init__(self, storage_uri: str = "memory://") -> None:
        self.storage_uri = storage_uri
        self._lock = threading.Lock()
        self._sync: limits.strategies.MovingWindowRateLimiter | None = None
        self._async: limits.aio.strategies.MovingWindowRateLimiter | None = None

    @property
    def shared(self) -> bool:
        return not self.storage_uri.startswith("memory://")

    def _sync_limiter(self) -> limits.strategies.MovingWindowRateLimiter:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    storage = limits.storage.storage_from_string(self.storage_uri)
                    self._sync = limits.strategies.MovingWindowRateLimiter(storage)
        return self._sync

    def _async_limiter(self) -> limits.aio.strategies.MovingWindowRateLimiter:
        if self._async is None:
            storage = limits.aio.storage.RedisStorage(self.storage_uri, implementation="redispy")
            self._async = limits.aio.strategies.MovingWindowRateLimiter(storage)
        return self._async

    def check(self, item: limits.RateLimitItem | None, route: str, key: str) -> None:
        if item is None:
            return
        limiter = self._sync_limiter()
        if not limiter.hit(item, route, key):
            raise _too_many(limiter.get_window_stats(item, route, key).reset_time)

    async def acheck(self, item: limits.RateLimitItem | None, route: str, key: str) -> None:
        if item is None:
            return
        if not self.shared:
            # The in-process store is a dict behind a lock: safe and instant on a loop.
            self.check(item, route, key)
            return
        limiter = self._async_limiter()
        if not await limiter.hit(item, route, key):
            stats = await limiter.get_window_stats(item, route, key)
            raise _too_many(stats.reset_time)

    def reset(self) -> None:
        """Forget every count, in this process or in Redis (tests, or after an incident)."""
        self._sync_limiter().storage.reset()


def _too_many(reset_time: float) -> TooManyRequests:
    seconds = max(1, math.ceil(reset_time - time.time()))
    return TooManyRequests(
        f"Too many requests. Try again in {seconds} seconds.",
        extra={"retry_after": seconds},
        headers=[("Retry-After", str(seconds))],
    )


def client_key(hook: KeyHook | None, context: RequestContext) -> str:
    """The rate-limit key: the hook's value (a user id, say) or the client address."""
    if hook is not None and (key := hook(context)):
        return key
    return context.client or "unknown"
