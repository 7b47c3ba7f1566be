"""The ASGI adapter: navai as a Starlette app, or as routes for your own Starlette/FastAPI app.

    app = create_app()                        # uvicorn --factory navai_adapters.asgi:create_app
    parent.mount("/voice", create_app())      # mounted: navai sees paths below the prefix
    Starlette(routes=[*routes(navai), ...])   # or its routes in your own router

Every request goes to :meth:`navai_core.Navai.ahandle`; this module only translates. Sync
backend functions run in a worker thread (the core does that); the async httpx2 client is
opened at start-up and closed at shutdown by the lifespan.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import attrs
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from navai_core import Navai, NavaiConfig, RequestContext

from ._common import aread_limited, get_navai, internal_error, merge_headers, response_parts
from ._common import route_path as _route_path

if TYPE_CHECKING:
    from navai_core.functions.registry import FunctionRegistry

__all__ = ["NavaiEndpoint", "create_app", "lifespan", "request_context", "routes"]

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


def request_context(request: Request) -> RequestContext:
    """The framework-neutral view of a Starlette request (path relative to the mount)."""
    scope = request.scope
    client = scope.get("client")
    return RequestContext(
        method=scope["method"],
        path=_route_path(scope["path"], scope.get("root_path", "")),
        # Straight from the ASGI scope: about 1 us cheaper than Starlette's Headers.
        headers=merge_headers(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ),
        client=client[0] if client else None,
        query_string=scope.get("query_string", b"").decode("latin-1"),
        raw=request,
    )


class NavaiEndpoint:
    """An ASGI app that answers every HTTP request with ``navai.ahandle``.

    Paths navai does not know answer 404 JSON. Use it as the endpoint of a Starlette
    ``Route`` (it accepts every method: the core answers 405 with ``Allow``).
    """

    def __init__(self, navai: Navai) -> None:
        self.navai = navai

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await _navai_response(self.navai, request, lambda: request_context(request))
        if response is not None:  # (None: nobody is left to answer)
            await response(scope, receive, send)


async def _navai_response(
    navai: Navai, request: Request, context: Callable[[], RequestContext]
) -> Response | None:
    """navai's answer to ``request`` (seen as ``context()``) as a Starlette response, its
    body read by the core once hooks and rate limits have passed; None when the client
    left. Whatever fails here answers navai's generic 500."""
    try:
        reply = await navai.ahandle(context(), lambda limit: aread_limited(request.stream(), limit))
        if reply.stream is not None:  # sent as it is produced (a call's events)
            status, headers, content = response_parts(attrs.evolve(reply, encoded=b""))
            response: Response = StreamingResponse(reply.stream, status_code=status)
        else:
            status, headers, content = response_parts(reply)
            response = Response(content, status_code=status)
    except ClientDisconnect:
        return None
    except Exception:
        status, headers, content = internal_error()
        response = Response(content, status_code=status)
    response.raw_headers.extend(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
    )
    return response


def routes(navai: Navai) -> list[BaseRoute]:
    """One Starlette route per navai route, for your own ``Starlette(routes=...)`` or FastAPI
    app (``app.router.routes.extend(routes(navai))``).

    Your app's lifespan should then run :func:`lifespan` (it closes the httpx2 client).
    """
    endpoint = NavaiEndpoint(navai)
    return [StarletteRoute(r.path, endpoint, name=f"navai_{r.name}") for r in navai.routes]


def lifespan(navai: Navai, *, load_functions_at_startup: bool = True) -> Lifespan:
    """A lifespan for Starlette/FastAPI: open navai's async httpx2 client and log the
    start-up report; at shutdown, close navai's httpx2 clients.

    With ``load_functions_at_startup`` the function registry is built (in a worker thread)
    and every warning logged before the first request; otherwise the registry is built on
    first use and only configuration problems are logged at start-up.
    """

    @contextlib.asynccontextmanager
    async def navai_lifespan(app: object) -> AsyncIterator[None]:
        navai.async_http_client()  # open the upstream connection pool now
        if load_functions_at_startup:
            await anyio.to_thread.run_sync(navai.log_startup)
        else:
            navai.log_startup(load_functions=False)
        try:
            yield
        finally:
            await navai.aclose()

    return navai_lifespan


def create_app(
    navai: Navai | None = None,
    *,
    config: NavaiConfig | None = None,
    functions: FunctionRegistry | None = None,
    load_functions_at_startup: bool = True,
) -> Starlette:
    """A Starlette app that serves navai's routes (every other path answers 404 JSON).

    Pass a :class:`Navai`, or a ``config`` and/or ``functions`` registry to build one
    (default: ``NavaiConfig.from_env()``). The app's ``state.navai`` is the instance served.
    Run it on its own or ``mount`` it in a Starlette/FastAPI app, under a prefix if you like;
    a mounted app's lifespan does not run, so add :func:`lifespan` to the parent's.
    """
    navai = get_navai(navai, config, functions)
    endpoint = NavaiEndpoint(navai)
    app = Starlette(
        routes=[StarletteRoute("/{path:path}", endpoint, name="navai")],
        lifespan=lifespan(navai, load_functions_at_startup=load_functions_at_startup),
    )
    not_found = app.router.default

    async def unmatched(scope: Scope, receive: Receive, send: Send) -> None:
        # ``{path:path}`` does not match a path holding a newline (``%0A``): navai answers
        # it too (a JSON 404), not Starlette's text one.
        if scope["type"] == "http":
            await endpoint(scope, receive, send)
        else:
            await not_found(scope, receive, send)

    app.router.default = unmatched
    app.state.navai = navai
    return app
