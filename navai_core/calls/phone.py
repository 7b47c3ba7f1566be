"""Phone calls (SIP), the I/O around the pure rules of ``_sip`` (CONTRACT.md section 9).

The webhook route answers OpenAI at once (200) and hands the call to :class:`PhoneCalls`,
which, in the background, asks the ``on_incoming_call`` hook, sends ``/accept``, ``/reject``
or ``/refer`` and, on accept, attaches the call's control connection like a WebRTC call's.
The background is the server's event loop under ASGI (a task) and navai's background loop
under WSGI, so OpenAI never waits on the hook or on its own API.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

from .._config import NavaiConfig
from .._errors import InvalidWebhook, NavaiError
from .._http import Reply, RequestContext
from .._json import JsonObject
from ..concurrency.owner import Concurrency
from ..concurrency.threads import Busy
from ..functions.registry import FunctionRegistry
from ..routes.cors import LogThrottle
from ..upstream.messages import upstream_failure
from ..upstream.providers import RealtimeTarget, realtime_target
from ..upstream.retry import RetryPolicy
from ..upstream.send import asend
from .live import (
    build_live_hangup_request,
    build_live_verdict_request,
    incoming_call_runtime,
    live_accept_body,
    parse_live_incoming_call,
    phone_session,
)
from .manager import CallManager
from .places import Place
from .plans import build_hangup_request
from .sip import (
    AcceptCall,
    CallVerdict,
    IncomingCall,
    RejectCall,
    accept_body,
    budget_key,
    build_verdict_request,
    check_verdict,
    parse_incoming_call,
    parse_webhook_event,
)
from .webhooks import verify_webhook

logger = logging.getLogger("navai")

# A call's id among the webhook ids seen: one accept per pending call, whichever announced it.
_CALL = "call:"
# Webhook ids remembered to answer a repeated delivery once (per process).
SEEN_WEBHOOKS = 4096
# Incoming calls being answered at once (hook + upstream request); past it, a delivery is
# answered 503 so that OpenAI delivers it again later.
MAX_PENDING_CALLS = 256
# The longest the on_incoming_call hook may take; past it the call is rejected (603).
HOOK_TIMEOUT_SECONDS = 10.0
# A sync on_incoming_call hook runs on the owner's hook threads (Concurrency.run_sync: a
# bounded budget of daemon threads, one hook at most half of it): a hung hook is left behind
# at its time limit and at shutdown, holds neither the loop's end nor the process's exit,
# and hung hooks cannot grow threads without bound; a call that finds no thread is rejected.
HOOK = "on_incoming_call"
# The SIP status of a call navai cannot take (its budget key has no call time left, or this
# process holds call_max_live calls): the caller hears busy.
BUDGET_SPENT_STATUS = 486
BUSY = "Too many incoming calls being answered; deliver again later."


def accepted() -> Reply:
    """The answer to a delivery whose call is answered in the background."""
    return Reply(200, {"ok": True})


IncomingCallHook = Callable[[IncomingCall], "CallVerdict | Awaitable[CallVerdict | None] | None"]


# attach(call_id, *, api_key, rate_key, transport): CallManager.attach.
Attach = Callable[..., object]
# Raises (a 429 NavaiError) when a budget key has no call time left: CallBudgets.acheck.
BudgetCheck = Callable[[str], Awaitable[None]]
# A place for a call about to be accepted, or CallsFull (503) when this process holds (or is
# taking) call_max_live calls or is stopping: CallManager.reserve.
Reserve = Callable[[], Place]


class SeenWebhooks:
    """The last ``size`` webhook ids seen (thread-safe): ``first(id)`` is True once."""

    def __init__(self, size: int = SEEN_WEBHOOKS) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def first(self, webhook_id: str) -> bool:
        with self._lock:
            if webhook_id in self._ids:
                self._ids.move_to_end(webhook_id)
                return False
            self._ids[webhook_id] = None
            if len(self._ids) > self._size:
                self._ids.popitem(last=False)
            return True

    def forget(self, webhook_id: str) -> None:
        """Let a later delivery of ``webhook_id`` be handled (this one could not be)."""
        with self._lock:
            self._ids.pop(webhook_id, None)


async def ask_hook(
    hook: IncomingCallHook | None, call: IncomingCall, owner: Concurrency
) -> CallVerdict:
    """The hook's checked verdict (a sync hook runs on one of ``owner``'s hook threads). A hook that
    raises, returns something else or outlasts ``HOOK_TIMEOUT_SECONDS`` rejects the call (603),
    as does a sync hook that finds no free thread in that time."""
    if hook is None:
        return AcceptCall()
    try:
        result = await asyncio.wait_for(_run_hook(hook, call, owner), HOOK_TIMEOUT_SECONDS)
        return check_verdict(result)
    except Busy:
        logger.error("%s sync hooks are running; rejecting call %s", owner.hooks.busy, call.call_id)
    except TimeoutError:
        logger.error(
            "on_incoming_call took more than %ss for call %s; rejecting it",
            HOOK_TIMEOUT_SECONDS,
            call.call_id,
        )
    except ValueError as exc:
        logger.error("on_incoming_call for call %s: %s; rejecting it", call.call_id, exc)
    except Exception:
        logger.exception("on_incoming_call failed for call %s; rejecting it", call.call_id)
    return RejectCall()


async def _run_hook(hook: IncomingCallHook, call: IncomingCall, owner: Concurrency) -> object:
    if inspect.iscoroutinefunction(hook):
        return await hook(call)
    result = await owner.run_sync(hook, call, name=HOOK, wait=HOOK_TIMEOUT_SECONDS)
    if inspect.isawaitable(result):  # a callable object with an async __call__
        result = await result
    return result


class PhoneCalls:
    """The incoming calls of one navai instance: duplicate deliveries, the background work
    and its shutdown."""

    def __init__(
        self,
        *,
        target: Callable[[], RealtimeTarget],
        session: Callable[[], Awaitable[dict[str, Any]]],
        client: Callable[[], Any],
        retry_policy: RetryPolicy,
        hook: IncomingCallHook | None,
        attach: Attach | None = None,
        check_budget: BudgetCheck | None = None,
        reserve: Reserve | None = None,
        concurrency: Concurrency | None = None,
    ) -> None:
        self._target = target
        self._session = session
        self._client = client
        self._retry = retry_policy
        self._hook = hook
        # Where sync hooks and the background work of sync servers run (the Navai's).
        self._concurrency = Concurrency() if concurrency is None else concurrency
        self._attach = attach
        self._check_budget = check_budget
        self._reserve = reserve
        self.seen = SeenWebhooks()
        # Refused deliveries are logged once per client address per 300 s (as CORS refusals).
        self._refusals = LogThrottle()
        # Each answer in progress, with its call's id.
        self._pending: dict[asyncio.Future[None] | concurrent.futures.Future[None], str] = {}
        # Calls with a place, being accepted: a shutdown lets them finish (held, or hung up).
        self._accepting: set[str] = set()
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Incoming calls still being answered (hook, upstream request, attach)."""
        return len(self._pending)

    # ----- the webhook delivery ------------------------------------------------------------

    def plan(
        self, secret: str, context: RequestContext, body: bytes, runtime: str = "realtime"
    ) -> Reply | IncomingCall:
        """The answer to a webhook delivery, or the incoming call to answer in the background
        (the route then answers 200).

        A delivery whose signature does not check out raises :class:`InvalidWebhook` (400;
        logged here without the body); a repeated ``webhook-id`` or call, and other event
        types, answer 200 and are ignored; with too many calls being answered, 503 (OpenAI
        delivers the event again later). OpenAI announces a pending call on both voice
        runtimes and the first accept wins: only the announcement of the configured
        ``runtime`` (``NAVAI_CALL_RUNTIME``) is acted on, once per call.
        """
        try:
            checked = verify_webhook(secret, context.headers, body)
        except InvalidWebhook as exc:
            client = context.client or "unknown"
            if self._refusals.allow(client):
                logger.warning(
                    "webhook refused from %s: %s (webhook-id %.80r; further refusals from it "
                    "are not logged for %d s)",
                    client,
                    exc.message,
                    context.header("webhook-id"),
                    self._refusals.seconds,
                )
            raise
        event = parse_webhook_event(body)
        acting = incoming_call_runtime(event.type, runtime)
        if acting is None:
            logger.debug("webhook %s (%s) ignored", checked.webhook_id, event.type[:100])
            return accepted()
        if acting == "live":
            found = parse_live_incoming_call(event, checked.webhook_id)
            if found is None:  # a Live transport that is not a phone call
                return accepted()
            call = found
        else:
            call = parse_incoming_call(event, checked.webhook_id)
        if not self.seen.first(checked.webhook_id):
            logger.info(
                "webhook %s for call %s delivered again; ignored",
                checked.webhook_id,
                call.call_id,
            )
            return accepted()
        if not self.seen.first(_CALL + call.call_id):  # e.g. live.call.incoming's twin
            logger.info("call %s announced again; ignored", call.call_id)
            return accepted()
        if len(self._pending) >= MAX_PENDING_CALLS:
            self.seen.forget(checked.webhook_id)
            self.seen.forget(_CALL + call.call_id)
            logger.warning(
                "%s incoming calls being answered; call %s answered 503",
                self.pending,
                call.call_id,
            )
            return Reply(503, {"error": BUSY}, (("Retry-After", "1"),))
        return call

    # ----- starting the background work --------------------------------------------------

    def start(self, call: IncomingCall) -> None:
        """Answer ``call`` on the running event loop (async servers), without waiting."""
        task = asyncio.get_running_loop().create_task(self.answer(call))
        self._track(task, call.call_id)

    def start_background(self, call: IncomingCall) -> None:
        """Answer ``call`` on navai's background loop (sync servers), without waiting."""
        self._track(self._concurrency.submit(self.answer(call)), call.call_id)

    def _track(
        self, future: asyncio.Future[None] | concurrent.futures.Future[None], call_id: str
    ) -> None:
        with self._lock:
            self._pending[future] = call_id

        def done(f: Any) -> None:
            with self._lock:
                self._pending.pop(future, None)

        future.add_done_callback(done)

    def _cancel_unplaced(self) -> list[asyncio.Future[None] | concurrent.futures.Future[None]]:
        """Cancel the answers that hold no place yet (the hook, the budget); those being
        accepted in a place go on: the call manager's shutdown waits for their places, and
        the call, accepted as the server stops, is hung up rather than left unheld."""
        with self._lock:
            cancelled = [f for f, c in self._pending.items() if c not in self._accepting]
        for future in cancelled:
            future.cancel()
        return cancelled

    async def aclose(self) -> None:
        """Cancel the incoming calls still being answered that hold no place (server
        shutdown)."""
        tasks = [f for f in self._cancel_unplaced() if isinstance(f, asyncio.Future)]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self._cancel_unplaced()

    # ----- the work itself -----------------------------------------------------------------

    async def answer(self, call: IncomingCall) -> None:
        """Ask the hook, send the verdict upstream and, on accept, attach the sideband.

        Never raises: every failure is logged (the call then rings out or is dropped by
        OpenAI)."""
        try:
            await self._answer(call)
        except NavaiError as exc:
            logger.error("phone call %s: %s", call.call_id, exc.message[:500])
        except Exception:
            logger.exception("phone call %s failed", call.call_id)

    async def _answer(self, call: IncomingCall) -> None:
        verdict = await ask_hook(self._hook, call, self._concurrency)
        rate_key = budget_key(call, verdict) if isinstance(verdict, AcceptCall) else None
        place: Place | None = None
        if rate_key is not None:
            try:
                if self._check_budget is not None:
                    await self._check_budget(rate_key)
                if self._attach is not None and self._reserve is not None:
                    # The place is taken here, before /accept: a burst of calls accepts only
                    # as many as the process can hold (the rest are rejected, never hung up).
                    with self._lock:  # (seen at once by a shutdown's cancelling)
                        place = self._reserve()
                        self._accepting.add(call.call_id)
            except NavaiError as exc:
                logger.info(
                    "phone call %s: %s; rejecting it (%s)",
                    call.call_id,
                    exc.message,
                    BUDGET_SPENT_STATUS,
                )
                verdict, rate_key = RejectCall(BUDGET_SPENT_STATUS), None
        try:
            await self._send_verdict(call, verdict, rate_key, place)
        finally:
            if place is not None:
                with self._lock:
                    self._accepting.discard(call.call_id)
                place.release()  # (a no-op once the call holds it)

    async def _send_verdict(
        self, call: IncomingCall, verdict: CallVerdict, rate_key: str | None, place: Place | None
    ) -> None:
        """Send ``verdict`` upstream; an accepted call is then held in ``place``, or hung up."""
        target = self._target()
        session = await self._session() if isinstance(verdict, AcceptCall) else None
        live = call.runtime == "live"
        build = build_live_verdict_request if live else build_verdict_request
        request = build(target, call, verdict, session)
        try:
            reply = await asend(self._client(), request, self._retry)
        except (NavaiError, asyncio.CancelledError) as exc:
            # It may have been accepted all the same. (A shutdown's cancel can land here: under
            # WSGI it crosses to the loop a moment after the shutdown picked this answer.)
            if isinstance(verdict, AcceptCall):
                why = "stopping" if isinstance(exc, asyncio.CancelledError) else "no answer"
                await self._hang_up(call, target, f"its /accept was cut short ({why})")
            raise
        if not 200 <= reply.status <= 299:
            failure = upstream_failure(request, reply.status, reply.content, reply.headers)
            logger.warning("phone call %s: %s", call.call_id, failure.message[:500])
            return
        _log_verdict(call, verdict)
        if rate_key is not None and self._attach is not None:
            assert isinstance(verdict, AcceptCall)
            accepted = _accepted_session(live, session or {}, verdict)
            try:  # the key that accepted the call holds its control connection
                self._attach(
                    call.call_id,
                    api_key=target.key,
                    rate_key=rate_key,
                    transport="sip",
                    session=accepted,
                    place=place,
                )
            except Exception as exc:
                # Not held (the server began to stop, or the call could not be set up): an
                # accepted call never runs without an owner.
                reason = exc.message if isinstance(exc, NavaiError) else repr(exc)
                await self._hang_up(call, target, reason)

    async def _hang_up(self, call: IncomingCall, target: RealtimeTarget, reason: str) -> None:
        """Hang up an accepted call this process does not hold (a failure is logged)."""
        logger.warning("phone call %s: %s; hanging it up", call.call_id, reason[:500])
        hang_up = build_live_hangup_request if call.runtime == "live" else build_hangup_request
        try:
            reply = await asend(self._client(), hang_up(target, call.call_id), self._retry)
        except NavaiError as exc:
            logger.warning("hanging up phone call %s failed: %s", call.call_id, exc.message[:500])
            return
        if not 200 <= reply.status <= 299 and reply.status != 404:
            logger.warning(
                "hanging up phone call %s: OpenAI answered %s", call.call_id, reply.status
            )


def phone_calls_for(
    config: NavaiConfig,
    calls: CallManager,
    *,
    functions: Callable[[], Awaitable[FunctionRegistry]],
    client: Callable[[], Any],
    retry_policy: RetryPolicy,
    concurrency: Concurrency,
) -> PhoneCalls:
    """The incoming phone calls of a server with ``config``: answered with its phone session
    (its ``functions()`` when functions are on), held by ``calls`` like a WebRTC call (a
    control connection when functions are on), within its budgets and places."""

    async def session() -> dict[str, Any]:
        registry = await functions() if config.functions_enabled else None
        return phone_session(config, registry)

    return PhoneCalls(
        target=lambda: realtime_target(config),
        session=session,
        client=client,
        retry_policy=retry_policy,
        hook=config.on_incoming_call,
        attach=calls.attach if config.call_sideband else None,
        check_budget=calls.budgets.acheck,
        reserve=calls.reserve,
        concurrency=concurrency,
    )


def _accepted_session(live: bool, session: Mapping[str, Any], verdict: AcceptCall) -> JsonObject:
    """The session a call was accepted with (what the session guard keeps)."""
    if live:
        inner = live_accept_body(session, verdict.session)["session"]
        return inner if isinstance(inner, dict) else {}
    return accept_body(session, verdict.session)


def _log_verdict(call: IncomingCall, verdict: CallVerdict) -> None:
    if isinstance(verdict, AcceptCall):
        logger.info("phone call %s accepted", call.call_id)
    elif isinstance(verdict, RejectCall):
        logger.info("phone call %s rejected (%s)", call.call_id, verdict.status_code)
    else:
        logger.info("phone call %s referred", call.call_id)


# ----- the webhook route ---------------------------------------------------------------------


class PhoneServer(Protocol):
    """What the webhook route uses of the server that answers: its settings and its
    :class:`PhoneCalls`."""

    @property
    def config(self) -> NavaiConfig: ...

    def phone_calls(self) -> PhoneCalls: ...


@attrs.frozen
class AnswerCall:
    """The step a delivery of an incoming call (``realtime.call.incoming``, or
    ``live.transport.incoming`` on Live) leaves: start answering the call in
    the background (the server's loop, or navai's background loop for sync servers) and
    answer OpenAI 200 at once."""

    call: IncomingCall

    def run(self, navai: PhoneServer) -> Reply:
        navai.phone_calls().start_background(self.call)
        return accepted()

    async def arun(self, navai: PhoneServer) -> Reply:
        navai.phone_calls().start(self.call)
        return accepted()


def plan_webhook(
    navai: PhoneServer, context: RequestContext, body: bytes, found: object
) -> Reply | AnswerCall:
    """The plan of ``POST <webhook path>`` (a ``raw_body`` row: ``body`` is the bytes as
    received, within ``max_body_bytes``, since the signature covers exactly them)."""
    config = navai.config
    assert config.openai_webhook_secret is not None  # the route exists only with a secret
    secret = config.openai_webhook_secret
    planned = navai.phone_calls().plan(secret, context, body, config.call_runtime)
    return AnswerCall(planned) if isinstance(planned, IncomingCall) else planned
