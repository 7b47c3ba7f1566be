"""GPT-Live as a :class:`Runtime` of the call manager (CONTRACT.md section 11).

The control connection is ``<ws base>/live/sessions/<id>/attach`` (navai sends no
``session.start``: the session runs already), navai hangs up with
``POST <base>/live/sessions/<id>/hangup``, and the tools follow :class:`LiveToolLoop`. The
paths are the provider's (``upstream/providers.py``: ``LIVE``). A Live browser may send no
event (``allowed_client_events: []``), so there is no session guard.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ..upstream.messages import UpstreamRequest
from ..upstream.providers import RealtimeTarget
from .guard import SessionGuard
from .live import build_live_hangup_request, live_sideband_url
from .live_sideband import LiveToolLoop
from .runtime import REALTIME, Runtime, ToolProtocol


@attrs.frozen
class _Live:
    name: str = "live"

    def sideband_url(self, target: RealtimeTarget, call_id: str) -> str:
        return live_sideband_url(target, call_id)

    def hangup_request(self, target: RealtimeTarget, call_id: str) -> UpstreamRequest:
        return build_live_hangup_request(target, call_id)

    def tool_protocol(self) -> ToolProtocol:
        return LiveToolLoop()

    def session_guard(self, session: Mapping[str, Any], mode: str) -> SessionGuard | None:
        return None


#: OpenAI GPT-Live: ``/live/sessions/<id>/attach`` and ``/live/sessions/<id>/hangup``.
LIVE: Runtime = _Live()

_BY_NAME: Mapping[str, Runtime] = MappingProxyType({REALTIME.name: REALTIME, LIVE.name: LIVE})


def runtime_for(name: str) -> Runtime:
    """The runtime ``NAVAI_CALL_RUNTIME`` names (``realtime`` or ``live``)."""
    return _BY_NAME.get(name, REALTIME)
