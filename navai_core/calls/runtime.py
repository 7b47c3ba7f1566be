"""A voice runtime: where a call's control connection goes, how navai hangs it up, and the
protocol its tool calls follow.

The call manager, the connection, the tool runner and the limits do not depend on the
runtime; :data:`REALTIME` (OpenAI Realtime, CONTRACT.md section 8) is the one navai has. A
second runtime is one more module in ``calls/`` giving a :class:`Runtime`: its URLs and
requests, and a :class:`ToolProtocol` state machine (pure, like :class:`ToolLoop`) that reads
its server events and answers with the actions of ``calls/sideband.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import attrs

from .._json import JsonValue
from ..upstream.messages import UpstreamRequest
from ..upstream.providers import RealtimeTarget
from .plans import build_hangup_request, sideband_url
from .sideband import Action, ToolLoop


class ToolProtocol(Protocol):
    """The tool decisions of one call (one instance per call): ``feed`` each server event,
    ``output_ready`` each function's output; both answer with actions."""

    @property
    def function_calls(self) -> int: ...

    @property
    def usage(self) -> Mapping[str, JsonValue]: ...

    def feed(self, event: object) -> list[Action]: ...

    def output_ready(self, call_id: str, output: str) -> list[Action]: ...


class Runtime(Protocol):
    """What differs between voice runtimes once a call exists."""

    @property
    def name(self) -> str: ...

    def sideband_url(self, target: RealtimeTarget, call_id: str) -> str: ...

    def hangup_request(self, target: RealtimeTarget, call_id: str) -> UpstreamRequest: ...

    def tool_protocol(self) -> ToolProtocol: ...


@attrs.frozen
class _Realtime:
    name: str = "realtime"

    def sideband_url(self, target: RealtimeTarget, call_id: str) -> str:
        return sideband_url(target, call_id)

    def hangup_request(self, target: RealtimeTarget, call_id: str) -> UpstreamRequest:
        return build_hangup_request(target, call_id)

    def tool_protocol(self) -> ToolProtocol:
        return ToolLoop()


#: OpenAI Realtime: ``/realtime?call_id=`` and ``/realtime/calls/<id>/hangup``.
REALTIME: Runtime = _Realtime()
