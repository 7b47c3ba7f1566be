"""What OpenAI sends, in one place: the bodies and events every fake answers with.

The HTTP fake (:mod:`fakes.server`), the mock transport (:mod:`fakes.mock`) and the benchmark's
raw-protocol upstream (``benchmarks/fake_openai.py``) all build their answers here, and
``tests/test_fakes.py`` checks them against openai-python's own client and types.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "ek_fake_"
EXPIRES_AT = 1_900_000_000
ANSWER_SDP = "v=0\r\no=- 4242 2 IN IP4 127.0.0.1\r\ns=fake answer\r\n"


def client_secret_reply(request_body: Mapping[str, Any], number: int) -> dict[str, Any]:
    """``POST /v1/realtime/client_secrets``: the secret plus an echo of the session asked for."""
    session = dict(request_body.get("session") or {"type": "realtime"})
    session.setdefault("type", "realtime")
    if session["type"] == "realtime":
        session.setdefault("object", "realtime.session")
    session.setdefault("id", f"sess_fake_{number}")
    return {"value": f"{SECRET_PREFIX}{number}", "expires_at": EXPIRES_AT, "session": session}


default_reply = client_secret_reply  # the name the fault tests know


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# ----- sideband (server events) -------------------------------------------------------------

_events = itertools.count(1)


def event_id() -> str:
    return f"event_fake{next(_events)}"


def fn_call(call_id: str, name: str, arguments: object, response: str = "resp_1") -> dict[str, Any]:
    """``response.function_call_arguments.done``: a function call whose arguments are complete
    (``arguments`` a JSON value, or already its text)."""
    return {
        "type": "response.function_call_arguments.done",
        "event_id": event_id(),
        "response_id": response,
        "item_id": f"item_{call_id}",
        "output_index": 0,
        "call_id": call_id,
        "name": name,
        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
    }


def response_done(
    response: str,
    *calls: tuple[str, str, object],
    status: str = "completed",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``response.done`` whose output holds ``calls`` (call id, name, arguments)."""
    output = [
        {"type": "function_call", "call_id": c, "name": n, "arguments": json.dumps(a)}
        for c, n, a in calls
    ]
    return {
        "type": "response.done",
        "event_id": event_id(),
        "response": {"id": response, "status": status, "output": output, "usage": usage or {}},
    }


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    """Parse ``multipart/form-data`` strictly: name -> (content type, bytes)."""
    kind, _, params = content_type.partition(";")
    assert kind.strip() == "multipart/form-data", content_type
    boundary = params.strip().removeprefix("boundary=").strip('"')
    assert boundary, "no boundary"
    marker = f"--{boundary}".encode()
    assert body.startswith(marker + b"\r\n") and body.endswith(marker + b"--\r\n"), "framing"
    found: dict[str, tuple[str, bytes]] = {}
    for chunk in body[: -len(marker) - 4].split(marker + b"\r\n")[1:]:
        assert chunk.endswith(b"\r\n"), "part end"
        head, sep, data = chunk[:-2].partition(b"\r\n\r\n")
        assert sep, "part head"
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        disposition = fields["Content-Disposition"]
        assert disposition.startswith('form-data; name="'), disposition
        name = disposition.split('name="', 1)[1].split('"', 1)[0]
        assert name not in found, f"duplicate part {name}"
        found[name] = (fields["Content-Type"], data)
    return found
