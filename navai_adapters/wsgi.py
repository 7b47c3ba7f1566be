"""The WSGI adapter: navai as a WSGI app (Werkzeug), on its own or mounted in Flask/Django.

    app = create_app()   # waitress-serve --call navai_adapters.wsgi:create_app
    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app, {"/voice": create_app()})

Every request goes to :meth:`navai_core.Navai.handle`; this module only translates. The app
is thread-safe (run it on a threaded server). Async backend functions are run by the core on
one background event loop shared by every request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from navai_core import Navai, NavaiConfig, RequestContext

from ._common import (
    NO_BODY,
    StreamBody,
    get_navai,
    internal_error,
    read_limited,
    response_parts,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from navai_core.functions.registry import FunctionRegistry

__all__ = ["NavaiWSGIApp", "create_app", "request_context"]


def request_context(request: Request) -> RequestContext:
    """The framework-neutral view of a Werkzeug request (path relative to ``SCRIPT_NAME``)."""
    environ = request.environ
    return RequestContext(
        method=request.method,
        path=request.path,
        headers=_headers(environ),
        client=request.remote_addr,
        query_string=environ.get("QUERY_STRING", ""),
        raw=request,
    )


def _headers(environ: WSGIEnvironment) -> dict[str, str]:
    """The request headers of ``environ``, lower-case (as Werkzeug's ``EnvironHeaders``
    reads them, without building that object: the server already joined repeated ones)."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        name = _HEADER_NAMES.get(key)
        if name is None:
            name = _header_name(key)
            if len(_HEADER_NAMES) < _HEADER_NAMES_KEPT:
                _HEADER_NAMES[key] = name
        if name and (value or key[0] == "H"):  # (an empty CONTENT_TYPE/_LENGTH is none)
            headers[name] = value
    return headers


def _header_name(key: str) -> str:
    """The header an environ key holds (``HTTP_X_API_KEY`` -> ``x-api-key``), else ``""``."""
    if key.startswith("HTTP_") and key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
        return key[5:].replace("_", "-").lower()
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return key.replace("_", "-").lower()
    return ""


# Environ keys seen, and the header each holds: a bounded cache (clients choose the names).
_HEADER_NAMES: dict[str, str] = {}
_HEADER_NAMES_KEPT = 512


def _status_line(status: int) -> str:
    """The WSGI status line Werkzeug writes for ``status`` (``404 NOT FOUND``)."""
    return _STATUS_LINES.get(status) or f"{status} UNKNOWN"


_STATUS_LINES = {code: f"{code} {reason.upper()}" for code, reason in HTTP_STATUS_CODES.items()}


class NavaiWSGIApp:
    """A WSGI app that answers every request with ``navai.handle``.

    Paths navai does not know answer 404 JSON. ``navai`` is the instance served;
    ``close()`` releases its httpx2 client (call it when your server stops).
    """

    def __init__(self, navai: Navai) -> None:
        self.navai = navai

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            reply = self.navai.handle(
                request_context(request), lambda limit: read_limited(request.stream.read, limit)
            )
            if reply.stream is not None:  # sent as it is produced (a call's events)
                status, headers, _ = response_parts(attrs.evolve(reply, encoded=b""))
                start_response(_status_line(status), headers)
                return StreamBody(reply.stream)
            status, headers, content = response_parts(reply)
        except Exception:
            status, headers, content = internal_error()
        # Written directly, as Werkzeug's Response would: a Content-Length, and no body for
        # a 204 or 304 answer (nor their Content-Type) or a HEAD request.
        if status in NO_BODY:
            start_response(_status_line(status), headers)
            return []
        headers.append(("Content-Length", str(len(content))))
        start_response(_status_line(status), headers)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [content]

    def close(self) -> None:
        self.navai.close()


def create_app(
    navai: Navai | None = None,
    *,
    config: NavaiConfig | None = None,
    functions: FunctionRegistry | None = None,
    load_functions_at_startup: bool = True,
) -> NavaiWSGIApp:
    """A WSGI app that serves navai's routes (every other path answers 404 JSON).

    Pass a :class:`Navai`, or a ``config`` and/or ``functions`` registry to build one
    (default: ``NavaiConfig.from_env()``). Start-up warnings are logged here; with
    ``load_functions_at_startup`` the function registry is built now, otherwise on first use
    (once, even when the first requests arrive together).
    """
    navai = get_navai(navai, config, functions)
    navai.log_startup(load_functions=load_functions_at_startup)
    return NavaiWSGIApp(navai)
