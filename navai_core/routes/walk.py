"""The way every request goes: match its route once, admit it, the route's hook and rate
limit, its guard, its plan, the one I/O step the plan may leave.

``handle`` (sync servers) and ``ahandle`` (async servers) walk a route's row the same way
and differ only in performing the I/O. The walk knows nothing of a route's name: what a
route does is its row in ``routes/table.py``.
"""

from __future__ import annotations

import logging
from typing import Any

from .._config import NavaiConfig
from .._errors import MethodNotAllowed, NavaiError, NotFound, UpstreamError
from .._hooks import aauthorize, authorize
from .._http import Reply, RequestContext
from ..limits.rate import RateLimiter, client_key
from .body import (
    AsyncBodySource,
    BodySource,
    ReadFailed,
    aread,
    check_declared_size,
    parse_json_body,
    read,
    too_large,
)
from .cors import Cors
from .table import Route, RouteMatch, Server, Step, match

logger = logging.getLogger("navai")

INTERNAL_ERROR = "Internal server error."
NO_STORE = ("Cache-Control", "no-store")


class RequestWalk:
    """Answers requests to ``routes`` for ``server`` (what plans and steps use)."""

    def __init__(
        self,
        server: Server,
        routes: tuple[Route, ...],
        *,
        config: NavaiConfig,
        rate_limiter: RateLimiter,
    ) -> None:
        self.server = server
        self.routes = routes
        self.config = config
        self.rate_limiter = rate_limiter
        self.cors = Cors(config.cors_origins, config.cors_allow_credentials)

    def match(self, path: str) -> RouteMatch | None:
        return match(self.routes, path)

    def handle(self, context: RequestContext, body: BodySource = b"") -> Reply:
        """Answer one request from sync code; ``body`` as for ``Navai.handle``."""
        found = match(self.routes, context.path)
        route = found.route if found is not None else None
        try:
            admitted = self._admit(route, context)
            if isinstance(admitted, Reply):
                return self._finish(route, context, admitted)
            authorize(admitted.authorize, context, self.server.concurrency)
            self.rate_limiter.check(admitted.limit, admitted.bucket, self._client_key(context))
            if admitted.guard is not None:
                admitted.guard.check(self.server, context)
            if admitted.needs_functions:
                self.server.functions()
            data = read(body, self.config.max_body_bytes) if admitted.reads_body else b""
            step = self._plan(found, context, data)
            reply = step if isinstance(step, Reply) else step.run(self.server)
        except ReadFailed as failed:
            raise failed.error from None
        except Exception as exc:
            reply = self._error_reply(exc)
        return self._finish(route, context, reply)

    async def ahandle(self, context: RequestContext, body: AsyncBodySource = b"") -> Reply:
        """Answer one request from async code; ``body`` as for ``Navai.ahandle``."""
        found = match(self.routes, context.path)
        route = found.route if found is not None else None
        try:
            admitted = self._admit(route, context)
            if isinstance(admitted, Reply):
                return self._finish(route, context, admitted)
            await aauthorize(admitted.authorize, context, self.server.concurrency)
            key = self._client_key(context)
            await self.rate_limiter.acheck(admitted.limit, admitted.bucket, key)
            if admitted.guard is not None:
                await admitted.guard.acheck(self.server, context)
            if admitted.needs_functions:
                await self.server.afunctions()
            data = await aread(body, self.config.max_body_bytes) if admitted.reads_body else b""
            step = self._plan(found, context, data)
            reply = step if isinstance(step, Reply) else await step.arun(self.server)
        except ReadFailed as failed:
            raise failed.error from None
        except Exception as exc:
            reply = self._error_reply(exc)
        return self._finish(route, context, reply)

    # ----- the decisions both tails share (no I/O) ---------------------------------------

    def _admit(self, route: Route | None, context: RequestContext) -> Route | Reply:
        """The route to run, or the final answer: 404, 405, 413 by ``Content-Length``, or the
        CORS preflight's."""
        if route is None:
            raise NotFound("Not found.")
        method = context.method.upper()
        if method == "OPTIONS":
            return self.cors.preflight(context, route.allowed)
        if method not in route.methods:
            raise MethodNotAllowed(route.allowed)
        if route.reads_body:
            check_declared_size(context, self.config.max_body_bytes)
        return route

    def _plan(self, found: RouteMatch | None, context: RequestContext, body: bytes) -> Reply | Step:
        assert found is not None
        route, plan = found.route, found.route.plan
        assert plan is not None
        limit = self.config.max_body_bytes
        parsed: Any = None
        if route.raw_body:
            if len(body) > limit:
                raise too_large(limit)
            parsed = body
        elif route.reads_body:
            parsed = parse_json_body(context, body, limit)
        return plan(self.server, context, parsed, found)

    def _finish(self, route: Route | None, context: RequestContext, reply: Reply) -> Reply:
        if route is not None and route.no_store:
            reply = reply.with_headers(NO_STORE)
        return self.cors.apply(context, reply)

    def _error_reply(self, exc: Exception) -> Reply:
        if isinstance(exc, UpstreamError):
            logger.warning(
                "%s (status %s, request id %s)",
                exc.message[:500],
                exc.status_code,
                exc.extra.get("request_id", "-"),
            )
        if isinstance(exc, NavaiError):
            return exc.to_reply()
        logger.exception("unexpected error while answering a request")
        return Reply(500, {"error": INTERNAL_ERROR})

    def _client_key(self, context: RequestContext) -> str:
        return client_key(self.config.rate_limit_key, context)
