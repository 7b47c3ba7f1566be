"""The limits of one call: ``NAVAI_CALL_MAX_SECONDS`` and the call-time budget.

:meth:`CallLimits.watch` returns the reason the call must end (``max_seconds``, ``budget``)
when it comes; meanwhile it charges the call's budget key every ``tick`` seconds, ahead:
each charge pays for the time until the next one, and once a charge does not fit the call
ends when what it paid for runs out. So the seconds of a key's calls in one window stay
within its budget, but for the time each call takes to be hung up (docs/security.md). While
the budget's store fails the call goes on and is charged once the store answers again.
:meth:`CallLimits.settle` settles the account when the call ends: every started second
counts, seconds paid ahead and not used are given back.
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
            due = CallBudget.ahead(now - self.started, self.tick, self.charged)
            if due:
                # None: the store fails (logged by the rate limiter); the call goes on.
                fits = await self.budgets.acharge(self.key, due)
                if fits is not None:
                    self.charged += due  # (counted even when it does not fit)
                    if not fits:  # the call ends when what it paid for runs out
                        paid = self.started + self.charged - due
                        await asyncio.sleep(max(min(paid, deadline) - time.monotonic(), 0.0))
                        return BUDGET
            await asyncio.sleep(min(self.tick, deadline - now))

    async def settle(self) -> None:
        """Charge the seconds not charged yet, or give back those paid ahead and not used
        (the call has ended here: hung up, or handed over to another worker)."""
        if self.budgets.budget is not None:
            owed = CallBudget.settle(time.monotonic() - self.started, self.charged)
            if await self.budgets.acharge(self.key, owed) is not None:
                self.charged += owed  # (what a worker taking the call over goes on from)
