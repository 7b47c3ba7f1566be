"""One call's control connection (the "sideband"): a WebSocket that only moves text.

:meth:`Connection.run` connects to the runtime's URL with the call's key and hands each
message on; when the connection drops it reconnects with backoff (``delays``: 0.25 s up to
5 s, six tries) while the call is live. The tries count across handshakes: only a connection
that stayed open ``STABLE_SECONDS`` starts a new run of them, so a sideband that accepts and
drops at once is given up like one that refuses. Events sent while it is away are kept, up to
``MAX_UNSENT_EVENTS``, and sent first once it is back.

How it ends: a normal close from the other side (1000), or a reconnect refused with 403, 404
or 410 once the connection had held, means the call is over (``ENDED``: the caller hung
up); a handshake refused otherwise (a 429 at the first connect, say) is ``REFUSED`` and a
connection that could not be re-established is ``LOST`` — navai cannot hold such a call, so
it hangs it up. :meth:`Connection.close` is navai ending the call, a normal close (1000) too.

websockets' own ``async for socket in connect(...)`` reconnects too, but forever, on delays
set only through environment variables, and it retries a refused handshake; a call needs a
bounded number of tries on its own delays and takes a 4xx as the end of the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .._json import dumps
from .events import ENDED, LOST, REFUSED

logger = logging.getLogger("navai")

# Events kept for the control connection while it reconnects; past it new ones are dropped.
MAX_UNSENT_EVENTS = 256
MAX_EVENT_BYTES = 4 * 1024 * 1024
RECONNECT_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0)
# A connection open this long has held: the next drop starts a new run of tries.
STABLE_SECONDS = 10.0
# A reconnect refused with these, once the connection had held: the call is gone.
GONE = frozenset((403, 404, 410))

#: ``connect(url, headers)``: an async context manager giving a websockets connection.
Connect = Callable[[str, tuple[tuple[str, str], ...]], Any]


class Listener(Protocol):
    """Who gets the connection's messages."""

    async def on_message(self, message: str | bytes) -> None: ...


class Connection:
    """The control connection of call ``call_id`` (touched only on the call's loop)."""

    __slots__ = (
        "_closing",
        "_connect",
        "call_id",
        "delays",
        "dropped",
        "headers",
        "socket",
        "stable",
        "unsent",
        "url",
    )

    def __init__(
        self,
        call_id: str,
        url: str,
        headers: tuple[tuple[str, str], ...],
        *,
        delays: tuple[float, ...] = RECONNECT_DELAYS,
        connect: Connect | None = None,
        stable: float = STABLE_SECONDS,
    ) -> None:
        self.call_id = call_id
        self.url = url
        self.headers = headers
        self.delays = delays
        self.stable = stable
        self._connect = connect or _connect
        self.socket: Any = None
        self.unsent: list[bytes] = []
        self.dropped = 0  # events not kept: the connection was away too long
        self._closing = False

    async def run(self, listener: Listener) -> str:
        """Hold the connection, handing every message to ``listener``, until the call ends:
        ``ENDED`` (the caller hung up, or :meth:`close`), ``REFUSED`` (a handshake refused)
        or ``LOST`` (no reconnect)."""
        from websockets.exceptions import InvalidStatus

        failures = 0
        held = False  # a connection was open once
        while not self._closing:
            opened: float | None = None
            try:
                async with self._connect(self.url, self.headers) as socket:
                    opened, held = time.monotonic(), True
                    self.socket = socket
                    await self._flush()
                    async for message in socket:
                        await listener.on_message(message)
                self.socket = None
                if socket.close_code == 1000 or self._closing:  # the caller hung up
                    return ENDED
            except InvalidStatus as exc:
                self.socket = None
                status = exc.response.status_code
                if held and status in GONE:  # the call is over
                    return ENDED
                if 400 <= status <= 499:
                    logger.warning("call %s: control connection refused (%s)", self.call_id, status)
                    return REFUSED
            except Exception as exc:  # dropped (a timeout, a socket error, ...): reconnect
                self.socket = None
                logger.info("call %s control connection lost: %s", self.call_id, exc)
            if opened is not None and time.monotonic() - opened >= self.stable:
                failures = 0  # it held a while: a new run of tries
            if failures >= len(self.delays):
                logger.warning(
                    "call %s: control connection lost after %d tries", self.call_id, failures
                )
                return LOST
            await asyncio.sleep(self.delays[failures])
            failures += 1
        return ENDED

    async def close(self) -> None:
        """End the connection normally (1000): navai ends the call. No reconnect follows."""
        self._closing = True
        socket = self.socket
        if socket is not None:
            try:
                await socket.close()
            except Exception as exc:
                logger.debug("call %s: closing the control connection: %s", self.call_id, exc)

    async def send(self, event: Mapping[str, Any]) -> None:
        """Send a client event now, or keep it for the reconnect."""
        data = dumps(event)
        socket = self.socket
        if socket is not None:
            try:
                await socket.send(data.decode())
                return
            except Exception:
                pass
        self._keep(data)  # sent first after the reconnect

    def _keep(self, data: bytes) -> None:
        if len(self.unsent) < MAX_UNSENT_EVENTS:
            self.unsent.append(data)
            return
        if not self.dropped:
            logger.warning(
                "call %s: control connection away, %d events waiting: dropping events",
                self.call_id,
                len(self.unsent),
            )
        self.dropped += 1

    async def _flush(self) -> None:
        while self.unsent and self.socket is not None:
            await self.socket.send(self.unsent[0].decode())
            self.unsent.pop(0)


def _connect(url: str, headers: tuple[tuple[str, str], ...]) -> Any:
    from websockets.asyncio.client import connect

    return connect(
        url,
        additional_headers=list(headers),
        compression=None,  # per-connection zlib state would cost ~100 KB a call
        max_size=MAX_EVENT_BYTES,
        open_timeout=10,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
        user_agent_header="navai",
    )
