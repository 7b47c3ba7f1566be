"""navai's routes as rows of data.

Each :class:`RouteRow` says where a route answers (a setting naming its path), which methods
it takes, who may call it and how often (the settings of its hook and rate limit), whether it
reads a body (a JSON object, or raw bytes) or needs the function registry, any further
:class:`Guard` (the call-time budget), and its *plan*: a pure function from the request to
the final :class:`Reply` or one I/O :class:`Step`. ``routes_for(config)`` turns
the table into the :class:`Route` values one server answers; ``Navai.handle`` /
``Navai.ahandle`` only walk a route's row: admit, guard, plan, run the step.

To add a route, add a row (and its plan) here; nothing else dispatches on a route's name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import attrs
from limits import RateLimitItem

from .._config import NavaiConfig, rate_limit
from .._errors import NavaiError, NotFound
from .._hooks import AuthHook
from .._http import Reply, RequestContext, Stream
from ..calls.leases import CallEntry, CallLeases
from ..calls.live import parse_live_call_response, plan_live_call
from ..calls.phone import plan_webhook
from ..calls.plans import (
    SDP_CONTENT_TYPE,
    CallAnswer,
    parse_call_body,
    parse_call_offer,
    parse_call_response,
    plan_call,
    valid_call_id,
)
from ..functions.dispatch import PreparedCall, aexecute, execute, prepare_call
from ..limits.rate import client_key
from ..records.tracing import CLIENT_SECRET_SPAN, traced_step
from ..sessions.client_secret import (
    build_transcription_request,
    parse_client_secret_response,
)
from ..sessions.speech import build_speech_request, parse_speech_response
from ..upstream.messages import UpstreamReply, UpstreamRequest, upstream_failure
from ..upstream.providers import RealtimeTarget, provider_for, realtime_target
from .body import JSON_MEDIA_TYPE, parse_json_body

if TYPE_CHECKING:
    from .._models import ModelNotices
    from ..calls.manager import CallManager
    from ..calls.phone import PhoneCalls
    from ..calls.places import Place
    from ..concurrency.owner import Concurrency
    from ..functions.registry import FunctionRegistry
    from ..records.record import Recorder

logger = logging.getLogger("navai")


class Server(Protocol):
    """What plans, steps and guards use of the server that answers (``Navai`` is one): its
    settings, its function registry, its upstream sender and its live calls. A plan gets
    this, never the facade itself, so the table imports nothing above it."""

    @property
    def config(self) -> NavaiConfig: ...

    @property
    def calls(self) -> CallManager: ...

    @property
    def concurrency(self) -> Concurrency: ...

    @property
    def recorder(self) -> Recorder: ...

    @property
    def model_notices(self) -> ModelNotices: ...

    def functions(self) -> FunctionRegistry: ...

    def afunctions(self) -> Awaitable[FunctionRegistry]: ...

    def execute_options(self) -> dict[str, Any]: ...

    def list_reply(self) -> Reply: ...

    def openapi(self) -> dict[str, Any]: ...

    def client_secret_request(self, body: object) -> UpstreamRequest: ...

    def send_upstream(self, request: UpstreamRequest) -> UpstreamReply: ...

    def asend_upstream(self, request: UpstreamRequest) -> Awaitable[UpstreamReply]: ...

    def phone_calls(self) -> PhoneCalls: ...


class Step(Protocol):
    """The one I/O step a plan may leave: ``run`` from sync code, ``arun`` from async code."""

    def run(self, navai: Server) -> Reply: ...

    def arun(self, navai: Server) -> Awaitable[Reply]: ...


class Guard(Protocol):
    """A check a route makes after its hook and rate limit, before its plan (it may do I/O:
    the call-time budget lives on the rate limits' storage); it raises the answer to refuse."""

    def check(self, navai: Server, context: RequestContext) -> None: ...

    def acheck(self, navai: Server, context: RequestContext) -> Awaitable[None]: ...


#: ``plan(navai, context, body, found)``: ``body`` is the request's JSON object (``None`` when
#: empty, always ``None`` on a route that reads no body), or its bytes on a ``raw_body`` route;
#: ``found`` the route and its path parameters, as :func:`match` found them.
Plan: TypeAlias = "Callable[[Server, RequestContext, Any, RouteMatch], Reply | Step]"


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
    # The plan gets the body's bytes (within the size limit), not a parsed JSON object.
    raw_body: bool = attrs.field(default=False, eq=False, repr=False)
    needs_functions: bool = attrs.field(default=False, eq=False, repr=False)
    # The rate-limit counter: routes sharing a budget share one (default: the name).
    bucket: str = attrs.field(default="", eq=False, repr=False)
    guard: Guard | None = attrs.field(default=None, eq=False, repr=False)
    # Its caller is a service that signs each request (OpenAI's webhooks), not a browser:
    # framework integrations run none of the app's auth dependencies for it and list it in
    # no OpenAPI document.
    signed: bool = attrs.field(default=False, eq=False, repr=False)

    @property
    def allowed(self) -> tuple[str, ...]:
        """The methods an ``Allow`` header lists (``OPTIONS`` included)."""
        return (*self.methods, "OPTIONS")

    def matches(self, path: str) -> bool:
        """Does ``path`` (trailing ``/`` ignored) reach this route?"""
        return self.path_params(path) is not None

    def path_params(self, path: str) -> Mapping[str, str] | None:
        """The values of the ``{name}`` segments in ``path`` (each matches any one non-empty
        segment; a trailing ``/`` is ignored), or None when ``path`` does not reach this route."""
        if "{" not in self.path:
            same = (self.path.rstrip("/") or "/") == (path.rstrip("/") or "/")
            return _NO_PARAMS if same else None
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


_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@attrs.frozen
class RouteMatch:
    """The route a path reaches and the values of its ``{name}`` segments."""

    route: Route
    params: Mapping[str, str]


def match(routes: tuple[Route, ...], path: str) -> RouteMatch | None:
    """The first of ``routes`` that ``path`` reaches, with its path parameters: matched once,
    so no plan reads the path again."""
    for route in routes:
        params = route.path_params(path)
        if params is not None:
            return RouteMatch(route, params)
    return None


def _setting_names(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


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
    raw_body: bool = False  # the plan gets the bytes (it reads the media type itself)
    # True, or a boolean setting that decides whether the plan needs the registry.
    needs_functions: bool | str = False
    # Settings that must all be true (or set, for a secret) for the route to exist.
    enabled: tuple[str, ...] = attrs.field(default=(), converter=_setting_names)
    suffix: str = ""  # appended to the setting's path (``/{call_id}/hangup``)
    guard: Guard | None = attrs.field(default=None, repr=False)
    signed: bool = False  # called by a service that signs its requests (see Route)

    def place(self, config: NavaiConfig) -> Route | None:
        path = getattr(config, self.path)
        if not path or not all(getattr(config, name) for name in self.enabled):
            return None
        needs = self.needs_functions
        return Route(
            self.name,
            path.rstrip("/") + self.suffix if self.suffix else path,
            self.methods,
            authorize=getattr(config, self.authorize) if self.authorize else None,
            limit=rate_limit(config, self.limit) if self.limit else None,
            no_store=self.no_store,
            plan=self.plan,
            reads_body=self.reads_body or self.raw_body,
            raw_body=self.raw_body,
            needs_functions=bool(getattr(config, needs) if isinstance(needs, str) else needs),
            bucket=self.bucket or self.name,
            guard=self.guard,
            signed=self.signed,
        )


# ----- steps ---------------------------------------------------------------------------------


@attrs.frozen
class Upstream:
    """Send ``request`` upstream, then turn the reply into the answer with ``finish``."""

    request: UpstreamRequest
    finish: Callable[[UpstreamReply], Reply] = attrs.field(repr=False)

    def run(self, navai: Server) -> Reply:
        return self.finish(navai.send_upstream(self.request))

    async def arun(self, navai: Server) -> Reply:
        reply = await navai.asend_upstream(self.request)
        return self.finish(reply)


@attrs.frozen
class Call:
    """Run a prepared backend function call."""

    prepared: PreparedCall

    def run(self, navai: Server) -> Reply:
        return execute(self.prepared, **navai.execute_options())

    async def arun(self, navai: Server) -> Reply:
        return await aexecute(self.prepared, **navai.execute_options())


@attrs.frozen
class Hangup:
    """End a call this process holds (on the event loop that holds it)."""

    call_id: str

    def run(self, navai: Server) -> Reply:
        return _hung_up(self.call_id, navai.calls.hangup(self.call_id))

    async def arun(self, navai: Server) -> Reply:
        return _hung_up(self.call_id, await navai.calls.ahangup(self.call_id))


@attrs.frozen
class StartCall:
    """Create a call upstream, hold it (its sideband) and answer 201 with the SDP answer.

    A place among the process's calls is reserved before the create (503 when there is
    none: nothing reaches OpenAI) and becomes the call's when it is held. A call that cannot
    be held after all is hung up again before the client is answered, whatever the failure:
    503 when the server began to stop or the loop that holds calls did not take it in time
    (:class:`CallsFull`), 500 with ``NOT_HELD`` and the call id for anything else (logged
    with its traceback). A create whose request is cancelled (a server's shutdown grace ran
    out) is hung up once it answers.

    The sync tail holds the call on navai's background loop, never on a running loop it may
    find: a sync ``handle()`` can run inside a short-lived loop (Django's per-request
    ``asyncio.run`` under WSGI) whose end would cancel the call. The async tail holds it on
    the server's loop."""

    request: UpstreamRequest
    target: RealtimeTarget = attrs.field(repr=False)
    rate_key: str
    # The session the call is created with (kept by the session guard), and the runtime
    # whose reply this is (NAVAI_CALL_RUNTIME: Realtime's SDP and Location, Live's JSON).
    session: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    runtime: str = "realtime"
    model: str | None = None

    def run(self, navai: Server) -> Reply:
        place = navai.calls.reserve() if navai.config.call_sideband else None
        try:
            answer = self._parse(navai.send_upstream(self.request))
            try:
                self._hold(navai, answer, navai.concurrency.loop(), place)
            except BaseException as exc:
                self._hang_up(navai, answer.call_id)
                if _answered_as_is(exc):
                    raise
                raise _not_held(answer.call_id, exc) from exc
        finally:
            if place is not None:
                place.release()  # (a no-op once the call holds it)
        return self._reply(navai, answer)

    async def arun(self, navai: Server) -> Reply:
        place = navai.calls.reserve() if navai.config.call_sideband else None
        try:
            create = asyncio.ensure_future(navai.asend_upstream(self.request))
            try:
                reply = await asyncio.shield(create)
            except asyncio.CancelledError:
                navai.calls.late_creates.adopt(create, self._call_id_of, self.target, place)
                place = None  # released once the late answer is dealt with
                raise
            answer = self._parse(reply)
            try:
                self._hold(navai, answer, asyncio.get_running_loop(), place)
            except BaseException as exc:
                await self._ahang_up(navai, answer.call_id)
                if _answered_as_is(exc):
                    raise
                raise _not_held(answer.call_id, exc) from exc
        finally:
            if place is not None:
                place.release()
        return self._reply(navai, answer)

    def _hang_up(self, navai: Server, call_id: str) -> None:
        """Hang up a created call that is not held (a failure is logged)."""
        try:
            request = navai.calls.runtime.hangup_request(self.target, call_id)
            _hung_up_upstream(call_id, navai.send_upstream(request).status)
        except Exception as exc:
            logger.warning("hanging up call %s, which could not be held, failed: %s", call_id, exc)

    async def _ahang_up(self, navai: Server, call_id: str) -> None:
        try:
            request = navai.calls.runtime.hangup_request(self.target, call_id)
            _hung_up_upstream(call_id, (await navai.asend_upstream(request)).status)
        except Exception as exc:
            logger.warning("hanging up call %s, which could not be held, failed: %s", call_id, exc)

    def _parse(self, reply: UpstreamReply) -> CallAnswer:
        parse = parse_live_call_response if self.runtime == "live" else parse_call_response
        return parse(self.request, reply.status, reply.content, reply.headers)

    def _call_id_of(self, reply: UpstreamReply) -> str | None:
        try:
            return self._parse(reply).call_id
        except NavaiError:
            return None

    def _hold(
        self,
        navai: Server,
        answer: CallAnswer,
        loop: asyncio.AbstractEventLoop,
        place: Place | None,
    ) -> None:
        if navai.config.call_sideband:
            navai.calls.attach(
                answer.call_id,
                api_key=self.target.key,
                rate_key=self.rate_key,
                loop=loop,
                session=self.session,
                model=self.model,
                place=place,
            )

    def _reply(self, navai: Server, answer: CallAnswer) -> Reply:
        location = (navai.config.calls_path or "").rstrip("/")
        headers = (
            ("Location", f"{location}/{answer.call_id}"),
            ("Access-Control-Expose-Headers", "Location"),
        )
        return Reply(201, None, headers, encoded=answer.sdp.encode(), content_type=SDP_CONTENT_TYPE)


UNKNOWN_CALL = "Unknown call."
NOT_HELD = "The call was created but could not be held, so it was hung up."


def _answered_as_is(exc: BaseException) -> bool:
    """Whether a failure to hold a created call goes on as it is (once the call is hung up):
    an error with its own answer (:class:`CallsFull`), or a stop (Ctrl-C, a cancel)."""
    return isinstance(exc, NavaiError) or not isinstance(exc, Exception)


def _not_held(call_id: str, exc: BaseException) -> NavaiError:
    """The answer to a created call that could not be held for an unexpected reason (it is
    hung up): 500, the reason in the log only."""
    logger.error("call %s was created but could not be held: hung up", call_id, exc_info=exc)
    return NavaiError(NOT_HELD, extra={"call_id": call_id})


def _hung_up_upstream(call_id: str, status: int) -> None:
    if not 200 <= status <= 299 and status != 404:
        logger.warning(
            "hanging up call %s, which could not be held: OpenAI answered %s", call_id, status
        )


def _hung_up(call_id: str, held: bool) -> Reply:
    if not held:
        raise NotFound(UNKNOWN_CALL)  # it ended meanwhile
    return Reply(200, {"ok": True, "call_id": call_id})


# ----- guards --------------------------------------------------------------------------------


class _CallGuard:
    """A new call while this process holds ``call_max_live`` calls: 503 with ``Retry-After``;
    from a key whose call-time budget is spent: 429 with ``Retry-After``."""

    def check(self, navai: Server, context: RequestContext) -> None:
        if navai.config.call_sideband:
            navai.calls.check_room()
        navai.calls.budgets.check(client_key(navai.config.rate_limit_key, context))

    async def acheck(self, navai: Server, context: RequestContext) -> None:
        if navai.config.call_sideband:
            navai.calls.check_room()
        key = client_key(navai.config.rate_limit_key, context)
        await navai.calls.budgets.acheck(key)


# ----- plans ---------------------------------------------------------------------------------


def _secret(navai: Server, request: UpstreamRequest) -> Upstream:
    provider = navai.config.tts_provider

    def finish(reply: UpstreamReply) -> Reply:
        secret = parse_client_secret_response(request, reply.status, reply.content, reply.headers)
        return Reply(200, secret.to_body(provider))

    return Upstream(request, finish)


def _client_secret(navai: Server, context: RequestContext, body: Any, found: RouteMatch) -> Step:
    step = _secret(navai, navai.client_secret_request(body))
    return traced_step(CLIENT_SECRET_SPAN, step)  # type: ignore[no-any-return]


def _transcription_secret(
    navai: Server, context: RequestContext, body: Any, found: RouteMatch
) -> Step:
    request = build_transcription_request(navai.config, body)
    navai.model_notices.requested(body.get("model") if body else None)
    return _secret(navai, request)


def _speech(navai: Server, context: RequestContext, body: Any, found: RouteMatch) -> Step:
    request = build_speech_request(navai.config, body)
    return Upstream(request, lambda reply: Reply(200, parse_speech_response(request, reply)))


def _list_functions(navai: Server, context: RequestContext, body: Any, found: RouteMatch) -> Reply:
    return navai.list_reply()


def _execute(navai: Server, context: RequestContext, body: Any, found: RouteMatch) -> Step:
    return Call(prepare_call(navai.functions(), body, context))


def _health(navai: Server, context: RequestContext, body: Any, found: RouteMatch) -> Reply:
    return Reply(200, {"ok": True})


def _openapi(navai: Server, context: RequestContext, body: Any, found: RouteMatch) -> Reply:
    return Reply(200, navai.openapi())


def _calls(navai: Server, context: RequestContext, body: bytes, found: RouteMatch) -> Step:
    """Relay the SDP offer (raw ``application/sdp`` or JSON) to OpenAI's ``/realtime/calls``
    (or, with ``NAVAI_CALL_RUNTIME=live``, ``/live/sessions``); on success hold the call (its
    sideband) and answer 201 with the SDP answer."""
    c = navai.config
    media_type = (context.header("content-type") or "").split(";")[0].strip().lower()
    if media_type == SDP_CONTENT_TYPE:
        options = parse_call_offer(body)
    else:
        accepted = (SDP_CONTENT_TYPE, JSON_MEDIA_TYPE)
        parsed = parse_json_body(context, body, c.max_body_bytes, accepted)
        options = parse_call_body(parsed)
    registry = navai.functions() if c.functions_enabled else None
    live = c.call_runtime == "live"
    plan = (plan_live_call if live else plan_call)(c, options, registry)
    navai.model_notices.requested(options.session.model)
    rate_key = client_key(c.rate_limit_key, context)
    default = c.live_model if c.call_runtime == "live" else provider_for(c).default_model(c)
    model = options.session.model or default
    return StartCall(plan.request, plan.target, rate_key, plan.session, c.call_runtime, model)


def _call_hangup(navai: Server, context: RequestContext, body: Any, found: RouteMatch) -> Step:
    """End a call this process holds. The route's authorisation hook (run before this plan)
    says who may use the route; the rate-limit key says whose call it is: both must hold.
    Another key's call answers 404, like an unknown id, and reaches nobody; so does an id this
    process does not hold, unless the store the workers share (CONTRACT §13) says it is the
    caller's call on another worker: then it is hung up through OpenAI with the backend key.
    The body is JSON (``{}`` or empty, with ``Content-Type: application/json``):
    a page on another site cannot post one without a CORS preflight."""
    call_id = found.params.get("call_id", "")
    held = navai.calls.get(call_id)
    key = client_key(navai.config.rate_limit_key, context)
    if held is not None:
        if held.key != key:
            raise NotFound(UNKNOWN_CALL)  # not the caller's: as if it did not exist
        return Hangup(call_id)
    leases = navai.calls.leases
    usable = valid_call_id(call_id) and navai.config.backend_key_source() is not None
    if isinstance(leases, CallLeases) and usable:  # a shared store: another worker's call?
        return StoredHangup(leases, call_id, key, _upstream_hangup(navai, call_id))
    raise NotFound(UNKNOWN_CALL)


def _upstream_hangup(navai: Server, call_id: str) -> Upstream:
    """OpenAI's hangup of ``call_id`` with the backend key."""
    request = navai.calls.runtime.hangup_request(realtime_target(navai.config), call_id)

    def finish(reply: UpstreamReply) -> Reply:
        if reply.status == 404:
            raise NotFound(UNKNOWN_CALL)
        if not 200 <= reply.status <= 299:
            raise upstream_failure(request, reply.status, reply.content, reply.headers)
        return _hung_up(call_id, True)

    return Upstream(request, finish)


@attrs.frozen
class StoredHangup:
    """End a call another worker holds, found in the shared store (CONTRACT §13): the hook
    says who may use the route, the key says whose call it is, and both must hold — the
    request's rate-limit key must be the one that created the call. The hangup goes through
    OpenAI with the backend key; the owner sees its control connection close and writes the
    call's record. A call not in the store (or the store failing): 404, like an unknown id."""

    leases: CallLeases = attrs.field(repr=False)
    call_id: str
    rate_key: str
    upstream: Upstream

    def run(self, navai: Server) -> Reply:
        try:
            entry = self.leases.on_loop_sync(lambda: self.leases.entry(self.call_id))
        except Exception:
            entry = None  # the store fails: as if the call were not in it
        return self._step(entry).run(navai)

    async def arun(self, navai: Server) -> Reply:
        try:
            entry = await self.leases.on_loop(lambda: self.leases.entry(self.call_id))
        except Exception:
            entry = None
        return await self._step(entry).arun(navai)

    def _step(self, entry: CallEntry | None) -> Upstream:
        if entry is None or entry.key != self.rate_key:
            raise NotFound(UNKNOWN_CALL)  # unknown, or not the caller's: as if it did not exist
        return self.upstream


EVENT_STREAM = "text/event-stream"
EVENTS_HEADERS = (("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"))


def _call_events(navai: Server, context: RequestContext, body: Any, found: RouteMatch) -> Reply:
    """The events stream of a call this process holds (CONTRACT section 14), for the
    rate-limit key that created it (the route's authorisation hook, when configured, runs
    first: both must hold); any other id, a call held elsewhere or one that ended: 404, like
    the hangup route."""
    call_id = found.params.get("call_id", "")
    held = navai.calls.get(call_id)
    if held is None or held.key != client_key(navai.config.rate_limit_key, context):
        raise NotFound(UNKNOWN_CALL)
    events = navai.recorder.calls.get(call_id)
    if events is None:
        raise NotFound(UNKNOWN_CALL)  # it ended meanwhile
    stream = Stream(events.stream(), events.loop)
    return Reply(200, None, EVENTS_HEADERS, content_type=EVENT_STREAM, stream=stream)


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
        enabled=("functions_enabled", "browser_execute"),
    ),
    RouteRow(
        "calls",
        "calls_path",
        ("POST",),
        _calls,
        authorize="authorize_client_secret",
        limit="rate_limit_calls",
        no_store=True,
        raw_body=True,
        needs_functions="functions_enabled",
        guard=_CallGuard(),
    ),
    RouteRow(
        "call_hangup",
        "calls_path",
        ("POST",),
        _call_hangup,
        authorize="authorize_client_secret",
        limit="rate_limit_calls",
        reads_body=True,  # a JSON body: no simple cross-site POST (415)
        suffix="/{call_id}/hangup",
    ),
    RouteRow(
        "call_events",
        "calls_path",
        ("GET",),
        _call_events,
        authorize="authorize_client_secret",
        limit="rate_limit_calls",
        suffix="/{call_id}/events",
    ),
    # OpenAI's signed webhooks (phone calls): the signature is the authorisation, and it
    # covers the body's bytes exactly as received.
    RouteRow(
        "webhook",
        "webhook_path",
        ("POST",),
        plan_webhook,
        raw_body=True,
        enabled="openai_webhook_secret",
        signed=True,
    ),
    RouteRow("health", "health_path", ("GET",), _health),
    RouteRow("openapi", "openapi_path", ("GET",), _openapi),
)


def routes_for(config: NavaiConfig, rows: tuple[RouteRow, ...] = ROUTES) -> tuple[Route, ...]:
    """The routes a server with ``config`` answers, in table order."""
    return tuple(route for row in rows if (route := row.place(config)) is not None)
