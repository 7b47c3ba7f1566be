"""Standard Webhooks signatures (https://www.standardwebhooks.com), as pure functions.

OpenAI signs each webhook delivery with three headers: ``webhook-id``, ``webhook-timestamp``
(Unix seconds) and ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries
of ``"<id>.<timestamp>.<raw body>"``, keyed with the base64 part of the endpoint's
``whsec_...`` secret (several entries while a secret is being rotated).
:func:`verify_webhook` checks them over the body exactly as received (bytes, never a
re-encoded parse); :func:`sign_webhook` makes them (tests, local tools).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping

import attrs

from .._errors import ConfigurationError, InvalidWebhook

SECRET_PREFIX = "whsec_"
# How far (seconds) a delivery's timestamp may be from the receiver's clock, either way.
DEFAULT_TOLERANCE_SECONDS = 300
# Entries of one signature header that are looked at (a rotation sends two or three).
MAX_SIGNATURES = 16
MAX_WEBHOOK_ID_CHARS = 256

INVALID_SECRET = "OPENAI_WEBHOOK_SECRET is not a valid whsec_ secret (base64 after whsec_)."
MISSING_HEADERS = "Missing webhook-id, webhook-timestamp or webhook-signature header."
BAD_TIMESTAMP = "Invalid webhook-timestamp."
STALE_TIMESTAMP = "Webhook timestamp is too far from the current time."
NO_MATCH = "No matching webhook signature."

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


@attrs.frozen
class WebhookHeaders:
    """The three signature headers of one verified delivery."""

    webhook_id: str
    timestamp: int


def decode_webhook_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (padding may be left out).

    Raises :class:`ConfigurationError` (never showing the secret) when it is not one.
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ConfigurationError(INVALID_SECRET, status_code=500)
    text = secret[len(SECRET_PREFIX) :].strip()
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(INVALID_SECRET, status_code=500) from None
    if not key:
        raise ConfigurationError(INVALID_SECRET, status_code=500)
    return key


def webhook_secret_problem(secret: str | None) -> str | None:
    """Why ``secret`` cannot be used (for start-up warnings), or None."""
    if secret is None:
        return None
    try:
        decode_webhook_secret(secret)
    except ConfigurationError as exc:
        return exc.message
    return None


def _digest(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    # Header values reach navai as latin-1 text (WSGI and ASGI alike), which maps back to
    # the bytes that were sent, and therefore signed.
    signed = f"{webhook_id}.{timestamp}.".encode("latin-1") + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of a delivery: ``v1,<base64>``."""
    key = decode_webhook_secret(secret)
    digest = _digest(key, webhook_id, str(int(timestamp)), body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def webhook_headers(
    secret: str, webhook_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers of a signed delivery of ``body`` (``timestamp`` default: now)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_webhook(secret, webhook_id, ts, body),
    }


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> WebhookHeaders:
    """Check a delivery's signature headers (lower-case names) over the raw ``body``.

    Any ``v1`` entry of ``webhook-signature`` may match (entries of other versions are
    skipped); each is compared in constant time. Raises :class:`InvalidWebhook` when a
    header is missing, the timestamp is not Unix seconds or is more than ``tolerance``
    seconds from ``now`` (either way), or no entry matches; :class:`ConfigurationError` when
    ``secret`` is not a ``whsec_`` secret.
    """
    key = decode_webhook_secret(secret)
    webhook_id = (headers.get("webhook-id") or "").strip()
    timestamp = (headers.get("webhook-timestamp") or "").strip()
    signatures = (headers.get("webhook-signature") or "").strip()
    if not (webhook_id and timestamp and signatures) or len(webhook_id) > MAX_WEBHOOK_ID_CHARS:
        raise InvalidWebhook(MISSING_HEADERS)
    if not _TIMESTAMP.fullmatch(timestamp):
        raise InvalidWebhook(BAD_TIMESTAMP)
    seconds = int(timestamp)
    current = time.time() if now is None else now
    if abs(current - seconds) > tolerance:
        raise InvalidWebhook(STALE_TIMESTAMP)
    try:
        expected = _digest(key, webhook_id, timestamp, body)
    except UnicodeEncodeError:
        raise InvalidWebhook(MISSING_HEADERS) from None
    matched = False
    for entry in signatures.split()[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Every entry is compared (no early exit), each in constant time.
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidWebhook(NO_MATCH)
    return WebhookHeaders(webhook_id, seconds)
