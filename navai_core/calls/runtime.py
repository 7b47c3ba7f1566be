"""A voice runtime: where a call's control connection goes, how navai hangs it up, and the
protocol its tool calls follow.

The call manager, the connection, the tool runner and the limits do not depend on the
runtime; :data:`REALTIME` (OpenAI Realtime, CONTRACT.md section 8) is here, GPT-Live
(section 11) is ``calls/live_runtime.py``. A runtime gives its URLs and requests, a
:class:`ToolProtocol` state machine (pure, like :class:`ToolLoop`) that reads its server
events and answers with the actions of ``calls/sideband.py``, and, where a browser could
change the session navai set, a :class:`SessionGuard`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from .._json import JsonValue
from ..upstream.messages import UpstreamRequest
from ..upstream.providers import RealtimeTarget
from .guard import SessionGuard
from .plans import build_hangup_request, sideband_url
from .sideband import Action, ToolLoop


class ToolProtocol(Protocol):
    """The tool decisions of one call (one instance per call): ``feed`` each server event,
    ``output_ready`` each function's output; both answer with actions."""

    @property
    def function_calls(self) -> int: ...

    @property
    def usage(self) -> Mapping[str, JsonValue]: ...

    # The runtime said the call is over (Live's ``session.closed``), with its reason, and the
    # seconds it bills (None where the runtime bills by token).
    @property
    def closed(self) -> bool: ...

    @property
    def close_reason(self) -> str | None: ...

    @property
    def seconds(self) -> float | None: ...

    # Actions: those of ``calls/sideband.py`` (RunFunction, SendEvent) and any the runtime
    # adds (Live's EndCall); the tool runner carries out the ones it knows.
    def feed(self, event: object) -> Sequence[Action | object]: ...

    def output_ready(self, call_id: str, output: str) -> Sequence[Action | object]: ...


class Runtime(Protocol):
    """What differs between voice runtimes once a call exists."""

    @property
    def name(self) -> str: ...

    def sideband_url(self, target: RealtimeTarget, call_id: str) -> str: ...

    def hangup_request(self, target: RealtimeTarget, call_id: str) -> UpstreamRequest: ...

    def tool_protocol(self) -> ToolProtocol: ...

    def session_guard(self, session: Mapping[str, Any], mode: str) -> SessionGuard | None:
        """What keeps the session navai set (None: the runtime's browser cannot change it)."""
        ...


class _RealtimeTools(ToolLoop):
    """Realtime's tool loop: the call ends when its control connection closes, and it is
    billed by token."""

    closed = False
    close_reason: str | None = None
    seconds: float | None = None


@attrs.frozen
class _Realtime:
    name: str = "realtime"

    def sideband_url(self, target: RealtimeTarget, call_id: str) -> str:
        return sideband_url(target, call_id)

    def hangup_request(self, target: RealtimeTarget, call_id: str) -> UpstreamRequest:
        return build_hangup_request(target, call_id)

    def tool_protocol(self) -> ToolProtocol:
        return _RealtimeTools()

    def session_guard(self, session: Mapping[str, Any], mode: str) -> SessionGuard | None:
        return SessionGuard(session, mode)


#: OpenAI Realtime: ``/realtime?call_id=`` and ``/realtime/calls/<id>/hangup``.
REALTIME: Runtime = _Realtime()
