"""Framework-neutral HTTP values: what an adapter hands to the core and what it gets back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._json import JsonValue, dumps


def _lower_headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType({k.lower(): v for k, v in (value or {}).items()})


@attrs.frozen
class RequestContext:
    """What navai knows of an HTTP request, independent of the web framework.

    Backend functions that declare a ``context`` parameter receive this value.
    Header names are lower-case. ``raw`` is the framework's own request object
    (a Starlette ``Request``, a Werkzeug ``Request``, ...) for code that needs more.
    """

    method: str = "POST"
    path: str = "/"
    headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=_lower_headers, repr=False, eq=False
    )
    client: str | None = None
    query_string: str = ""
    raw: Any = attrs.field(default=None, repr=False, eq=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``default``."""
        return self.headers.get(name.lower(), default)


class Stream:
    """A reply body sent as it is produced (the events stream of a call): ``chunks``, an
    async iterator of bytes that runs on the event loop ``loop`` (the call's).

    An ASGI server iterates it with ``async for`` (:meth:`__aiter__`, from its own loop or
    another); a WSGI server with ``for`` in its worker thread (:meth:`__iter__`: each chunk
    is produced on ``loop``) and then calls :meth:`close`, which ends the iterator on its
    loop."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self.chunks = chunks
        self.loop = loop

    async def _next(self) -> bytes | None:
        try:
            return await self.chunks.__anext__()
        except StopAsyncIteration:
            return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if asyncio.get_running_loop() is self.loop:
            try:
                async for chunk in self.chunks:
                    yield chunk
            finally:
                await self.aclose()
            return
        try:
            while True:
                future = asyncio.run_coroutine_threadsafe(self._next(), self.loop)
                waiting: asyncio.Future[bytes | None] = asyncio.wrap_future(future)
                got = await waiting
                if got is None:
                    return
                yield got
        finally:
            self.close()

    def __iter__(self) -> Iterator[bytes]:
        """The chunks from a thread that does not run ``loop`` (a WSGI worker)."""
        while self.loop.is_running():
            chunk = asyncio.run_coroutine_threadsafe(self._next(), self.loop).result()
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):
                await aclose()

    def close(self) -> None:
        """End the iterator on its loop (without waiting)."""
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self.aclose(), self.loop)


@attrs.frozen
class Reply:
    """A status, a JSON body and extra headers: every answer the core produces.

    A reply that is not JSON (the SDP answer of a call) carries its bytes in ``encoded``
    and its ``content_type``; one sent as it is produced carries a :class:`Stream` in
    ``stream`` (``encoded`` and ``body`` then unused)."""

    status: int
    body: JsonValue
    headers: tuple[tuple[str, str], ...] = ()
    # ``body`` already encoded, for replies answered many times (the function list).
    encoded: bytes | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)
    content_type: str = attrs.field(default="application/json", kw_only=True)
    stream: Stream | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)

    @property
    def content(self) -> bytes:
        return dumps(self.body) if self.encoded is None else self.encoded

    def with_headers(self, *headers: tuple[str, str]) -> Reply:
        return attrs.evolve(self, headers=self.headers + tuple(headers))
