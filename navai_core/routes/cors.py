"""CORS decisions: which origins may call navai from a browser, the headers to send, the
answer to a preflight (204, or 403 for an origin that is not allowed) and the log of
refused origins."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from .._http import Reply, RequestContext

logger = logging.getLogger("navai")

_LOCAL_ORIGIN = re.compile(r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$")
ALLOWED_REQUEST_HEADERS = "Content-Type, Authorization"
MAX_AGE_SECONDS = "600"
ORIGIN_REFUSED = "Origin not allowed."
_VARY = (("Vary", "Origin"),)
# A refused origin is logged at most once per this many seconds; at most this many are
# remembered (a flood of made-up origins cannot grow memory, it only logs more).
REFUSAL_LOG_SECONDS = 300.0
REFUSALS_REMEMBERED = 256


_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+$", re.IGNORECASE)


def cors_problems(origins: tuple[str, ...] | None, allow_credentials: bool) -> list[str]:
    """Start-up warnings of the CORS settings."""
    found = [
        f'NAVAI_CORS_ORIGIN entry "{origin}" has no scheme or is not an origin: '
        'browsers send "https://host[:port]", which it never matches.'
        for origin in origins or ()
        if origin != "*" and not _ORIGIN.match(origin)
    ]
    if allow_credentials and origins and "*" in origins:
        found.append(
            'NAVAI_CORS_ALLOW_CREDENTIALS needs the allowed origins listed, not "*": '
            "credentials are not allowed."
        )
    return found


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


class LogThrottle:
    """Says whether to log about ``key`` now: at most once per ``seconds`` per key, with at
    most ``remembered`` keys kept (a flood of made-up keys cannot grow memory, it only logs
    more). Thread-safe."""

    def __init__(
        self, seconds: float = REFUSAL_LOG_SECONDS, remembered: int = REFUSALS_REMEMBERED
    ) -> None:
        self.seconds = seconds
        self.remembered = remembered
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.seconds:
                return False
            if len(self._last) >= self.remembered:
                self._last.clear()
            self._last[key] = now
            return True


class Cors:
    """The CORS policy of one server (``origins`` and ``credentials`` as
    :attr:`NavaiConfig.cors_origins` and :attr:`NavaiConfig.cors_allow_credentials`)."""

    def __init__(self, origins: tuple[str, ...] | None, credentials: bool = False) -> None:
        self.origins = origins
        self.credentials = credentials
        self._refusals = LogThrottle()

    def preflight(self, context: RequestContext, methods: tuple[str, ...]) -> Reply:
        """The answer to ``OPTIONS``: 204 with the CORS headers, or 403 for a foreign origin
        (``OPTIONS`` without an ``Origin`` only lists the methods)."""
        origin = context.header("origin")
        headers = preflight_headers(
            self.origins,
            origin,
            methods,
            context.header("access-control-request-headers"),
            self.credentials,
        )
        if origin and not headers:
            self._log_refusal(origin)
            return Reply(403, {"error": ORIGIN_REFUSED}, _VARY)
        return Reply(204, None, (("Allow", ", ".join(methods)), *headers))

    def apply(self, context: RequestContext, reply: Reply) -> Reply:
        """``reply`` with the CORS headers the request's origin gets (a preflight answer
        already has its own)."""
        if context.method.upper() == "OPTIONS":
            return reply
        origin = context.header("origin")
        if not origin:
            return reply
        headers = cors_headers(self.origins, origin, self.credentials)
        if headers:
            return reply.with_headers(*headers)
        if urlsplit(origin).netloc != context.header("host"):
            self._log_refusal(origin)  # a cross-origin request; same-origin ones are fine
        # Another origin may get this answer with CORS headers: caches must tell them apart.
        return reply.with_headers(*_VARY)

    def _log_refusal(self, origin: str) -> None:
        if not self._refusals.allow(origin):
            return
        logger.warning(
            "refused a request from origin %r: not in NAVAI_CORS_ORIGIN%s",
            origin[:200],
            " (default: localhost only)" if self.origins is None else "",
        )
