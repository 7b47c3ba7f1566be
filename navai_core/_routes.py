"""navai's routes as rows of data.

Each :class:`RouteRow` says where a route answers (a setting naming its path), which methods
it takes, who may call it and how often (the settings of its hook and rate limit), whether it
reads a JSON body or needs the function registry, and its *plan*: a pure function from the
request to the final :class:`Reply` or one I/O :class:`Step`. ``routes_for(config)`` turns
the table into the :class:`Route` values one server answers; ``Navai.handle`` /
``Navai.ahandle`` only walk a route's row: admit, guard, plan, run the step.

To add a route, add a row (and its plan) here; nothing else dispatches on a route's name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import attrs
from limits import RateLimitItem

from ._client_secret import (
    UpstreamReply,
    UpstreamRequest,
    build_transcription_request,
    parse_client_secret_response,
)
from ._config import NavaiConfig, rate_limit
from ._dispatch import PreparedCall, aexecute, execute, prepare_call
from ._hooks import AuthHook
from ._http import Reply, RequestContext
from ._speech import build_speech_request, parse_speech_response
from ._upstream import asend

if TYPE_CHECKING:
    from ._navai import Navai


class Step(Protocol):
    """The one I/O step a plan may leave: ``run`` from sync code, ``arun`` from async code."""

    def run(self, navai: Navai) -> Reply: ...

    def arun(self, navai: Navai) -> Awaitable[Reply]: ...


#: ``plan(navai, context, body)``: ``body`` is the request's JSON object (``None`` when empty,
#: always ``None`` on a route that reads no body).
Plan: TypeAlias = "Callable[[Navai, RequestContext, Any], Reply | Step]"


@attrs.frozen
class Route:
    """One route a server answers: a row of :data:`ROUTES` placed by a configuration."""

    name: str
    path: str
    methods: tuple[str, ...]
    # Who may call it (an authorisation hook) and how often (a rate limit); None: anyone.
    authorize: AuthHook | None = attrs.field(default=None, eq=False, repr=False)
    limit: RateLimitItem | None = attrs.field(default=None, eq=False, repr=False)
    # Every answer (errors included) carries ``Cache-Control: no-store``: secret-bearing.
    no_store: bool = attrs.field(default=False, eq=False, repr=False)
    plan: Plan | None = attrs.field(default=None, eq=False, repr=False)
    reads_body: bool = attrs.field(default=False, eq=False, repr=False)
    needs_functions: bool = attrs.field(default=False, eq=False, repr=False)
    # The rate-limit counter: routes sharing a budget share one (default: the name).
    bucket: str = attrs.field(default="", eq=False, repr=False)

    @property
    def allowed(self) -> tuple[str, ...]:
        """The methods an ``Allow`` header lists (``OPTIONS`` included)."""
        return (*self.methods, "OPTIONS")

    def matches(self, path: str) -> bool:
        """Does ``path`` (trailing ``/`` ignored) reach this route? A ``{name}`` segment of
        the route's path matches any one non-empty segment."""
        own = self.path.rstrip("/") or "/"
        path = path.rstrip("/") or "/"
        if "{" not in own:
            return own == path
        return self.path_params(path) is not None

    def path_params(self, path: str) -> dict[str, str] | None:
        """The values of the ``{name}`` segments in ``path``, or None when it does not match."""
        own = (self.path.rstrip("/") or "/").split("/")
        parts = (path.rstrip("/") or "/").split("/")
        if len(own) != len(parts):
            return None
        params: dict[str, str] = {}
        for pattern, part in zip(own, parts, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                if not part:
                    return None
                params[pattern[1:-1]] = part
            elif pattern != part:
                return None
        return params


@attrs.frozen
class RouteRow:
    """A route of the table; the string fields name :class:`NavaiConfig` settings."""

    name: str
    path: str  # the setting holding the path (None or blank there: route off)
    methods: tuple[str, ...]
    plan: Plan = attrs.field(repr=False)
    authorize: str | None = None  # the setting holding the hook
    limit: str | None = None  # the setting holding the rate limit
    bucket: str | None = None  # share another route's counter
    no_store: bool = False
    reads_body: bool = False
    needs_functions: bool = False
    enabled: str | None = None  # a boolean setting that switches the route on

    def place(self, config: NavaiConfig) -> Route | None:
        path = getattr(config, self.path)
        if not path or (self.enabled is not None and not getattr(config, self.enabled)):
            return None
        return Route(
            self.name,
            path,
            self.methods,
            authorize=getattr(config, self.authorize) if self.authorize else None,
            limit=rate_limit(config, self.limit) if self.limit else None,
            no_store=self.no_store,
            plan=self.plan,
            reads_body=self.reads_body,
            needs_functions=self.needs_functions,
            bucket=self.bucket or self.name,
        )


# ----- steps ---------------------------------------------------------------------------------


@attrs.frozen
class Upstream:
    """Send ``request`` upstream, then turn the reply into the answer with ``finish``."""

    request: UpstreamRequest
    finish: Callable[[UpstreamReply], Reply] = attrs.field(repr=False)

    def run(self, navai: Navai) -> Reply:
        return self.finish(navai.send_upstream(self.request))

    async def arun(self, navai: Navai) -> Reply:
        reply = await asend(navai.async_http_client(), self.request, navai.retry_policy)
        return self.finish(reply)


@attrs.frozen
class Call:
    """Run a prepared backend function call."""

    prepared: PreparedCall

    def run(self, navai: Navai) -> Reply:
        return execute(self.prepared, **navai.execute_options())

    async def arun(self, navai: Navai) -> Reply:
        return await aexecute(self.prepared, **navai.execute_options())


# ----- plans ---------------------------------------------------------------------------------


def _secret(navai: Navai, request: UpstreamRequest) -> Upstream:
    provider = navai.config.tts_provider

    def finish(reply: UpstreamReply) -> Reply:
        secret = parse_client_secret_response(request, reply.status, reply.content, reply.headers)
        return Reply(200, secret.to_body(provider))

    return Upstream(request, finish)


def _client_secret(navai: Navai, context: RequestContext, body: Any) -> Step:
    return _secret(navai, navai.client_secret_request(body))


def _transcription_secret(navai: Navai, context: RequestContext, body: Any) -> Step:
    request = build_transcription_request(navai.config, body)
    navai.model_notices.requested(body.get("model") if body else None)
    return _secret(navai, request)


def _speech(navai: Navai, context: RequestContext, body: Any) -> Step:
    request = build_speech_request(navai.config, body)
    return Upstream(request, lambda reply: Reply(200, parse_speech_response(request, reply)))


def _list_functions(navai: Navai, context: RequestContext, body: Any) -> Reply:
    return navai.list_reply()


def _execute(navai: Navai, context: RequestContext, body: Any) -> Step:
    return Call(prepare_call(navai.functions(), body, context))


_HEALTHY = Reply(200, {"ok": True})


def _health(navai: Navai, context: RequestContext, body: Any) -> Reply:
    return _HEALTHY


def _openapi(navai: Navai, context: RequestContext, body: Any) -> Reply:
    return Reply(200, navai.openapi())


# ----- the table -----------------------------------------------------------------------------

ROUTES: tuple[RouteRow, ...] = (
    RouteRow(
        "client_secret",
        "client_secret_path",
        ("POST",),
        _client_secret,
        authorize="authorize_client_secret",
        limit="rate_limit_client_secret",
        no_store=True,
        reads_body=True,
    ),
    RouteRow(
        "transcription_secret",
        "transcription_secret_path",
        ("POST",),
        _transcription_secret,
        authorize="authorize_client_secret",
        limit="rate_limit_client_secret",
        bucket="client_secret",  # one budget for every kind of secret
        no_store=True,
        reads_body=True,
    ),
    RouteRow(
        "speech",
        "speech_path",
        ("POST",),
        _speech,
        authorize="authorize_client_secret",
        limit="rate_limit_speech",
        no_store=True,
        reads_body=True,
    ),
    RouteRow(
        "list_functions",
        "functions_path",
        ("GET",),
        _list_functions,
        authorize="authorize_functions",
        limit="rate_limit_functions",
        needs_functions=True,
        enabled="functions_enabled",
    ),
    RouteRow(
        "execute",
        "execute_path",
        ("POST",),
        _execute,
        authorize="authorize_functions",
        limit="rate_limit_functions",
        reads_body=True,
        needs_functions=True,
        enabled="functions_enabled",
    ),
    RouteRow("health", "health_path", ("GET",), _health),
    RouteRow("openapi", "openapi_path", ("GET",), _openapi),
)


def routes_for(config: NavaiConfig, rows: tuple[RouteRow, ...] = ROUTES) -> tuple[Route, ...]:
    """The routes a server with ``config`` answers, in table order."""
    return tuple(route for row in rows if (route := row.place(config)) is not None)
