"""The facade: configuration + function registry + pooled httpx2 clients + HTTP handling.

``Navai.handle`` (sync) and ``Navai.ahandle`` (async) answer any navai route given a
framework-neutral :class:`RequestContext` and the raw body, through the request walk of
``routes/walk.py`` (match, admit, hook, rate limit, guard, plan, step). The facade holds
what that walk, the plans of ``routes/table.py`` and the call manager are handed: the
configuration, the function registry, the upstream sender and the live calls.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import threading
from types import TracebackType
from typing import Any

import attrs
import httpx2

from ._config import NavaiConfig, rate_limit
from ._http import Reply, RequestContext
from ._logging import ensure_handler, logger, secret_filter
from ._models import ModelNotices, models_logger
from .calls.events import CallEvents, LiveCall
from .calls.leases import CallLeases
from .calls.manager import CallManager, CallSettings
from .calls.phone import PhoneCalls, phone_calls_for
from .calls.takeover import Takeover, aclose_leases, close_leases, share_calls
from .concurrency.owner import Concurrency
from .functions.discovery import functions_for
from .functions.dispatch import PreparedCall, aexecute
from .functions.listing import ListedFunctions
from .functions.registry import FunctionRegistry
from .limits.budget import CallBudgets
from .limits.rate import RateLimiter
from .records.events import record_events
from .records.record import Recorder
from .routes.body import AsyncBodySource, BodySource
from .routes.openapi import openapi_document
from .routes.table import Route, routes_for
from .routes.walk import RequestWalk
from .sessions.client_secret import (
    ClientSecret,
    build_client_secret_request,
    parse_client_secret_body,
    parse_client_secret_response,
)
from .upstream.messages import UpstreamReply, UpstreamRequest
from .upstream.providers import provider_for, target_for_key
from .upstream.retry import RetryPolicy
from .upstream.send import asend, check_client, new_async_client, new_client, send

__all__ = ["Navai", "Route"]


class Navai:
    """A navai server's state, shared by every adapter.

    >>> navai = Navai(NavaiConfig(openai_api_key="sk-..."))
    >>> reply = navai.handle(RequestContext("POST", "/navai/realtime/client-secret"), b"{}")

    The upstream clients are created on first use and reused (connection pooling). To share
    your own, pass ``http_client=httpx2.Client(...)`` and/or
    ``async_http_client=httpx2.AsyncClient(...)``: navai runs on httpx2 (installed
    with navai, ``import httpx2``), and a client of another library, an ``httpx.Client``
    included, is refused with a ``TypeError``. ``close()`` / ``aclose()`` (or ``with`` /
    ``async with``) release what navai created; a client you passed in stays open.
    """

    def __init__(
        self,
        config: NavaiConfig | None = None,
        *,
        functions: FunctionRegistry | None = None,
        http_client: httpx2.Client | None = None,
        async_http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        check_client("http_client", http_client, httpx2.Client)
        check_client("async_http_client", async_http_client, httpx2.AsyncClient)
        self.config = NavaiConfig.from_env() if config is None else config
        self.config.check()
        c = self.config
        secret_filter.add(*_secrets(c))
        self._code_functions = functions
        self._registry: FunctionRegistry | None = None
        self._listed = ListedFunctions()
        self._lock = threading.Lock()
        self._client = http_client
        self._owns_client = http_client is None
        self._aclient = async_http_client
        self._owns_aclient = async_http_client is None
        self._routes = routes_for(self.config)
        self.model_notices = ModelNotices()
        self.rate_limiter = RateLimiter(
            self.config.rate_limit_storage, fail_open=self.config.rate_limit_fail_open
        )
        # Every request's way: route, checks, plan, step (routes/walk.py).
        self._walk = RequestWalk(
            self, self._routes, config=self.config, rate_limiter=self.rate_limiter
        )
        # Where this instance runs code: its background loop and its thread budgets.
        self.concurrency = Concurrency(max(self.config.function_threads, 2))
        self.retry_policy = RetryPolicy(
            max_retries=max(c.upstream_max_retries, 0),
            total_timeout=c.upstream_timeout_seconds,
            connect_timeout=c.upstream_connect_timeout_seconds,
        )
        # Each call's record (transcript, tools, cost; its log line and spans) and watchers.
        self.recorder = Recorder.from_config(c)
        # The live calls of this process (server-controlled calls, see docs/calls.md).
        self.calls = CallManager(
            CallSettings.from_config(c),
            budgets=CallBudgets.from_setting(c.call_budget, self.rate_limiter),
            target=lambda api_key: target_for_key(self.config, api_key),
            send=self.asend_upstream,
            registry=self.afunctions,
            execute=self._aexecute,
            concurrency=self.concurrency,
            events=self._call_events,
        )
        # Incoming phone calls (docs/phone-calls.md), created on the first webhook.
        self._phone: PhoneCalls | None = None
        # Calls that outlive a worker (docs/deployment.md): only with a shared store.
        self.leases: CallLeases | None = None
        self.takeover: Takeover | None = None
        if self.rate_limiter.shared and c.call_sideband:  # calls/takeover.py
            self.leases, self.takeover = share_calls(c, self.calls, self.concurrency.loop)

    def __repr__(self) -> str:
        return f"Navai({self.config!r})"

    def evolve(self, **changes: Any) -> Navai:
        """A new instance with configuration ``changes`` (``attrs.evolve`` of the config),
        the same code-registered functions and the same httpx2 clients you passed in."""
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

    def exposure_warnings(self, host: str) -> list[str]:
        """What to say loudly when a server listening on ``host`` lets anyone run functions
        (no authorisation hook; worse, no rate limit either). Nothing on loopback."""
        return _exposure_warnings(self.config, host)

    def log_startup(self, *, load_functions: bool = True) -> None:
        ensure_handler()  # navai's lines show up under uvicorn, Flask or Django as they are
        if self.takeover is not None:  # a server starts: watch for calls to take over
            self.takeover.start()
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
                    self._registry = functions_for(self.config, self._code_functions)
                registry = self._registry
        return registry

    async def afunctions(self) -> FunctionRegistry:
        """Like :meth:`functions`; a first build (imports files) runs in a worker thread."""
        if self._registry is not None:
            return self._registry
        return await self.concurrency.run_sync(self.functions, name="load_functions")

    # ----- client secret (Python API) ---------------------------------------------

    def create_client_secret(self, body: object = None) -> ClientSecret:
        """Mint a client secret for a request body (a dict of the contract's fields)."""
        request = self.client_secret_request(body)
        reply = self.send_upstream(request)
        return parse_client_secret_response(request, reply.status, reply.content, reply.headers)

    async def acreate_client_secret(self, body: object = None) -> ClientSecret:
        request = self.client_secret_request(body)
        reply = await self.asend_upstream(request)
        return parse_client_secret_response(request, reply.status, reply.content, reply.headers)

    def client_secret_request(self, body: object) -> UpstreamRequest:
        """The upstream request that mints a secret for a request body (no I/O)."""
        options = parse_client_secret_body(body)
        request = build_client_secret_request(self.config, options)
        self.model_notices.requested(options.model)
        return request

    # ----- HTTP ------------------------------------------------------------------

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

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
        """The route ``path`` reaches, if any."""
        found = self._walk.match(path)
        return found.route if found is not None else None

    def handle(self, context: RequestContext, body: BodySource = b"") -> Reply:
        """Answer one HTTP request (sync servers: WSGI, custom).

        ``body`` is the raw body, or ``read(limit) -> bytes``, called only once the request
        passed its route's checks, hooks and rate limit (a refused request is never read).
        """
        return self._walk.handle(context, body)

    async def ahandle(self, context: RequestContext, body: AsyncBodySource = b"") -> Reply:
        """Answer one HTTP request (async servers: ASGI, custom); ``body`` as for
        :meth:`handle`, its reader a coroutine function."""
        return await self._walk.ahandle(context, body)

    def execute_options(self) -> dict[str, Any]:
        """The keyword options of ``execute``/``aexecute`` this server's settings give."""
        c = self.config
        return {
            "expose_errors": c.expose_function_errors,
            "default_timeout": c.function_timeout_seconds,
            "concurrency": self.concurrency,
        }

    async def _aexecute(self, prepared: PreparedCall) -> Reply:
        return await aexecute(prepared, **self.execute_options())

    def list_reply(self) -> Reply:
        """The list reply, encoded once until the registry grows (functions/listing.py)."""
        expose = self.config.expose_function_warnings
        return self._listed.reply(self.functions(), expose_warnings=expose)

    def _call_events(self, call: LiveCall) -> CallEvents:
        """What is told of a call as it goes: its log lines, its record, its watchers."""
        c, runtime = self.config, self.calls.runtime.name
        live = runtime == "live"  # GPT-Live: the Live model, and the backend model's tokens
        model = call.model or (c.live_model if live else provider_for(c).default_model(c))
        backend = c.live_backend_model if live else None
        return record_events(
            self.recorder, call, runtime=runtime, model=model, backend_model=backend
        )

    # ----- phone calls ---------------------------------------------------------------

    def phone_calls(self) -> PhoneCalls:
        """The incoming phone calls of this instance (webhook deliveries seen, calls being
        answered)."""
        if self._phone is None:
            with self._lock:
                if self._phone is None:
                    self._phone = phone_calls_for(
                        self.config,
                        self.calls,
                        functions=self.afunctions,
                        client=self.async_http_client,
                        retry_policy=self.retry_policy,
                        concurrency=self.concurrency,
                    )
        return self._phone

    # ----- httpx2 clients -----------------------------------------------------------

    def http_client(self) -> httpx2.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = new_client(self.config.upstream_timeout_seconds)
        return self._client

    def async_http_client(self) -> httpx2.AsyncClient:
        if self._aclient is None:
            self._aclient = new_async_client(self.config.upstream_timeout_seconds)
        return self._aclient

    def send_upstream(self, request: UpstreamRequest) -> UpstreamReply:
        """Send from sync code, with the sync client (navai's keeps the total deadline)."""
        return send(self.http_client(), request, self.retry_policy)

    async def asend_upstream(self, request: UpstreamRequest) -> UpstreamReply:
        """Send from async code, with the async client."""
        return await asend(self.async_http_client(), request, self.retry_policy)

    def close(self) -> None:
        """Hang up the calls held on navai's background loop (with a shared store: hand them
        over to the other workers instead), close the sync httpx2 client navai created (a
        passed-in client stays open), then stop the background loop and let idle threads end
        (both start again if the instance is used again)."""
        if self._phone is not None:
            self._phone.close()
        if self.takeover is not None:
            self.takeover.stop()
        self.calls.close(handover=self.leases is not None)
        close_leases(self.leases)
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None
        self.concurrency.close()

    async def aclose(self) -> None:
        """Hang up the calls this process holds (with a shared store: hand them over), then
        close both httpx2 clients navai created."""
        if self._phone is not None:
            await self._phone.aclose()
        if self.takeover is not None:
            self.takeover.stop()
        await self.calls.aclose(handover=self.leases is not None)
        await aclose_leases(self.leases)
        if self._aclient is not None and self._owns_aclient:
            await self._aclient.aclose()
            self._aclient = None
        # Off this loop: closing the background loop (running with a store) waits for it.
        await asyncio.to_thread(self.close)

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


def _secrets(c: NavaiConfig) -> list[str]:
    """The secrets of ``c`` that the logs must never show."""
    keys = (c.openai_api_key, c.azure_api_key, c.elevenlabs_api_key, c.openai_webhook_secret)
    return [k for k in keys if isinstance(k, str)]


def _exposure_warnings(c: NavaiConfig, host: str) -> list[str]:
    if not c.functions_enabled or c.authorize_functions is not None or _loopback(host):
        return []
    guard = (
        "no authorisation hook and no rate limit"
        if rate_limit(c, "rate_limit_functions") is None
        else f"no authorisation hook, only a rate limit of {c.rate_limit_functions} a client"
    )
    return [
        f"The function routes have {guard}: anyone who can reach {host} can list and run "
        "your backend functions. Set authorize_functions (docs/security.md), or serve on "
        "127.0.0.1 behind your own gateway."
    ]


def _loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _version() -> str:
    try:
        return importlib.metadata.version("navai")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
