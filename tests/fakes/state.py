"""The fake OpenAI's state, shared by its HTTP routes, its sideband and the mock transport:
recorded requests, scripted answers, calls. No socket here (:mod:`fakes.server` serves it).

Answers: a request is recorded, then answered by :meth:`OpenAIState.respond` (a subclass's own
rule), else the next queued :class:`Behaviour` (``answer``, ``behave(times=n)``), else the
default one (``behave()``, ``default``). A behaviour with a body answers it; one without lets
the route table (:mod:`fakes.routes`) answer, with the behaviour's status if it sets one.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fakes import routes
from fakes.routes import Reply
from fakes.sideband import FakeCall


@dataclass(frozen=True)
class Recorded:
    """One HTTP request the fake received. Header names are lower-case; ``path`` keeps the
    query string and the percent-encoding it was sent with."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    number: int = 0  # 1 for the first request since the last reset

    def json(self) -> Any:
        """The JSON body, or None for an empty one."""
        return json.loads(self.body) if self.body else None


@dataclass
class Behaviour:
    """How to answer one request. ``body`` None: the route's answer (``status``, when set,
    replaces its status)."""

    status: int | None = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line (a hang)
    trickle: float = 0.0  # seconds between body bytes
    drop: bool = False  # close the connection without answering
    content_type: str | None = "application/json"  # None: no Content-Type header

    @classmethod
    def json(cls, status: int, data: object, **kw: Any) -> Behaviour:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return cls(status, json.dumps(data).encode(), headers, **kw)

    def reply(self, state: OpenAIState, request: Recorded) -> Reply:
        """The status, headers and body to send (no delay, trickle or drop: those are the
        server's)."""
        if self.body is None:
            found = routes.route(state, request)
            status = found.status if self.status in (None, 200) else self.status
            return Reply(status, found.body, {**found.headers, **self.headers})
        kind = {"Content-Type": self.content_type} if self.content_type else {}
        return Reply(self.status or 200, self.body, {**kind, **self.headers})


Answer = Behaviour  # what the fault tests call one scripted answer
PLAIN = Behaviour(status=None)  # the route table's own answer


class OpenAIState:
    """Everything the fake knows. Thread-safe."""

    def __init__(self, *, key: str | None = None) -> None:
        self.key = key  # when set, the calls routes and the sideband want Bearer <key>
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._queue: deque[Behaviour] = deque()
        self._default = PLAIN
        self.calls: dict[str, FakeCall] = {}
        self.create_status: int | None = None  # answer POST /realtime/calls with this instead
        self.create_headers: dict[str, str] | None = None
        self.create_body: bytes | None = None
        self._ids = itertools.count(1)
        self._open = 0

    # ----- scripting answers -----------------------------------------------------------------

    def behave(
        self,
        status: int | None = 200,
        body: bytes | str | Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        times: int | None = None,
    ) -> None:
        """Answer the next ``times`` requests this way (every request when ``times`` is None)."""
        behaviour = Behaviour(status, _encode(body), dict(headers or {}), delay)
        with self._lock:
            if times is None:
                self._queue.clear()
                self._default = behaviour
            else:
                self._queue.extend([behaviour] * times)

    def answer(self, *behaviours: Behaviour) -> None:
        """Answer the next requests with ``behaviours``, one each, in order."""
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def default(self) -> Behaviour:
        return self._default

    @default.setter
    def default(self, behaviour: Behaviour) -> None:
        """How every request past the queued answers is answered."""
        with self._lock:
            self._default = behaviour

    def reset(self) -> None:
        """Forget requests, scripted answers and calls."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._default = PLAIN
            self.calls.clear()
            self.create_status = self.create_headers = self.create_body = None

    def respond(self, recorded: Recorded) -> Behaviour | None:
        """An answer decided by the request itself, before the queue (a subclass's own rule,
        such as a wrong key); None: the queued or default behaviour."""
        return None

    def record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Recorded:
        with self._lock:
            recorded = Recorded(method, path, headers, body, len(self._requests) + 1)
            self._requests.append(recorded)
            return recorded

    def behaviour_for(self, recorded: Recorded) -> Behaviour:
        behaviour = self.respond(recorded)
        if behaviour is not None:
            return behaviour
        with self._lock:
            return self._queue.popleft() if self._queue else self._default

    # ----- what was received ---------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    received = requests

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """The recorded requests once there are at least ``count`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests
            if len(found) >= count:
                return found
            time.sleep(0.01)
        raise AssertionError(f"expected {count} upstream requests, got {len(self.requests)}")

    # ----- calls ----------------------------------------------------------------------------------

    def authorized(self, headers: Mapping[str, str]) -> bool:
        return self.key is None or headers.get("authorization") == f"Bearer {self.key}"

    def new_call(
        self, sdp: str, session: dict[str, Any], authorization: str, runtime: str = "realtime"
    ) -> FakeCall:
        prefix = "live_fake" if runtime == "live" else "rtc_fake"
        call = FakeCall(f"{prefix}{next(self._ids)}", sdp, session, authorization, self, runtime)
        self.calls[call.call_id] = call
        return call

    def open_call(
        self,
        session: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
        runtime: str = "realtime",
    ) -> FakeCall:
        """A call as if created over HTTP (tests of the sideband alone), or a phone call
        OpenAI holds pending under ``call_id`` (as a webhook body names it); ``runtime="live"``
        for a GPT-Live session."""
        call = self.new_call("v=0", session or {}, f"Bearer {self.key}", runtime)
        if call_id is not None:
            del self.calls[call.call_id]
            call.call_id = call_id
            self.calls[call_id] = call
        return call

    def pending_call(self, session_id: str | None = None) -> FakeCall:
        """A Live phone call OpenAI holds for acceptance (announce it with
        ``fakes.live.live_transport_incoming``)."""
        return self.open_call(call_id=session_id, runtime="live")

    def call(self, call_id: str | None = None, timeout: float = 10.0) -> FakeCall:
        """The call with ``call_id``, or the only one there is (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            calls = list(self.calls.values())
            if call_id is not None and call_id in self.calls:
                return self.calls[call_id]
            if call_id is None and len(calls) == 1:
                return calls[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no such call {call_id!r}: {list(self.calls)}")
            time.sleep(0.01)

    def live_sidebands(self) -> int:
        return self._open

    def call_soon(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` where the sideband runs (the server's loop; at once without one)."""
        fn(*args)


def _encode(body: bytes | str | Mapping[str, Any] | None) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()
