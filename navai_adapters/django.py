"""navai in a Django project, through ``include()``: its routes are Django views.

    # urls.py
    urlpatterns = [path("voice/", include(navai_urls(navai))), ...]

Django's middleware (sessions, ``request.user``, your own) runs for navai's routes, which are
named in the ``navai`` namespace (``reverse("navai:execute")``). The views are async, so they
run on the server's event loop under ASGI (``Navai.ahandle``; a sync view would share Django's
one thread for sync code); under WSGI Django runs each on a loop of its own for that request
and they answer with ``Navai.handle``. They are CSRF-exempt: navai accepts only JSON bodies,
which a browser posts across sites only after a CORS preflight that navai answers for its
allowed origins alone (docs/security.md). Each view only translates between Django and the
core.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path

from navai_core import Navai, NavaiConfig, RequestContext

from ._common import (
    StreamBody,
    filled_path,
    framework_path,
    get_navai,
    internal_error,
    merge_headers,
    read_limited,
    response_parts,
)

if TYPE_CHECKING:
    from navai_core._navai import Route
    from navai_core.functions.registry import FunctionRegistry

__all__ = ["navai_urls", "request_context"]

View = Callable[..., Awaitable[HttpResponse | StreamingHttpResponse]]


def request_context(request: HttpRequest, path: str) -> RequestContext:
    """The framework-neutral view of a Django request, for the navai route at ``path``."""
    meta = request.META
    return RequestContext(
        method=request.method or "GET",
        path=path,
        headers=merge_headers(request.headers.items()),
        client=meta.get("REMOTE_ADDR") or None,
        query_string=meta.get("QUERY_STRING", ""),
        raw=request,
    )


def navai_urls(
    navai: Navai | None = None,
    *,
    config: NavaiConfig | None = None,
    functions: FunctionRegistry | None = None,
    load_functions_at_startup: bool = True,
) -> tuple[list[URLPattern], str]:
    """navai's URL patterns and their namespace, for ``include(navai_urls(navai))``.

    Pass a :class:`Navai`, or a ``config`` and/or ``functions`` registry to build one
    (default: ``NavaiConfig.from_env()``). Start-up warnings are logged here; with
    ``load_functions_at_startup`` the function registry is built now, otherwise on first
    use (once).
    """
    navai = get_navai(navai, config, functions)
    navai.log_startup(load_functions=load_functions_at_startup)
    patterns = [
        path(framework_path(route.path, "<", ">").lstrip("/"), _view(navai, route), name=route.name)
        for route in navai.routes
    ]
    return patterns, "navai"


def _view(navai: Navai, route: Route) -> View:
    async def view(request: HttpRequest, **params: str) -> HttpResponse | StreamingHttpResponse:
        context = request_context(request, filled_path(route.path, params))

        def body(limit: int) -> bytes:  # read by the core once hooks and limits have passed
            return read_limited(request.read, limit)

        async def abody(limit: int) -> bytes:
            # Django's ASGI handler has already spooled the body (to memory or a temp file).
            return body(limit)

        try:
            if isinstance(request, ASGIRequest):
                reply = await navai.ahandle(context, abody)
            else:
                # WSGI: Django runs this coroutine on a loop of its own for this one
                # request; navai's sync path sends upstream on its own background loop.
                reply = navai.handle(context, body)
            if reply.stream is not None:  # sent as it is produced (a call's events)
                status, headers, _ = response_parts(attrs.evolve(reply, encoded=b""))
                chunks: Any = reply.stream
                if not isinstance(request, ASGIRequest):
                    chunks = StreamBody(reply.stream)  # iterated by the WSGI worker thread
                return StreamingHttpResponse(chunks, status=status, headers=dict(headers))
            status, headers, content = response_parts(reply)
        except Exception:  # a client gone while its body was read: still a JSON answer
            status, headers, content = internal_error()
        merged: dict[str, str] = {}
        for name, value in headers:
            merged[name] = f"{merged[name]}, {value}" if name in merged else value
        response = HttpResponse(content, status=status, headers=merged)
        if "Content-Type" not in merged:
            del response.headers["Content-Type"]  # a 204 has none
        return response

    view.csrf_exempt = True  # type: ignore[attr-defined]  # why: see the module docstring
    view.__name__ = f"navai_{route.name}"
    return view
