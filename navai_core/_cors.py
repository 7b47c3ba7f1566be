"""CORS decisions: which origins may call navai from a browser, and the headers to send."""

from __future__ import annotations

import re
from collections.abc import Iterable

_LOCAL_ORIGIN = re.compile(r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$")
ALLOWED_REQUEST_HEADERS = "Content-Type, Authorization"
MAX_AGE_SECONDS = "600"


def origin_allowed(origins: tuple[str, ...] | None, origin: str) -> bool:
    """``origins`` None: only http(s) localhost/127.0.0.1 origins, any port; ``*``: any."""
    if origins is None:
        return _LOCAL_ORIGIN.match(origin) is not None
    return "*" in origins or origin.rstrip("/") in origins


def cors_headers(
    origins: tuple[str, ...] | None, origin: str | None, credentials: bool = False
) -> tuple[tuple[str, str], ...]:
    """Headers for a reply to a request from ``origin`` (none when it is not allowed).

    ``credentials`` allows cookies for an origin that is named or local; never with ``*``.
    """
    if not origin or not origin_allowed(origins, origin):
        return ()
    if origins is not None and "*" in origins:
        return (("Access-Control-Allow-Origin", "*"),)
    allow = (("Access-Control-Allow-Origin", origin), ("Vary", "Origin"))
    return (*allow, ("Access-Control-Allow-Credentials", "true")) if credentials else allow


def preflight_headers(
    origins: tuple[str, ...] | None,
    origin: str | None,
    methods: Iterable[str],
    requested_headers: str | None,
    credentials: bool = False,
) -> tuple[tuple[str, str], ...]:
    base = cors_headers(origins, origin, credentials)
    if not base:
        return ()
    return (
        *base,
        ("Access-Control-Allow-Methods", ", ".join(methods)),
        ("Access-Control-Allow-Headers", requested_headers or ALLOWED_REQUEST_HEADERS),
        ("Access-Control-Max-Age", MAX_AGE_SECONDS),
    )
