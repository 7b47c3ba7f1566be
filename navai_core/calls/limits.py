"""The limits of one call: ``NAVAI_CALL_MAX_SECONDS`` and the call-time budget.

:meth:`CallLimits.watch` returns the reason the call must end (``max_seconds``, ``budget``)
when it comes; meanwhile it charges the call's budget key every ``tick`` seconds. While the
budget's store fails the call goes on and is charged once the store answers again.
:meth:`CallLimits.settle` charges what is left when the call ends.
"""

from __future__ import annotations

import asyncio
import time

from ..limits.budget import CallBudget, CallBudgets
from .events import BUDGET, MAX_SECONDS


class CallLimits:
    """The limits of the call of budget key ``key`` that started at ``started``
    (``time.monotonic()``)."""

    __slots__ = ("budgets", "charged", "key", "max_seconds", "started", "tick")

    def __init__(
        self,
        key: str,
        started: float,
        *,
        max_seconds: float,
        budgets: CallBudgets,
        tick: float = 5.0,
    ) -> None:
        self.key = key
        self.started = started
        self.max_seconds = max_seconds
        self.budgets = budgets
        self.tick = tick
        self.charged = 0  # seconds charged to the budget so far

    async def watch(self) -> str:
        """Wait until the call must end; the reason."""
        deadline = self.started + self.max_seconds
        while True:
            now = time.monotonic()
            if now >= deadline:
                return MAX_SECONDS
            if self.budgets.budget is None:
                await asyncio.sleep(deadline - now)
                continue
            due = CallBudget.due(now - self.started, self.charged)
            if due:
                # None: the store fails (logged by the rate limiter); the call goes on.
                left = await self.budgets.acharge(self.key, due)
                if left is not None:
                    self.charged += due
                    if not left:
                        return BUDGET
            await asyncio.sleep(min(self.tick, deadline - now))

    async def settle(self) -> None:
        """Charge the seconds not charged yet (the call has ended)."""
        if self.budgets.budget is not None:
            due = CallBudget.due(time.monotonic() - self.started, self.charged)
            await self.budgets.acharge(self.key, due)
