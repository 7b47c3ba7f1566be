"""navai as a FastAPI ``APIRouter``: its routes in your app's OpenAPI document and ``/docs``.

    app = FastAPI()
    app.include_router(navai_router(navai), prefix="/voice",
                       dependencies=[Depends(current_user)])   # FastAPI's own authorisation

Each navai route becomes an ``APIRoute`` whose request body and answers are documented with
the schemas of navai's own OpenAPI document (:meth:`navai_core.Navai.openapi`). The endpoint
only translates: it hands the raw body and a :class:`~navai_core.RequestContext` to
:meth:`navai_core.Navai.ahandle` and returns its reply, so every rule (CORS, limits, hooks,
validation, errors) is the core's. Other methods on the same paths (``OPTIONS`` preflights,
405s) reach the core through a hidden route that runs no dependency, as a browser's preflight
carries no credentials. The router's lifespan (merged into the app's by ``include_router``)
builds the function registry at start-up and closes navai's httpx2 clients at shutdown.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING

import attrs
from fastapi import APIRouter
from fastapi.params import Depends
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from navai_core import Navai, NavaiConfig, RequestContext

from ._common import filled_path, get_navai
from .asgi import _navai_response, lifespan, request_context

if TYPE_CHECKING:
    from navai_core._navai import Route
    from navai_core.functions.registry import FunctionRegistry

__all__ = ["navai_router"]

Endpoint = Callable[[Request], Awaitable[Response]]


def navai_router(
    navai: Navai | None = None,
    *,
    config: NavaiConfig | None = None,
    functions: FunctionRegistry | None = None,
    dependencies: Sequence[Depends] | None = None,
    tags: list[str | Enum] | None = None,
    load_functions_at_startup: bool = True,
) -> APIRouter:
    """An ``APIRouter`` serving navai's routes, for ``app.include_router(router, prefix=...)``.

    Pass a :class:`Navai`, or a ``config`` and/or ``functions`` registry to build one
    (default: ``NavaiConfig.from_env()``). ``dependencies`` (here or in ``include_router``)
    run before navai sees a request: raise ``HTTPException`` to refuse it, or store what a
    backend function needs on ``request.state`` (a function reads ``context.raw.state``).
    Operations are tagged ``tags`` (default ``["navai"]``).
    """
    navai = get_navai(navai, config, functions)
    router = APIRouter(
        tags=["navai"] if tags is None else tags,
        dependencies=dependencies,
        lifespan=lifespan(navai, load_functions_at_startup=load_functions_at_startup),
    )
    paths = navai.openapi()["paths"]
    for route in navai.routes:
        endpoint = _endpoint(navai, route)
        if route.signed:
            # OpenAI's webhook: its signature is its authorisation; the app's dependencies
            # (a user's session, a bearer token) would refuse every delivery.
            router.routes.append(
                StarletteRoute(route.path, _AnyMethod(endpoint), include_in_schema=False)
            )
            continue
        for method in route.methods:
            # The core's operation for this method (a route it does not document gets none).
            operation = paths.get(route.path, {}).get(method.lower(), {})
            ok = operation.get("responses", {}).get("200", {}).get("content", {})
            router.add_api_route(
                route.path,
                endpoint,
                methods=[method],
                # A 200 that is not JSON (a call's events stream): no JSON content added.
                response_class=Response if ok and "application/json" not in ok else JSONResponse,
                name=f"navai_{route.name}",
                summary=operation.get("summary"),
                operation_id=operation.get("operationId"),
                openapi_extra=copy.deepcopy(operation) or None,
            )
        # Every other method (preflight, 405) goes to the core too, without dependencies.
        router.routes.append(
            StarletteRoute(route.path, _AnyMethod(endpoint), include_in_schema=False)
        )
    return router


class _AnyMethod:
    """An endpoint as an ASGI app: a Starlette route to it accepts every method."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def _endpoint(navai: Navai, route: Route) -> Endpoint:
    """The endpoint of one navai route: the context's path is the route's own (no prefix)."""

    def context(request: Request) -> RequestContext:
        path = filled_path(route.path, request.path_params)
        return attrs.evolve(request_context(request), path=path)

    async def navai_endpoint(request: Request) -> Response:
        response = await _navai_response(navai, request, lambda: context(request))
        # (FastAPI needs a response even when nobody is left to read it.)
        return Response(status_code=400) if response is None else response

    navai_endpoint.__name__ = f"navai_{route.name}"
    return navai_endpoint
