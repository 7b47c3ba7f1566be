"""The rules of a request body, in one place: size (413), media type (415), JSON (400), and
the shape every JSON route expects (an object, optional string fields)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._errors import BadRequest, NavaiError, PayloadTooLarge
from ._http import RequestContext
from ._json import loads

NOT_JSON = "Request body is not valid JSON."
NOT_AN_OBJECT = "Request body must be a JSON object."
NOT_DECLARED_JSON = "Content-Type must be application/json."


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than {limit} bytes.")


def parse_json_body(context: RequestContext, body: bytes, limit: int) -> dict[str, Any] | None:
    """The JSON object a request carries (``None`` for an empty body), or the error to answer."""
    if len(body) > limit:
        raise too_large(limit)
    if not body.strip():
        return None
    content_type = (context.header("content-type") or "").split(";")[0].strip().lower()
    if content_type and not (content_type == "application/json" or content_type.endswith("+json")):
        raise NavaiError(NOT_DECLARED_JSON, status_code=415)
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
