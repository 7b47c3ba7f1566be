"""Sending an :class:`UpstreamRequest` with httpx: one sync and one async sender.

Everything that decides lives in the pure modules; these only do the I/O and turn
transport failures into errors that know their HTTP answer (502 unreachable, 504 timeout).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import httpx

from ._client_secret import UpstreamRequest
from ._errors import UpstreamTimeout, UpstreamUnavailable


@attrs.frozen
class UpstreamReply:
    status: int
    headers: httpx.Headers = attrs.field(repr=False)
    content: bytes = attrs.field(repr=False)

    @classmethod
    def of(cls, response: httpx.Response) -> UpstreamReply:
        return cls(response.status_code, response.headers, response.content)


@contextmanager
def _transport_errors(request: UpstreamRequest, timeout: float) -> Iterator[None]:
    """Turn httpx transport failures into 504 (timeout) or 502 (unreachable).

    Only the exception's class is shown: nothing of the request (headers, key) can leak.
    """
    try:
        yield
    except httpx.TimeoutException:
        raise UpstreamTimeout(f"{request.label} timed out after {timeout:g} seconds.") from None
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(
            f"{request.label} could not be reached ({type(exc).__name__})."
        ) from None


def _build(client: httpx.Client | httpx.AsyncClient, r: UpstreamRequest, t: float) -> httpx.Request:
    return client.build_request(r.method, r.url, headers=r.headers, content=r.content, timeout=t)


def send(client: httpx.Client, request: UpstreamRequest, timeout: float) -> UpstreamReply:
    with _transport_errors(request, timeout):
        return UpstreamReply.of(client.send(_build(client, request, timeout)))


async def asend(
    client: httpx.AsyncClient, request: UpstreamRequest, timeout: float
) -> UpstreamReply:
    with _transport_errors(request, timeout):
        return UpstreamReply.of(await client.send(_build(client, request, timeout)))
