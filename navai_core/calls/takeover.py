"""Taking over the calls of a worker that died (CONTRACT §13).

With a shared store, every worker runs a :class:`Takeover` on navai's background loop: every
``scan_seconds`` it asks the store for lapsed leases it may claim (at most ``batch`` at a
time; again at once after a full batch it took from, or while lapsed leases are left to look
at), claims each one atomically (exactly one worker wins a claim; see ``calls/leases.py``)
and attaches a new control connection to the call with its own backend key (Realtime:
``?call_id=``) and the session the call was made with (its session guard goes on). The call
then goes on as if it had started here: its first events answer the function calls the old
owner started and never answered (the error envelope: the tool was interrupted) and ask for
one response; its max length and budget count from the call's original start.

A worker whose process is full (``NAVAI_CALL_MAX_LIVE``) does not claim: another worker
will. Leases of calls created with another backend key are never claimed here, and never
block the others: the store skips them (``CallLeases.claimable``), and a scan goes on past
them with a cursor, so a worker sees every lapsed lease of its own key whatever the others
are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable

from .._config import DEFAULT_CALL_LEASE_SECONDS, NavaiConfig
from .._errors import CallsFull, NavaiError
from ..upstream.providers import realtime_target
from .leases import CallLeases, key_fingerprint
from .manager import CallManager

logger = logging.getLogger("navai")

SCAN_SECONDS = 1.0
BATCH = 16


def share_calls(
    config: NavaiConfig, calls: CallManager, loop: Callable[[], asyncio.AbstractEventLoop]
) -> tuple[CallLeases, Takeover]:
    """Hold ``calls`` under leases in the shared store ``config`` names (its client on
    ``loop()``, navai's background loop), and take over lapsed ones: the leases (set on
    ``calls``) and the takeover (started with the server)."""
    lease = config.call_lease_seconds
    ok = isinstance(lease, (int, float)) and lease >= 1
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    leases = CallLeases(
        config.rate_limit_storage,
        lease_seconds=float(lease) if ok else DEFAULT_CALL_LEASE_SECONDS,
        max_seconds=calls.max_seconds,
        loop=loop,
        owner=owner,
        on_lost=calls.hand_over,
    )
    calls.leases = leases
    return leases, Takeover(leases, calls, backend_key=lambda: backend_key(config), loop=loop)


def backend_key(config: NavaiConfig) -> str | None:
    """The backend key a worker attaches taken-over calls with (none: it takes none)."""
    try:
        return realtime_target(config).key
    except NavaiError:
        return None


def close_leases(leases: CallLeases | None) -> None:
    """Close the store client of ``leases`` once it was used (from sync code, off its loop);
    a store that fails to close is let go."""
    if leases is not None and leases.started:
        with contextlib.suppress(Exception):
            leases.on_loop_sync(leases.aclose)


async def aclose_leases(leases: CallLeases | None) -> None:
    """:func:`close_leases` from async code."""
    if leases is not None and leases.started:
        with contextlib.suppress(Exception):
            await leases.on_loop(leases.aclose)


class Takeover:
    """Watches the store for calls whose owner is gone, and takes them over."""

    def __init__(
        self,
        leases: CallLeases,
        calls: CallManager,
        *,
        backend_key: Callable[[], str | None],
        loop: Callable[[], asyncio.AbstractEventLoop],
        scan_seconds: float = SCAN_SECONDS,
        batch: int = BATCH,
    ) -> None:
        self.leases = leases
        self.calls = calls
        self.scan_seconds = scan_seconds
        self.batch = batch
        self.taken = 0  # calls this worker took over
        self._backend_key = backend_key
        self._loop = loop
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._more = False
        self._cursor = 0  # where the next look at the lapsed leases goes on from

    def start(self) -> None:
        """Start watching (from any thread; once)."""
        if self._task is None and not self._stopped:
            self._loop().call_soon_threadsafe(self._start_here)

    def stop(self) -> None:
        """Stop watching: this worker takes no call over any more (it is shutting down)."""
        self._stopped = True
        task = self._task
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)

    def _start_here(self) -> None:
        if self._task is None and not self._stopped:
            self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while not self._stopped:
            self._more = False
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store fails: the leases say it; try again
                logger.debug("takeover scan failed: %s", type(exc).__name__)
            # A full batch (a worker with many calls died) or lapsed leases left to look at
            # (past those of another backend key): look again at once.
            await asyncio.sleep(0 if self._more else self.scan_seconds)

    async def scan(self) -> int:
        """One look at the lapsed leases; the calls taken over."""
        key = self._backend_key()
        if key is None:
            return 0
        taken = 0
        fingerprint = key_fingerprint(key)
        lapsed, self._cursor = await self.leases.claimable(fingerprint, self.batch, self._cursor)
        self._more = self._cursor != 0  # lapsed leases are left to look at
        for call_id in lapsed:
            if self._stopped:
                break
            try:
                self.calls.check_room()
            except CallsFull:
                self._more = False  # (look again in scan_seconds, not at once)
                break
            if call_id in self.calls:
                continue
            resume = await self.leases.claim(call_id, fingerprint)
            if resume is None:
                continue  # alive again, gone, or another worker won
            entry = resume.entry
            try:
                self.calls.attach(
                    call_id,
                    api_key=key,
                    rate_key=entry.key,
                    transport=entry.transport,
                    loop=asyncio.get_running_loop(),
                    model=entry.model,
                    session=entry.session,
                    resume=resume,
                )
            except Exception as exc:
                logger.warning("call %s could not be taken over: %s", call_id, exc)
                with contextlib.suppress(Exception):
                    self.leases.release(call_id)
                continue
            taken += 1
            self.taken += 1
            self._more = self._more or len(lapsed) >= self.batch
            logger.info(
                "call %s taken over (owner %d of it; %d function call(s) interrupted)",
                call_id,
                resume.workers,
                len(resume.pending),
            )
        return taken
