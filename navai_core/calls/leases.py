"""Who holds which call, in the shared store: leases another worker can take over (CONTRACT §13).

With ``NAVAI_RATE_LIMIT_STORAGE=redis://...`` every worker writes each call it holds to Redis,
under a lease it renews every third of ``NAVAI_CALL_LEASE_SECONDS``. Redis does the
coordinating; nothing here is a protocol of navai's own:

- ``navai:call:<call id>``, a hash: ``entry`` (:class:`CallEntry` as JSON: what a successor
  needs: runtime, rate-limit key, model, start, max-length deadline, transport, the backend
  key's fingerprint — never a key —, and what the session guard keeps of the call's
  session), ``owner`` (the holding worker's id), ``workers`` (how
  many owners the call had), ``charged`` (budget seconds charged so far), and one ``fc:<id>``
  field per function call started and not answered yet (its name). It expires a minute after
  the call's deadline, so a forgotten entry cleans itself up.
- ``navai:call-leases``, a sorted set: each call id scored by the time (Redis's own clock,
  milliseconds) its lease lapses.

Each change is one small Lua script, so it is atomic: a renewal only extends a lease its
worker still owns (a worker that lost a call to another owner learns it and lets the call go;
a call whose entry is gone, Redis having restarted empty or failed over, its owner writes
again and goes on holding), and a claim
(:meth:`CallLeases.claim`) takes a lapsed lease for exactly one claimant. Writes are queued and
sent in order by one task on navai's background loop: the call's own loop never waits on
Redis. A store that fails is logged once; the calls go on, and the queue is sent again (every
``RETRY_SECONDS``) until Redis answers. The queue keeps the newest state of each call, not
every update (see :class:`WriteQueue`): an outage of any length costs a few writes per call.

:class:`CallHolds` is the shape the call manager uses (register on attach, the function
calls started and answered, forget at the end), so another record of held calls (a file a
supervisor reads) can take the same place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from .._http import Reply
from .._json import JsonObject
from ..functions.envelope import function_error
from .sideband import RESPONSE_CREATE, RunFunction

logger = logging.getLogger("navai")

CALL_PREFIX = "navai:call:"
LEASES = "navai:call-leases"
# The end reason of a call handed to another worker: no hangup, no record (the successor's).
HANDED_OVER = "handed_over"
# Seconds an entry outlives its call's deadline in Redis (then it expires by itself).
ENTRY_GRACE_SECONDS = 60
STORE_TIMEOUT_SECONDS = 1.0
# Seconds between two tries of the queued writes while the store fails.
RETRY_SECONDS = 0.5
# Lapsed leases one takeover scan looks at, at most (those of another backend key skipped).
SCAN_LOOK = 256

INTERRUPTED = "Function execution was interrupted."
INTERRUPTED_DETAILS = (
    "The server running this tool stopped before it answered; the tool was interrupted "
    "and may or may not have completed. Ask before trying it again."
)

# KEYS and ARGV of each script are in its comment; times come from Redis (TIME), in ms.
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
# KEYS: hash, leases. ARGV: call id, owner, entry JSON, lease ms, ttl s, key fingerprint.
_REGISTER = (
    _NOW
    + """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'entry', ARGV[3], 'owner', ARGV[2], 'workers', 1, 'charged', 0,
  'fp', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
return 1
"""
)
# KEYS: leases. ARGV: prefix, owner, lease ms, then (call id, charged seconds) pairs.
# Returns the call ids another owner holds now (lost), and those whose entry is gone (a
# Redis restarted empty, a failover, an eviction: the owner writes them again).
_RENEW = (
    _NOW
    + """
local lost = {}
local missing = {}
for i = 4, #ARGV, 2 do
  local h = ARGV[1] .. ARGV[i]
  local owner = redis.call('HGET', h, 'owner')
  if owner == ARGV[2] then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[i])
    redis.call('HSET', h, 'charged', ARGV[i + 1])
  elseif owner then
    table.insert(lost, ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
return {lost, missing}
"""
)
# KEYS: hash, leases. ARGV: call id, owner, entry JSON, lease ms, ttl s, key fingerprint,
# workers, charged seconds. Writes a held call's entry again, only when it is gone.
_RESTORE = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'entry', ARGV[3], 'owner', ARGV[2], 'workers', ARGV[7],
  'charged', ARGV[8], 'fp', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
return 1
"""
)
# KEYS: hash, leases. ARGV: call id, claimant, lease ms, the claimant's key fingerprint.
_CLAIM = (
    _NOW
    + """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > now then return false end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return false
end
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[4] then return false end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'workers', 1)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""
)
# KEYS: leases. ARGV: prefix, key fingerprint, at most this many, from this offset, looking at
# this many. The lapsed call ids this fingerprint may claim (or whose entry is gone: a claim
# cleans them up), oldest lapse first, and the offset to go on from (0: all were seen).
_CLAIMABLE = (
    _NOW
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', ARGV[4], ARGV[5])
local found = {}
local skipped = 0
for i = 1, #ids do
  local fp = redis.call('HGET', ARGV[1] .. ids[i], 'fp')
  if fp == ARGV[2] or not fp then
    table.insert(found, ids[i])
    if #found >= tonumber(ARGV[3]) then
      return {found, tonumber(ARGV[4]) + skipped}
    end
  else
    skipped = skipped + 1
  end
end
if #ids < tonumber(ARGV[5]) then return {found, 0} end
return {found, tonumber(ARGV[4]) + skipped}
"""
)
# KEYS: hash, leases. ARGV: call id, owner, the budget seconds charged so far ("": unknown,
# the stored ones stay). The call is handed over: its lease lapses now.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'charged', ARGV[3]) end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""
# KEYS: leases. ARGV: prefix, owner, then call ids that ended: each one still this owner's
# is removed.
_FORGET = """
local n = 0
for i = 3, #ARGV do
  local h = ARGV[1] .. ARGV[i]
  if redis.call('HGET', h, 'owner') == ARGV[2] then
    redis.call('DEL', h)
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""
# KEYS: hash. ARGV: owner, field, name ("" removes the field).
_PENDING = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[2])
else redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
return 1
"""


def key_fingerprint(key: str) -> str:
    """A key's fingerprint: never the key, enough to tell two keys apart."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16]


@attrs.frozen
class CallEntry:
    """What a worker that takes a call over needs to know of it."""

    call_id: str
    runtime: str
    key: str  # the rate-limit key: whose budget the call spends, who may hang it up
    model: str
    started_at: float  # Unix time
    deadline: float  # Unix time: the call is hung up then (NAVAI_CALL_MAX_SECONDS)
    transport: str
    key_fingerprint: str  # of the backend key the call was created with
    # What the Realtime session guard keeps of the call's session (calls/guard.py ``guarded``:
    # instructions, tools, tool choice, ...), so that a successor keeps guarding it; None:
    # no guard (GPT-Live, or a call attached without its session).
    session: JsonObject | None = None

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CallEntry:
        """The entry of ``text`` (an entry written before a field existed takes its default)."""
        data = json.loads(text)
        fields = attrs.fields(cls)
        return cls(
            **{f.name: data[f.name] for f in fields if f.name in data or f.default is attrs.NOTHING}
        )


@attrs.frozen
class Resume:
    """A call taken over from another worker: its original start, the budget seconds already
    charged, the function calls started and not answered (id -> name), and how many workers
    held it before this one."""

    entry: CallEntry
    pending: Mapping[str, str] = attrs.field(factory=dict)
    charged: int = 0
    workers: int = 2

    def events(self) -> list[JsonObject]:
        """What the new owner sends first: each orphaned function call answered with the
        error envelope (the tool was interrupted), then one ``response.create``."""
        if not self.pending:
            return []
        out: list[JsonObject] = []
        for call_id, name in self.pending.items():
            body = function_error(name, INTERRUPTED, INTERRUPTED_DETAILS)
            output = json.dumps(body)
            item: JsonObject = {"type": "function_call_output", "call_id": call_id}
            item["output"] = output
            out.append({"type": self._output_event, "item": item})
        return [*out, dict(RESPONSE_CREATE)]

    @property
    def _output_event(self) -> str:
        """How the call's runtime takes a function's output: Realtime's conversation item,
        GPT-Live's ``response.item.create`` (CONTRACT §11)."""
        live = self.entry.runtime == "live"
        return "response.item.create" if live else "conversation.item.create"

    def apply(self, call: Any) -> None:
        """Make a new call part count from the original start: its clocks, its budget
        charged so far, and the first events its connection sends."""
        ago = max(time.time() - self.entry.started_at, 0.0)
        call.started_at = self.entry.started_at
        call.started = time.monotonic() - ago
        call.limits.started = call.started
        call.limits.charged = self.charged
        call.connection.unsent.extend(json.dumps(e).encode() for e in self.events())


#: A call's function dispatch: ``dispatch(live_call, action) -> Reply``.
Dispatch = Callable[[Any, RunFunction], Awaitable[Reply]]


class CallHolds(Protocol):
    """Where the call manager records the calls it holds."""

    def register(self, call: Any, *, runtime: str, model: str, resume: Resume | None) -> None:
        """The manager holds ``call`` now (a new one, or one taken over: ``resume``)."""

    def track(self, call_id: str, dispatch: Dispatch) -> Any:
        """A :data:`Dispatch`: ``dispatch`` recording each function call as started, then
        as answered."""

    def forget(self, call_id: str) -> int:
        """``call_id`` has ended; how many workers held it."""

    def release(self, call_id: str) -> None:
        """``call_id`` is handed over: its lease lapses now (no hangup)."""

    def held(self) -> list[str]:
        """The call ids held here (a lease another worker took is no longer among them)."""


class CallLeases:
    """The leases of one worker (see the module). ``loop()`` gives the event loop its Redis
    client lives on (navai's background loop); every method may be called from any thread."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float,
        max_seconds: float,
        loop: Callable[[], asyncio.AbstractEventLoop],
        owner: str,
        on_lost: Callable[[str], None] = lambda call_id: None,
    ) -> None:
        self.url = url
        self.lease_ms = int(lease_seconds * 1000)
        self.max_seconds = max_seconds
        self.owner = owner
        self.on_lost = on_lost
        self._loop = loop
        self._lock = threading.Lock()
        self._held: dict[str, Callable[[], int]] = {}  # call id -> budget seconds charged
        self._workers: dict[str, int] = {}
        self._entries: dict[str, CallEntry] = {}  # what each held call was registered with
        self._ops = WriteQueue(loop, self._run, self._failed, self._forget)
        self._redis: Any = None
        self._renewer: asyncio.Task[None] | None = None
        self._failing = False
        self.writes = 0  # store round trips made (a test counts them)

    # ----- CallHolds ------------------------------------------------------------------------

    def register(self, call: Any, *, runtime: str, model: str, resume: Resume | None) -> None:
        call_id = call.call_id
        if resume is not None:
            entry = resume.entry
        else:
            entry = CallEntry(
                call_id=call_id,
                runtime=runtime,
                key=call.key,
                model=model,
                started_at=call.started_at,
                deadline=call.started_at + self.max_seconds,
                transport=call.transport,
                key_fingerprint=key_fingerprint(call.target.key),
                session=guard.kept if (guard := getattr(call, "guard", None)) else None,
            )
        with self._lock:
            self._held[call_id] = lambda: int(call.limits.charged)
            self._workers[call_id] = resume.workers if resume is not None else 1
            self._entries[call_id] = entry
        if resume is not None:
            resume.apply(call)
            if resume.pending:
                fields = [f"fc:{fc}" for fc in resume.pending]
                hdel: Op = lambda r: r.hdel(CALL_PREFIX + call_id, *fields)  # noqa: E731
                self._ops.put(call_id, "resume", hdel)
        else:
            ttl = int(self.max_seconds) + ENTRY_GRACE_SECONDS
            args = (call_id, self.owner, entry.to_json(), self.lease_ms, ttl, entry.key_fingerprint)
            self._ops.start(call_id, _eval(_REGISTER, [CALL_PREFIX + call_id, LEASES], args))
        self._start_renewing()

    def track(self, call_id: str, dispatch: Dispatch) -> Any:
        async def tracked(live: Any, action: RunFunction) -> Reply:
            field = f"fc:{action.call_id}"
            keys = [CALL_PREFIX + call_id]
            self._ops.put(call_id, field, _eval(_PENDING, keys, (self.owner, field, action.name)))
            reply = await dispatch(live, action)  # cancelled (handed over): stays pending
            self._ops.undo(call_id, field, _eval(_PENDING, keys, (self.owner, field, "")))
            return reply

        return tracked

    def forget(self, call_id: str) -> int:
        workers = self._drop(call_id)
        self._ops.end(call_id)
        return workers

    def release(self, call_id: str) -> None:
        with self._lock:
            charged = self._held.get(call_id)
        # Unknown (claimed, never attached here): the stored seconds stay as they are.
        args = (call_id, self.owner, charged() if charged is not None else "")
        self._drop(call_id)
        self._ops.put(call_id, "release", _eval(_RELEASE, [CALL_PREFIX + call_id, LEASES], args))

    @property
    def started(self) -> bool:
        """Whether this store was used (its client or its renewal exists)."""
        return self._redis is not None or self._renewer is not None or self._ops.draining

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    # ----- what a successor asks (coroutines on the store's loop) ---------------------------

    async def claimable(
        self, fingerprint: str, limit: int, cursor: int = 0
    ) -> tuple[list[str], int]:
        """Call ids whose lease has lapsed and that a worker whose backend key has
        ``fingerprint`` may claim, at most ``limit``, looking at ``SCAN_LOOK`` lapsed leases
        from ``cursor`` on (those of another key are skipped, never claimed here); and the
        cursor to go on from next time (0: every lapsed lease was seen)."""
        args = (CALL_PREFIX, fingerprint, limit, cursor, SCAN_LOOK)
        found, after = await self._call(_CLAIMABLE, [LEASES], args)
        return [_text(i) for i in found or ()], int(after)

    async def claim(self, call_id: str, fingerprint: str) -> Resume | None:
        """Take the lapsed call ``call_id`` (atomically: one claimant wins); ``None`` when
        its lease is alive, it is gone, someone else won, or it was made with another key."""
        keys = [CALL_PREFIX + call_id, LEASES]
        found = await self._call(_CLAIM, keys, (call_id, self.owner, self.lease_ms, fingerprint))
        if not found:
            return None
        fields = {_text(found[i]): _text(found[i + 1]) for i in range(0, len(found) - 1, 2)}
        pending = {k[3:]: v for k, v in fields.items() if k.startswith("fc:")}
        return Resume(
            CallEntry.from_json(fields["entry"]),
            pending,
            int(fields.get("charged") or 0),
            int(fields.get("workers") or 2),
        )

    async def entry(self, call_id: str) -> CallEntry | None:
        """The stored entry of ``call_id``, whoever holds it."""
        text = await self._run(lambda r: r.hget(CALL_PREFIX + call_id, "entry"))
        return CallEntry.from_json(_text(text)) if text else None

    async def on_loop(self, make: Callable[[], Awaitable[Any]], wait: float = 5.0) -> Any:
        """Await ``make()`` on the store's loop, from any loop."""
        loop = self._loop()
        if _running() is loop:
            return await make()
        future = asyncio.run_coroutine_threadsafe(_awaited(make), loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), wait)

    def on_loop_sync(self, make: Callable[[], Awaitable[Any]], wait: float = 5.0) -> Any:
        """``make()`` on the store's loop, from sync code off that loop."""
        future = asyncio.run_coroutine_threadsafe(_awaited(make), self._loop())
        return future.result(wait)

    async def flush(self, wait: float = 5.0) -> None:
        """Wait (on the store's loop) until every queued write has been sent."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not self._ops.idle:
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        """On the store's loop: send what is queued, stop renewing, close the client."""
        await self.flush()
        self._ops.close()
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose()

    # ----- the lease ------------------------------------------------------------------------

    def _start_renewing(self) -> None:
        if self._renewer is None:
            self._loop().call_soon_threadsafe(self._renew_soon)

    def _renew_soon(self) -> None:
        if self._renewer is None:
            self._renewer = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        every = self.lease_ms / 3000
        while True:
            await asyncio.sleep(every)
            with self._lock:
                held = [(c, charged()) for c, charged in self._held.items()]
            if not held:
                continue
            args: list[object] = [CALL_PREFIX, self.owner, self.lease_ms]
            for call_id, charged in held:
                args += [call_id, charged]
            try:
                lost, missing = await self._call(_RENEW, [LEASES], args)
            except Exception as exc:
                self._failed(exc)
                continue
            if missing:  # once per renewal, not once per call
                logger.warning("%d held calls were gone from the call store", len(missing))
            for call_id in map(_text, missing or ()):
                self._restore(call_id)
            for call_id in map(_text, lost or ()):
                if self._drop(call_id):
                    logger.warning("call %s is held by another worker now: letting it go", call_id)
                    self.on_lost(call_id)

    def _restore(self, call_id: str) -> None:
        """Queue writing held ``call_id`` again, its entry gone from the store (a Redis
        restarted empty, a failover, an eviction): still this worker's, and claimable once
        this worker stops renewing it. The function calls it had pending are not written
        again (a successor would not answer them for the tool)."""
        with self._lock:  # with the queueing: a call forgotten meanwhile is not written again
            charged = self._held.get(call_id)
            entry = self._entries.get(call_id)
            if charged is None or entry is None:
                return
            ttl = max(int(entry.deadline - time.time()), 1) + ENTRY_GRACE_SECONDS
            workers = self._workers.get(call_id, 1)
            fingerprint = entry.key_fingerprint
            args: list[object] = [call_id, self.owner, entry.to_json(), self.lease_ms, ttl]
            args += [fingerprint, workers, charged()]
            keys = [CALL_PREFIX + call_id, LEASES]
            self._ops.put(call_id, "restore", _eval(_RESTORE, keys, args))

    def _forget(self, call_ids: list[str]) -> Op:
        """The one write that removes the ended calls ``call_ids`` still this worker's."""
        return _eval(_FORGET, [LEASES], (CALL_PREFIX, self.owner, *call_ids))

    def _drop(self, call_id: str) -> int:
        with self._lock:
            held = self._held.pop(call_id, None) is not None
            workers = self._workers.pop(call_id, 1)
            self._entries.pop(call_id, None)
        return workers if held else 0

    # ----- Redis ----------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._redis is None:
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(
                self.url,
                socket_timeout=STORE_TIMEOUT_SECONDS,
                socket_connect_timeout=STORE_TIMEOUT_SECONDS,
            )
        return self._redis

    async def _run(self, op: Callable[[Any], Awaitable[Any]]) -> Any:
        self.writes += 1
        result = await op(self._client())
        if self._failing:
            self._failing = False
            logger.warning("the call store answers again")
        return result

    async def _call(self, script: str, keys: list[str], args: Sequence[object]) -> Any:
        return await self._run(lambda r: r.eval(script, len(keys), *keys, *args))

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            # The class only: the text may name the store's address or password.
            logger.error("the call store failed (%s); calls go on", type(exc).__name__)


#: One write: ``op(redis)``.
Op = Callable[[Any], Awaitable[object]]


def _eval(script: str, keys: list[str], args: Sequence[object]) -> Op:
    return lambda r: r.eval(script, len(keys), *keys, *args)


class WriteQueue:
    """The writes of a lease store, sent in order by one task on ``loop()`` with ``run(op)``;
    a write that fails (``failed(exc)``) is tried again every ``RETRY_SECONDS`` until the
    store answers. Thread-safe.

    It keeps the newest state of each call, not each update, so that an outage costs a
    few writes per call held, whatever the calls do meanwhile: each write has a slot
    (``call id``, what it writes) and a newer write to a slot replaces the one queued there;
    a call's registration drops what was queued for the call before; a function call
    answered before its start was sent leaves nothing (:meth:`undo`), and so does a call
    that ended before its registration was sent (:meth:`end`). The calls that ended after
    it was sent share one slot: ``forget(call ids)`` is one write removing up to
    ``FORGET_BATCH`` of them, so calls ending during an outage cost one queued write (and
    a call id each), not one write each."""

    REGISTER = "register"
    FORGETS = ("", "forget")  # the one slot of the ended calls' removal
    FORGET_BATCH = 500

    def __init__(
        self,
        loop: Callable[[], asyncio.AbstractEventLoop],
        run: Callable[[Op], Awaitable[object]],
        failed: Callable[[BaseException], None],
        forget: Callable[[list[str]], Op],
    ) -> None:
        self._loop = loop
        self._run = run
        self._failed = failed
        self._forget = forget
        self._lock = threading.Lock()
        self._ops: dict[tuple[str, str], Op] = {}  # in the order they are sent
        self._ended: dict[str, None] = {}  # the call ids to remove, oldest first
        self.draining = False
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being sent."""
        with self._lock:
            return not self._ops and not self.draining

    def put(self, call_id: str, slot: str, op: Op) -> None:
        """Queue ``op``, in place of the write queued in its slot."""
        with self._lock:
            self._ops[(call_id, slot)] = op
        self._wake()

    def start(self, call_id: str, op: Op) -> None:
        """Queue the registration ``op`` of ``call_id`` (which writes its whole state)."""
        with self._lock:
            self._drop(call_id)
            self._ops[(call_id, self.REGISTER)] = op
        self._wake()

    def undo(self, call_id: str, slot: str, op: Op) -> None:
        """Queue ``op``, which undoes the write of ``slot``; nothing when that write is still
        queued (it is dropped: the store never saw it)."""
        with self._lock:
            if self._ops.pop((call_id, slot), None) is not None:
                return
            self._ops[(call_id, slot)] = op
        self._wake()

    def end(self, call_id: str) -> None:
        """Queue removing ``call_id`` from the store, in place of everything queued for it;
        nothing when its registration is still queued."""
        with self._lock:
            unsent = (call_id, self.REGISTER) in self._ops
            self._drop(call_id)
            if unsent:
                return
            self._ended[call_id] = None
            self._ops.setdefault(self.FORGETS, self._send_ended)
        self._wake()

    async def _send_ended(self, redis: Any) -> None:
        with self._lock:
            ids = list(self._ended)[: self.FORGET_BATCH]
        await self._forget(ids)(redis)
        with self._lock:  # those ended since stay, in the slot again
            for call_id in ids:
                self._ended.pop(call_id, None)
            if self._ended:
                self._ops.setdefault(self.FORGETS, self._send_ended)

    def close(self) -> None:
        """Send nothing more (what is queued is given up)."""
        with self._lock:
            self._closed = True
            self._ops.clear()
            self._ended.clear()

    def _drop(self, call_id: str) -> None:
        for key in [key for key in self._ops if key[0] == call_id]:
            del self._ops[key]
        self._ended.pop(call_id, None)

    def _wake(self) -> None:
        with self._lock:
            if self.draining or self._closed:
                return
            self.draining = True
        self._loop().call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._ops or self._closed:
                    self.draining = False
                    return
                key = next(iter(self._ops))
                op = self._ops.pop(key)
            try:
                await self._run(op)
            except Exception as exc:
                self._failed(exc)
                with self._lock:  # first again, unless a newer write took its slot
                    if key not in self._ops:
                        self._ops = {key: op, **self._ops}
                await asyncio.sleep(RETRY_SECONDS)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _awaited(make: Callable[[], Awaitable[Any]]) -> Any:
    return await make()


def _running() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = [
    "HANDED_OVER",
    "CallEntry",
    "CallHolds",
    "CallLeases",
    "Resume",
    "WriteQueue",
    "key_fingerprint",
]
