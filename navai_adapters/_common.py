"""Framework-free helpers shared by the ASGI and WSGI adapters.

Nothing here decides anything about navai's routes or rules: these functions only move bytes
and headers between a web server and :class:`navai_core.Navai`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from navai_core import Navai, NavaiConfig, Reply
from navai_core._http import Stream

if TYPE_CHECKING:
    from navai_core.functions.registry import FunctionRegistry

logger = logging.getLogger("navai")

JSON_CONTENT_TYPE = "application/json"
INTERNAL_ERROR_BODY = b'{"error":"Internal server error."}'


def get_navai(
    navai: Navai | None, config: NavaiConfig | None, functions: FunctionRegistry | None
) -> Navai:
    """The :class:`Navai` an adapter serves: the one given, or a new one."""
    if navai is not None:
        if config is not None or functions is not None:
            raise TypeError("pass either navai or config/functions, not both")
        return navai
    return Navai(config, functions=functions)


def route_path(path: str, root_path: str) -> str:
    """``path`` relative to the prefix an app is mounted under (``root_path``)."""
    if root_path and path.startswith(root_path):
        rest = path[len(root_path) :]
        if not rest or rest.startswith("/"):
            return rest or "/"
    return path or "/"


def merge_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as one lower-case mapping; repeated headers are joined with ``, ``."""
    merged: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def read_limited(read: Callable[[int], bytes], limit: int) -> bytes:
    """Read a body with ``read(n)``, stopping after ``limit + 1`` bytes.

    A body over the limit is never buffered whole: the core sees ``limit + 1`` bytes and
    answers 413.
    """
    chunks: list[bytes] = []
    remaining = limit + 1
    while remaining > 0:
        chunk = read(min(remaining, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


async def aread_limited(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """Like :func:`read_limited`, over an async stream of chunks."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(parts)[: limit + 1]


#: Answers that carry no body (nor a Content-Type, nor a Content-Length).
NO_BODY = frozenset({204, 304})


def response_parts(reply: Reply) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body bytes of a reply (a 204 or 304 has no body and no
    Content-Type)."""
    headers = list(reply.headers)
    if reply.status in NO_BODY:
        return reply.status, headers, b""
    return reply.status, [("Content-Type", reply.content_type), *headers], reply.content


class StreamBody:
    """A WSGI body that is sent as it is produced (a :class:`Stream`, a call's events): the
    server's worker thread iterates it, each chunk made on the stream's event loop; the
    server's ``close()`` (the client left, or the stream ended) ends it there."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.stream)

    def close(self) -> None:
        self.stream.close()


def internal_error() -> tuple[int, list[tuple[str, str]], bytes]:
    """The answer to an exception raised by an adapter itself; logs it with its trace."""
    logger.exception("unexpected error in the HTTP adapter")
    return 500, [("Content-Type", JSON_CONTENT_TYPE)], INTERNAL_ERROR_BODY


_SEGMENT = re.compile(r"\{(\w+)\}")


def framework_path(path: str, opening: str, closing: str) -> str:
    """A route path in a framework's own syntax: ``{call_id}`` -> ``<call_id>`` (Flask, Django)."""
    return _SEGMENT.sub(lambda m: f"{opening}{m.group(1)}{closing}", path)


def filled_path(path: str, params: Mapping[str, object]) -> str:
    """The path a request used below its prefix: the route's ``{name}`` segments filled in."""
    return _SEGMENT.sub(lambda m: str(params[m.group(1)]), path) if "{" in path else path
