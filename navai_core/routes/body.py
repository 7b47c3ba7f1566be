"""The rules of a request body, in one place: size (413), media type (415), JSON (400), and
the shape every JSON route expects (an object, optional string fields)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

from .._errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from .._http import RequestContext
from .._json import loads

NOT_JSON = "Request body is not valid JSON."
NOT_AN_OBJECT = "Request body must be a JSON object."
JSON_MEDIA_TYPE = "application/json"


#: A body as bytes, or a reader the core calls (with the size limit) once the request has
#: passed its route's checks, hooks and rate limit: a refused request is never read.
BodySource: TypeAlias = "bytes | Callable[[int], bytes]"
AsyncBodySource: TypeAlias = "bytes | Callable[[int], Awaitable[bytes]]"


class ReadFailed(Exception):
    """The adapter's body reader raised ``error`` (a client that went away, say): the
    adapter, not the core, knows what that means, so it gets the error back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than {limit} bytes.")


def check_declared_size(context: RequestContext, limit: int) -> None:
    """413 before reading when ``Content-Length`` already says the body is too large (so
    an ``Expect: 100-continue`` client is never told to send it)."""
    declared = context.header("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(limit)


def read(body: BodySource, limit: int) -> bytes:
    if isinstance(body, bytes):
        return body
    try:
        return body(limit)
    except Exception as exc:
        raise ReadFailed(exc) from exc


async def aread(body: AsyncBodySource, limit: int) -> bytes:
    if isinstance(body, bytes):
        return body
    try:
        return await body(limit)
    except Exception as exc:
        raise ReadFailed(exc) from exc


def parse_json_body(
    context: RequestContext,
    body: bytes,
    limit: int,
    accepted: tuple[str, ...] = (JSON_MEDIA_TYPE,),
) -> dict[str, Any] | None:
    """The JSON object a request carries (``None`` for an empty body), or the error to answer.

    ``accepted``: every media type the route reads, named by the 415 a body of another type
    gets (a route that also reads SDP names both)."""
    if len(body) > limit:
        raise too_large(limit)
    # Declared JSON, even when empty: a page can send any other type (or none, from a
    # ``no-cors`` fetch) to another site without a CORS preflight, JSON it cannot.
    content_type = (context.header("content-type") or "").split(";")[0].strip().lower()
    if not (content_type == JSON_MEDIA_TYPE or content_type.endswith("+json")):
        raise UnsupportedMediaType(accepted)
    if not body.strip():
        return None
    try:
        parsed = loads(body)
    except (ValueError, RecursionError):
        raise BadRequest(NOT_JSON) from None
    return require_object(parsed)


def require_object(body: object) -> dict[str, Any]:
    """``body`` when it is a JSON object, else the 400 every JSON route answers."""
    if not isinstance(body, dict):
        raise BadRequest(NOT_AN_OBJECT)
    return body


def read_string_fields(body: object, fields: Iterable[str]) -> dict[str, str | None]:
    """Read optional string ``fields`` of a JSON request body.

    ``None`` (an empty body) counts as ``{}``. Anything but an object, or a listed field that
    is neither a string nor null, is a 400 naming the problem. Unlisted keys are ignored.
    """
    if body is None:
        return dict.fromkeys(fields)
    body = require_object(body)
    values: dict[str, str | None] = {}
    for name in fields:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f'Field "{name}" must be a string.')
        values[name] = value
    return values
