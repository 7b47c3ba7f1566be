"""The playground page ``navai serve`` offers at ``/`` (CONTRACT §14; docs/calls.md, "Playground").

One static, self-contained HTML file (``index.html`` beside this module: no external script,
style or font, no build step) and a small JSON status it reads, ``/playground.json``: which
routes this server has and what is missing (no OpenAI key, no functions). ``navai serve``
wraps its app with :func:`asgi` or :func:`wsgi` when :func:`enabled` says so: on by default
when it listens on loopback, off otherwise, and ``NAVAI_PLAYGROUND=true|false`` decides.

The framework integrations never serve it on their own. To mount it next to navai in your own
ASGI or WSGI app (development only: it lets whoever reaches the page start calls)::

    from navai_adapters import playground
    app = playground.asgi(create_app(navai), navai)      # or playground.wsgi(wsgi_app, navai)
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from navai_core import Navai

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ENV", "PAGE_PATH", "STATUS_PATH", "asgi", "enabled", "page", "status", "wsgi"]

#: The environment variable that switches the page on or off.
ENV = "NAVAI_PLAYGROUND"
PAGE_PATH = "/"
STATUS_PATH = "/playground.json"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def enabled(host: str, environ: Mapping[str, str]) -> bool:
    """Whether ``navai serve`` on ``host`` serves the page: ``NAVAI_PLAYGROUND`` when set,
    else only on a loopback address. Raises ``ValueError`` for a value that is no flag."""
    raw = environ.get(ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw:
        raise ValueError(f"{ENV} must be true or false, got {environ[ENV].strip()!r}")
    return _loopback(host)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def page() -> bytes:
    """The page's HTML."""
    return resources.files(__name__).joinpath("index.html").read_bytes()


@lru_cache(maxsize=1)
def _headers() -> tuple[tuple[str, str], ...]:
    """The page's headers: its one inline script and style allowed by hash, nothing else
    loaded from anywhere, and requests to its own origin only."""
    text = page().decode()

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.S)
        digests = (base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in found)
        return " ".join(f"'sha256-{d}'" for d in digests)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return (
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("content-security-policy", policy),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    )


def status(navai: Navai) -> dict[str, Any]:
    """What the page needs to know about this server (no secret: only whether one is set)."""
    config = navai.config
    if config.provider == "azure":
        key = config.azure_api_key is not None or config.azure_token_provider is not None
        key_name = "AZURE_OPENAI_API_KEY"
    else:
        key = config.openai_api_key is not None
        key_name = "OPENAI_API_KEY"
    functions = config.functions_enabled
    return {
        "api_key": key,
        "api_key_setting": key_name,
        "api_key_from_request": config.allow_api_key_from_request,
        "calls_path": config.calls_path,
        "functions_path": config.functions_path if functions else None,
        "execute_path": config.execute_path if functions and config.browser_execute else None,
        "model": config.model,
        "voice": config.voice,
    }


def _status_body(navai: Navai) -> bytes:
    return json.dumps(status(navai)).encode()


_JSON_HEADERS = (("content-type", "application/json"), ("cache-control", "no-store"))


def _answer(navai: Navai, method: str, path: str) -> tuple[int, Iterable[tuple[str, str]], bytes]:
    """The page or the status for ``GET``/``HEAD`` (else 405)."""
    if method not in ("GET", "HEAD"):
        allow = (("allow", "GET, HEAD"), *_JSON_HEADERS)
        return 405, allow, b'{"error": "Method not allowed."}'
    if path == PAGE_PATH:
        return 200, _headers(), page()
    return 200, _JSON_HEADERS, _status_body(navai)


def asgi(app: Any, navai: Navai) -> Any:
    """``app`` with the page at ``/`` and its status at ``/playground.json``."""

    async def served(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in (PAGE_PATH, STATUS_PATH):
            await app(scope, receive, send)
            return
        status_code, headers, body = _answer(navai, scope["method"], path)
        raw = [(k.encode(), v.encode()) for k, v in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status_code, "headers": raw})
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})

    return served


def wsgi(app: WSGIApplication, navai: Navai) -> WSGIApplication:
    """``app`` with the page at ``/`` and its status at ``/playground.json``."""

    def served(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path not in (PAGE_PATH, STATUS_PATH):
            return app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        status_code, headers, body = _answer(navai, method, path)
        reason = {200: "OK", 405: "Method Not Allowed"}[status_code]
        start_response(f"{status_code} {reason}", [*headers, ("content-length", str(len(body)))])
        return [b"" if method == "HEAD" else body]

    return served
