"""The facade: configuration + function registry + pooled httpx clients + HTTP handling.

``Navai.handle`` (sync) and ``Navai.ahandle`` (async) answer any navai route given a
framework-neutral :class:`RequestContext` and the raw body. Both share ``_plan``, which
makes every decision (route, CORS, method, size, JSON, validation) and returns either the
final :class:`Reply` or one I/O step; the two tails only perform that step.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeAlias

import attrs
import httpx
from limits import RateLimitItem

from . import _cors
from ._client_secret import (
    ClientSecret,
    UpstreamReply,
    UpstreamRequest,
    build_client_secret_request,
    build_transcription_request,
    parse_client_secret_body,
    parse_client_secret_response,
)
from ._config import NavaiConfig
from ._discovery import load_functions
from ._dispatch import PreparedCall, _background, aexecute, execute, prepare_call
from ._errors import (
    BadRequest,
    MethodNotAllowed,
    NavaiError,
    NotFound,
    PayloadTooLarge,
    UpstreamError,
)
from ._functions import FunctionRegistry
from ._http import Reply, RequestContext
from ._json import dumps
from ._logging import logger, secret_filter
from ._models import ModelNotices, models_logger
from ._openapi import openapi_document
from ._protect import AuthHook, RateLimiter, aauthorize, authorize, client_key, parse_limit
from ._retry import RetryPolicy
from ._speech import build_speech_request, parse_speech_response
from ._upstream import AsyncLaneTransport, LaneTransport, asend, send

INTERNAL_ERROR = "Internal server error."


@attrs.frozen
class Route:
    name: str
    path: str
    methods: tuple[str, ...]
    # Who may call it (an authorisation hook) and how often (a rate limit); None: anyone.
    authorize: AuthHook | None = attrs.field(default=None, eq=False, repr=False)
    limit: RateLimitItem | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class _Upstream:
    """Send ``request``, then turn the reply into the final answer with ``finish``."""

    request: UpstreamRequest
    finish: Callable[[UpstreamReply], Reply]


_Step: TypeAlias = "Reply | _Upstream | PreparedCall"


class Navai:
    """A navai server's state, shared by every adapter.

    >>> navai = Navai(NavaiConfig(openai_api_key="sk-..."))
    >>> reply = navai.handle(RequestContext("POST", "/navai/realtime/client-secret"), b"{}")

    The httpx clients are created on first use and reused (connection pooling); pass your
    own to share them. ``close()`` / ``aclose()`` (or ``with`` / ``async with``) release
    what navai created.
    """

    def __init__(
        self,
        config: NavaiConfig | None = None,
        *,
        functions: FunctionRegistry | None = None,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = NavaiConfig.from_env() if config is None else config
        c = self.config
        secret_filter.add(
            *(
                k
                for k in (c.openai_api_key, c.azure_api_key, c.elevenlabs_api_key)
                if isinstance(k, str)
            )
        )
        self._code_functions = functions
        self._registry: FunctionRegistry | None = None
        self._listed: tuple[int, int, Reply] | None = None
        self._lock = threading.Lock()
        self._client = http_client
        self._owns_client = http_client is None
        self._aclient = async_http_client
        self._owns_aclient = async_http_client is None
        self._routes = self._build_routes()
        self._model_notices = ModelNotices()
        self.rate_limiter = RateLimiter(self.config.rate_limit_storage)
        c = self.config
        self.retry_policy = RetryPolicy(
            max_retries=max(c.upstream_max_retries, 0),
            total_timeout=c.upstream_timeout_seconds,
            connect_timeout=c.upstream_connect_timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"Navai({self.config!r})"

    def evolve(self, **changes: Any) -> Navai:
        """A new instance with configuration ``changes`` (``attrs.evolve`` of the config),
        the same code-registered functions and the same httpx clients you passed in."""
        return Navai(
            attrs.evolve(self.config, **changes),
            functions=self._code_functions,
            http_client=None if self._owns_client else self._client,
            async_http_client=None if self._owns_aclient else self._aclient,
        )

    # ----- startup -----------------------------------------------------------------

    def startup_report(self, *, load_functions: bool = True) -> list[str]:
        """Every warning to show at start-up, once: configuration problems and, with
        ``load_functions``, the function registry's (building it now)."""
        problems = self.config.problems() + self.config.model_notices()
        if load_functions and self.config.functions_enabled:
            problems += self.functions().warnings
        return problems

    def log_startup(self, *, load_functions: bool = True) -> None:
        notices = set(self.config.model_notices())
        for problem in self.startup_report(load_functions=load_functions):
            # Model shutdown notices go to "navai.models", so they can be silenced alone.
            (models_logger if problem in notices else logger).warning("%s", problem)

    # ----- functions ---------------------------------------------------------------

    def functions(self) -> FunctionRegistry:
        """The function registry, built once (thread-safe) on first use."""
        registry = self._registry
        if registry is None:
            with self._lock:
                if self._registry is None:
                    c = self.config
                    built = load_functions(
                        base_dir=c.functions_base_dir or ".",
                        folders=c.functions_folders,
                        agents_folders=c.agents_folders,
                        modules=c.functions_modules,
                        registry=self._code_functions,
                    )
                    # Schemas are built here, off the event loop, not on the first list.
                    built.prepare_schemas()
                    self._registry = built
                registry = self._registry
        return registry

    async def afunctions(self) -> FunctionRegistry:
        """Like :meth:`functions`; a first build (imports files) runs in a worker thread."""
        if self._registry is not None:
            return self._registry
        return await asyncio.to_thread(self.functions)

    # ----- client secret (Python API) ---------------------------------------------

    def create_client_secret(self, body: object = None) -> ClientSecret:
        """Mint a client secret for a request body (a dict of the contract's fields)."""
        request = self._client_secret_request(body)
        reply = send(self.http_client(), request, self.retry_policy)
        return parse_client_secret_response(request, reply.status, reply.content, reply.headers)

    async def acreate_client_secret(self, body: object = None) -> ClientSecret:
        request = self._client_secret_request(body)
        reply = await asend(self.async_http_client(), request, self.retry_policy)
        return parse_client_secret_response(request, reply.status, reply.content, reply.headers)

    def _client_secret_request(self, body: object) -> UpstreamRequest:
        options = parse_client_secret_body(body)
        request = build_client_secret_request(self.config, options)
        self._model_notices.requested(options.model)
        return request

    # ----- HTTP ------------------------------------------------------------------

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def _build_routes(self) -> tuple[Route, ...]:
        c = self.config
        routes = [Route("client_secret", c.client_secret_path, ("POST",))]
        if c.transcription_secret_path:
            routes.append(Route("transcription_secret", c.transcription_secret_path, ("POST",)))
        routes.append(Route("speech", c.speech_path, ("POST",)))
        if c.functions_enabled:
            routes.append(Route("list_functions", c.functions_path, ("GET",)))
            routes.append(Route("execute", c.execute_path, ("POST",)))
        if c.health_path:
            routes.append(Route("health", c.health_path, ("GET",)))
        if c.openapi_path:
            routes.append(Route("openapi", c.openapi_path, ("GET",)))
        return tuple(self._guarded(route) for route in routes)

    def _guarded(self, route: Route) -> Route:
        c = self.config
        secret_limit = _limit_or_default(c.rate_limit_client_secret, DEFAULT_CLIENT_SECRET_LIMIT)
        guards: dict[str, tuple[AuthHook | None, RateLimitItem | None]] = {
            "client_secret": (c.authorize_client_secret, secret_limit),
            "transcription_secret": (c.authorize_client_secret, secret_limit),
            "speech": (c.authorize_client_secret, _limit_or_default(c.rate_limit_speech, None)),
            "list_functions": (
                c.authorize_functions,
                _limit_or_default(c.rate_limit_functions, None),
            ),
            "execute": (c.authorize_functions, _limit_or_default(c.rate_limit_functions, None)),
        }
        hook, limit = guards.get(route.name, (None, None))
        return attrs.evolve(route, authorize=hook, limit=limit)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the routes this instance serves."""
        c = self.config
        return openapi_document(
            self._routes,
            _version(),
            option_chars=c.max_option_chars,
            instructions_chars=c.max_instructions_chars,
            defaults={
                "model": c.model,
                "voice": c.voice,
                "transcription_model": c.transcription_model,
            },
        )

    def match(self, path: str) -> Route | None:
        normal = path.rstrip("/") or "/"
        for route in self._routes:
            if route.path.rstrip("/") == normal:
                return route
        return None

    def handle(self, context: RequestContext, body: bytes = b"") -> Reply:
        """Answer one HTTP request (sync servers: WSGI, custom)."""
        try:
            step: Route | _Step = self._gate(context)
            if isinstance(step, Route):
                route = step
                authorize(route.authorize, context, _background.run)
                self.rate_limiter.check(route.limit, route.name, self._client_key(context))
                if route.name in _FUNCTION_ROUTES:
                    self.functions()
                step = self._plan(route, context, body)
            if isinstance(step, _Upstream):
                reply = send(self.http_client(), step.request, self.retry_policy)
                step = step.finish(reply)
            elif isinstance(step, PreparedCall):
                step = execute(step, **self._execute_options())
        except Exception as exc:
            step = self._error_reply(exc)
        assert isinstance(step, Reply)
        return self._with_cors(context, step)

    async def ahandle(self, context: RequestContext, body: bytes = b"") -> Reply:
        """Answer one HTTP request (async servers: ASGI, custom)."""
        try:
            step: Route | _Step = self._gate(context)
            if isinstance(step, Route):
                route = step
                await aauthorize(route.authorize, context)
                await self.rate_limiter.acheck(route.limit, route.name, self._client_key(context))
                if route.name in _FUNCTION_ROUTES:
                    await self.afunctions()
                step = self._plan(route, context, body)
            if isinstance(step, _Upstream):
                client = self.async_http_client()
                reply = await asend(client, step.request, self.retry_policy)
                step = step.finish(reply)
            elif isinstance(step, PreparedCall):
                step = await aexecute(step, **self._execute_options())
        except Exception as exc:
            step = self._error_reply(exc)
        assert isinstance(step, Reply)
        return self._with_cors(context, step)

    def _execute_options(self) -> dict[str, Any]:
        c = self.config
        return {
            "expose_errors": c.expose_function_errors,
            "default_timeout": c.function_timeout_seconds,
        }

    def _client_key(self, context: RequestContext) -> str:
        return client_key(self.config.rate_limit_key, context)

    def _error_reply(self, exc: Exception) -> Reply:
        if isinstance(exc, UpstreamError):
            logger.warning(
                "navai: %s (status %s, request id %s)",
                exc.message[:500],
                exc.status_code,
                exc.extra.get("request_id", "-"),
            )
        if isinstance(exc, NavaiError):
            return exc.to_reply()
        logger.exception("navai: unexpected error while answering a request")
        return Reply(500, {"error": INTERNAL_ERROR})

    def _with_cors(self, context: RequestContext, reply: Reply) -> Reply:
        if context.method.upper() == "OPTIONS":
            return reply  # preflight answers carry their own CORS headers
        origin = context.header("origin")
        c = self.config
        headers = _cors.cors_headers(c.cors_origins, origin, c.cors_allow_credentials)
        return reply.with_headers(*headers) if headers else reply

    def _gate(self, context: RequestContext) -> Route | Reply:
        """The route a request is for (404, 405 and CORS preflight are answered here)."""
        route = self.match(context.path)
        if route is None:
            raise NotFound("Not found.")
        method = context.method.upper()
        if method == "OPTIONS":
            return self._preflight(context, route)
        if method not in route.methods:
            raise MethodNotAllowed((*route.methods, "OPTIONS"))
        return route

    def _plan(self, route: Route, context: RequestContext, body: bytes) -> _Step:
        """Every decision about an allowed request, with no I/O: the reply, or one I/O step.

        The function registry must already be built for the function routes.
        """
        if route.name == "health":
            return Reply(200, {"ok": True})
        if route.name == "openapi":
            return Reply(200, self.openapi())
        registry = self._registry
        if route.name == "list_functions":
            assert registry is not None
            return self._list_reply(registry)
        parsed = self._parse_body(context, body)
        if route.name == "execute":
            assert registry is not None
            return prepare_call(registry, parsed, context)
        if route.name == "speech":
            return self._speech_step(parsed)
        if route.name == "transcription_secret":
            request = build_transcription_request(self.config, parsed)
            self._model_notices.requested(parsed.get("model") if parsed else None)
        else:
            request = self._client_secret_request(parsed)
        provider = self.config.tts_provider

        def finish(reply: UpstreamReply) -> Reply:
            secret = parse_client_secret_response(
                request, reply.status, reply.content, reply.headers
            )
            return Reply(200, secret.to_body(provider), (("Cache-Control", "no-store"),))

        return _Upstream(request, finish)

    def _list_reply(self, registry: FunctionRegistry) -> Reply:
        """The list reply, encoded once (about 4 us a request) until functions or warnings
        are added to the registry."""
        key = (len(registry), len(registry.warnings))
        listed = self._listed
        if listed is None or listed[:2] != key:
            body = registry.list_body()
            listed = self._listed = (*key, Reply(200, body, encoded=dumps(body)))
        return listed[2]

    def _speech_step(self, parsed: Any) -> _Upstream:
        request = build_speech_request(self.config, parsed)

        def finish(reply: UpstreamReply) -> Reply:
            body = parse_speech_response(request, reply)
            return Reply(200, body, (("Cache-Control", "no-store"),))

        return _Upstream(request, finish)

    def _preflight(self, context: RequestContext, route: Route) -> Reply:
        methods = (*route.methods, "OPTIONS")
        origin = context.header("origin")
        headers = _cors.preflight_headers(
            self.config.cors_origins,
            origin,
            methods,
            context.header("access-control-request-headers"),
            self.config.cors_allow_credentials,
        )
        if origin and not headers:
            return Reply(403, {"error": "Origin not allowed."})
        return Reply(204, None, (("Allow", ", ".join(methods)), *headers))

    def _parse_body(self, context: RequestContext, body: bytes) -> Any:
        if len(body) > self.config.max_body_bytes:
            raise PayloadTooLarge(
                f"Request body is larger than {self.config.max_body_bytes} bytes."
            )
        if not body.strip():
            return None
        content_type = (context.header("content-type") or "").split(";")[0].strip().lower()
        if content_type and not (
            content_type == "application/json" or content_type.endswith("+json")
        ):
            raise NavaiError("Content-Type must be application/json.", status_code=415)
        try:
            parsed = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        except (ValueError, RecursionError):
            raise BadRequest("Request body is not valid JSON.") from None
        if not isinstance(parsed, dict):
            raise BadRequest("Request body must be a JSON object.")
        return parsed

    # ----- httpx clients ------------------------------------------------------------

    def http_client(self) -> httpx.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        timeout=self.config.upstream_timeout_seconds, transport=LaneTransport()
                    )
        return self._client

    def async_http_client(self) -> httpx.AsyncClient:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(
                timeout=self.config.upstream_timeout_seconds, transport=AsyncLaneTransport()
            )
        return self._aclient

    def close(self) -> None:
        """Close the sync httpx client navai created (a passed-in client stays open)."""
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close both httpx clients navai created."""
        if self._aclient is not None and self._owns_aclient:
            await self._aclient.aclose()
            self._aclient = None
        self.close()

    def __enter__(self) -> Navai:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Navai:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


_FUNCTION_ROUTES = frozenset({"list_functions", "execute"})
DEFAULT_CLIENT_SECRET_LIMIT = "10/minute"


def _version() -> str:
    try:
        return importlib.metadata.version("navai")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _limit_or_default(text: str | None, default: str | None) -> RateLimitItem | None:
    """The parsed limit; a limit that cannot be read falls back to ``default`` (and is
    reported by ``NavaiConfig.problems()``), so a typo never switches protection off."""
    try:
        return parse_limit(text)
    except ValueError:
        return parse_limit(default)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# ``json.loads(body, parse_constant=...)`` without building a decoder per request (~1 us).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
