"""OpenTelemetry spans (CONTRACT §12), through the global tracer provider.

navai never configures a provider or an exporter: the application's OpenTelemetry set-up
decides where spans go (with only ``opentelemetry-api`` installed they go nowhere, at almost no
cost). Without the package nothing is imported: :func:`available` looks for it without
importing it, and the wrappers below then hand back what they were given.

Spans (names and attributes follow the GenAI semantic conventions, which OpenTelemetry still
marks as in development):

- ``navai.call``, one per call, made when the call ends with its real start and end times:
  ``gen_ai.system`` = ``openai`` (and its newer name ``gen_ai.provider.name``),
  ``gen_ai.request.model``, ``navai.call.id``, ``navai.call.runtime``, ``navai.call.transport``,
  ``navai.call.end_reason``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
  ``navai.call.cost_usd`` (when known);
- ``execute_tool <name>``, a child of ``navai.call`` per tool run of the call
  (``gen_ai.operation.name`` = ``execute_tool``, ``gen_ai.tool.name``, ``gen_ai.tool.call.id``;
  status ERROR with the text the model got, and ``error.type``, when it failed). The execute
  route's runs get the same span from :func:`traced_run` / :func:`atraced_run` around the
  dispatch; a call's runs (their context's method is ``CALL``) are left to the call record,
  so that each run has exactly one span, parented to its call whatever task ran it;
- ``navai.client_secret`` around a mint (:func:`traced_step`).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from .._http import Reply, RequestContext

F = TypeVar("F", bound="Callable[..., Reply]")
A = TypeVar("A", bound="Callable[..., Awaitable[Reply]]")

TRACER_NAME = "navai"
CALL_SPAN = "navai.call"
CLIENT_SECRET_SPAN = "navai.client_secret"
EXECUTE_TOOL = "execute_tool"
CALL_METHOD = "CALL"  # RequestContext.method of a call's function runs (calls/manager.py)
FUNCTION_CALL_ID_HEADER = "x-navai-function-call-id"


class PreparedCall(Protocol):
    """What a tool span reads of a prepared call (``functions.dispatch.PreparedCall``; named
    here, not imported, since dispatch imports this module)."""

    @property
    def function_name(self) -> str: ...

    @property
    def context(self) -> RequestContext | None: ...


@functools.cache
def available() -> bool:
    """Whether ``opentelemetry-api`` is installed (found, not imported)."""
    try:
        return importlib.util.find_spec("opentelemetry") is not None and (
            importlib.util.find_spec("opentelemetry.trace") is not None
        )
    except (ImportError, ValueError):
        return False


def _tracer() -> Any | None:
    """navai's tracer, or None while no tracer provider is configured (the API's default
    proxy or no-op provider: a span would go nowhere, so none is made and a request pays
    nothing for it). Read at each use: an application may configure its SDK after navai."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider.get_tracer(TRACER_NAME)


def _fail(span: Any, text: str | None, error_type: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, text or None))


def _ns(unix_seconds: float) -> int:
    return int(unix_seconds * 1_000_000_000)


def tool_attributes(name: str, call_id: str | None) -> dict[str, str]:
    attributes = {"gen_ai.operation.name": EXECUTE_TOOL, "gen_ai.tool.name": name}
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    return attributes


# ----- the call --------------------------------------------------------------------------------


def trace_call(summary: Mapping[str, Any], tool_times: Sequence[tuple[float, float]]) -> None:
    """The ``navai.call`` span of an ended call and a child span per tool run.

    ``summary``: the record's fields (``call_id``, ``model``, ``runtime``, ``transport``,
    ``end_reason``, ``started_at``, ``ended_at``, ``usage``, ``cost_usd``, ``tools``);
    ``tool_times``: ``(started, ended)`` Unix times of each entry of ``tools``.
    """
    if not available():
        return
    from opentelemetry import trace

    tracer = _tracer()
    if tracer is None:
        return
    usage = summary.get("usage") or {}
    attributes: dict[str, Any] = {
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": str(summary.get("model") or ""),
        "navai.call.id": str(summary.get("call_id") or ""),
        "navai.call.runtime": str(summary.get("runtime") or ""),
        "navai.call.transport": str(summary.get("transport") or ""),
        "navai.call.end_reason": str(summary.get("end_reason") or ""),
    }
    for key in ("input_tokens", "output_tokens"):
        value = usage.get(key) if isinstance(usage, Mapping) else None
        if isinstance(value, int):
            attributes[f"gen_ai.usage.{key}"] = value
    cost = summary.get("cost_usd")
    if isinstance(cost, (int, float)):
        attributes["navai.call.cost_usd"] = float(cost)
    span = tracer.start_span(
        CALL_SPAN, attributes=attributes, start_time=_ns(float(summary["started_at"]))
    )
    parent = trace.set_span_in_context(span)
    for tool, (started, ended) in zip(summary.get("tools") or (), tool_times, strict=False):
        child = tracer.start_span(
            f"{EXECUTE_TOOL} {tool['name']}",
            context=parent,
            attributes=tool_attributes(str(tool["name"]), str(tool.get("call_id") or "")),
            start_time=_ns(started),
        )
        if not tool.get("ok"):
            _fail(child, tool.get("error"), "tool_error")
        child.end(end_time=_ns(ended))
    span.end(end_time=_ns(float(summary["ended_at"])))


# ----- the execute route -----------------------------------------------------------------------


def _reply_failed(reply: Reply) -> tuple[bool, str | None]:
    body = reply.body
    if reply.status < 400 and not (isinstance(body, dict) and body.get("ok") is False):
        return False, None
    if isinstance(body, dict):
        for key in ("details", "error"):
            if isinstance(body.get(key), str):
                return True, str(body[key])
    return True, None


def _start_tool(prepared: PreparedCall) -> Any | None:
    """The tool span of a run outside a call (None for a call's run: its record traces it)."""
    context = prepared.context
    if context is not None and context.method == CALL_METHOD:
        return None
    tracer = _tracer()
    if tracer is None:
        return None
    call_id = context.header(FUNCTION_CALL_ID_HEADER) if context is not None else None
    return tracer.start_span(
        f"{EXECUTE_TOOL} {prepared.function_name}",
        attributes=tool_attributes(prepared.function_name, call_id),
    )


def _mark_tool(span: Any, reply: Reply) -> Reply:
    failed, text = _reply_failed(reply)
    if failed:
        _fail(span, text, str(reply.status))
    return reply


def traced_run(run: F) -> F:
    """``execute`` with an ``execute_tool`` span (unchanged without OpenTelemetry)."""
    if not available():
        return run

    @functools.wraps(run)
    def traced(prepared: PreparedCall, *args: Any, **kwargs: Any) -> Reply:
        span = _start_tool(prepared)
        if span is None:
            return run(prepared, *args, **kwargs)
        from opentelemetry import trace

        with trace.use_span(span, end_on_exit=True):
            return _mark_tool(span, run(prepared, *args, **kwargs))

    return cast(F, traced)


def atraced_run(run: A) -> A:
    """``aexecute`` with an ``execute_tool`` span (unchanged without OpenTelemetry)."""
    if not available():
        return run

    @functools.wraps(run)
    async def traced(prepared: PreparedCall, *args: Any, **kwargs: Any) -> Reply:
        span = _start_tool(prepared)
        if span is None:
            return await run(prepared, *args, **kwargs)
        from opentelemetry import trace

        with trace.use_span(span, end_on_exit=True):
            return _mark_tool(span, await run(prepared, *args, **kwargs))

    return cast(A, traced)


# ----- the client-secret route -----------------------------------------------------------------


class _Step:
    """A route step (``run``/``arun``) inside a span named ``name``."""

    def __init__(self, name: str, step: Any, attributes: Mapping[str, str]) -> None:
        self.name = name
        self.step = step
        self.attributes = dict(attributes)

    def _finish(self, span: Any, reply: Reply) -> Reply:
        span.set_attribute("http.response.status_code", reply.status)
        if reply.status >= 400:
            _fail(span, None, str(reply.status))
        return reply

    def run(self, navai: Any) -> Reply:
        tracer = _tracer()
        if tracer is None:
            return self.step.run(navai)  # type: ignore[no-any-return]
        with tracer.start_as_current_span(self.name, attributes=self.attributes) as span:
            return self._finish(span, self.step.run(navai))

    async def arun(self, navai: Any) -> Reply:
        tracer = _tracer()
        if tracer is None:
            return await self.step.arun(navai)  # type: ignore[no-any-return]
        with tracer.start_as_current_span(self.name, attributes=self.attributes) as span:
            return self._finish(span, await self.step.arun(navai))


def traced_step(name: str, step: Any, model: object = None) -> Any:
    """``step`` inside a span ``name`` (``step`` itself without OpenTelemetry)."""
    if not available():
        return step
    attributes = {"gen_ai.system": "openai", "gen_ai.provider.name": "openai"}
    if isinstance(model, str) and model:
        attributes["gen_ai.request.model"] = model
    return _Step(name, step, attributes)
