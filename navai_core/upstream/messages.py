"""What navai sends to an upstream API and what it gets back: :class:`UpstreamRequest`,
:class:`UpstreamReply`, and the error a failed reply becomes (status passed on, secrets
redacted, sizes capped). Pure: the senders (``send.py``) and every request builder share them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._errors import NavaiError, UpstreamError
from .._json import JsonObject, JsonValue, dumps

# What of an upstream reply navai reads and echoes at most (a larger reply is a 502; a longer
# error body is cut): a faulty or hostile upstream cannot make an answer, or memory, balloon.
MAX_REPLY_BYTES = 1024 * 1024
MAX_ECHOED_CHARS = 2000
MAX_REQUEST_ID_CHARS = 200


@attrs.frozen
class UpstreamRequest:
    """One HTTP request to an upstream API, ready to send. Headers are hidden from repr."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    content: bytes = attrs.field(repr=False)
    # What failures are called in error texts, e.g. "OpenAI client_secrets".
    label: str = "upstream"
    # Values that must never appear in an error text built from this request.
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False, eq=False)
    # The most of the reply (decoded, so a compressed bomb counts its inflated size) that is
    # read; a larger reply is a 502.
    max_reply_bytes: int = attrs.field(default=MAX_REPLY_BYTES, repr=False, eq=False)

    def reply_too_large(self) -> UpstreamError:
        return UpstreamError(f"{self.label} replied with more than {self.max_reply_bytes} bytes.")


@attrs.frozen
class UpstreamReply:
    """What an upstream answered: status, headers (any case-insensitive mapping), body."""

    status: int
    headers: Mapping[str, str] = attrs.field(repr=False)
    content: bytes = attrs.field(repr=False)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """A decoded JSON value with every secret in its strings (keys too) redacted."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_redact_value(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(k, secrets): _redact_value(v, secrets) for k, v in value.items()}
    return value


def upstream_failure(
    request: UpstreamRequest,
    status: int,
    content: bytes,
    headers: Mapping[str, str] | None = None,
) -> NavaiError:
    """The error for a non-2xx upstream reply: its status and ``<label> failed: <body>``.

    The JSON answer also carries the upstream ``request_id`` (from ``x-request-id``) and
    the upstream error's ``message``/``type``/``code`` as ``upstream_error`` when present.
    Every value from the upstream is redacted *after* decoding (a key written with JSON
    escapes is still a key) and shortened: the body to ``MAX_ECHOED_CHARS``.
    """
    secrets = request.secrets
    text = redact(content.decode("utf-8", errors="replace"), secrets)
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if data is not None:
        clean = _redact_value(data, secrets)
        if clean != data:  # a secret hid behind escapes: echo the decoded, redacted JSON
            text = dumps(clean).decode()
        data = clean
    # Only a client or server error status is passed on; anything else is a bad gateway.
    passed = status if 400 <= status <= 599 else 502
    extra: dict[str, JsonValue] = {}
    if request_id := _request_id(headers):
        extra["request_id"] = _shorten(redact(request_id, secrets), MAX_REQUEST_ID_CHARS)
    if details := _upstream_error_fields(data):
        extra["upstream_error"] = details
    message = f"{request.label} failed: {_shorten(text, MAX_ECHOED_CHARS)}"
    retry_after = _header(headers, "retry-after")
    kept = (
        (("Retry-After", retry_after.strip()),)
        if passed in (429, 503) and retry_after and _RETRY_AFTER.match(retry_after.strip())
        else ()
    )
    return UpstreamError(message, status_code=passed, extra=extra, headers=kept)


# Seconds, or an HTTP date (RFC 9110 section 10.2.3), and nothing else passes on.
_RETRY_AFTER = re.compile(
    r"^(\d{1,9}|[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)$"
)


def _header(headers: Mapping[str, str] | None, wanted: str) -> str | None:
    for name, value in (headers or {}).items():
        if name.lower() == wanted:
            return value
    return None


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _request_id(headers: Mapping[str, str] | None) -> str | None:
    return _header(headers, "x-request-id") or _header(headers, "apim-request-id")


def _upstream_error_fields(data: object) -> JsonObject | None:
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    kept: JsonObject = {
        k: _shorten(v, MAX_ECHOED_CHARS) if isinstance(v, str) else v
        for k, v in error.items()
        if k in ("message", "type", "code") and (v is None or isinstance(v, (str, int)))
    }
    return kept or None


def parse_json_reply(request: UpstreamRequest, content: bytes) -> JsonObject:
    try:
        data: JsonValue = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamError(f"{request.label} returned a reply that is not JSON.") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"{request.label} returned JSON that is not an object.")
    return data
