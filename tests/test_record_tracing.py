"""OpenTelemetry spans of the call record, the execute route and mints
(navai_core/records/tracing.py, CONTRACT §12), read with the SDK's in-memory exporter.

Attribute names: OpenTelemetry's GenAI semantic conventions (execute-tool span:
``execute_tool {gen_ai.tool.name}``, ``gen_ai.operation.name`` = ``execute_tool``,
``gen_ai.tool.name``, ``gen_ai.tool.call.id``; ``gen_ai.usage.input_tokens``/``output_tokens``).
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext
from navai_core.functions.dispatch import aexecute, execute, prepare_call
from navai_core.records import Recorder

ROOT = Path(__file__).resolve().parents[1]
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
    current.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
def spans():
    EXPORTER.clear()
    yield EXPORTER.get_finished_spans
    EXPORTER.clear()


def registry():
    functions = FunctionRegistry()

    @functions.function
    def lookup(order: str) -> dict:
        """Find an order."""
        return {"order": order}

    @functions.function
    def broken() -> None:
        """Always fails."""
        raise RuntimeError("boom")

    return functions


def test_a_call_span_with_a_child_per_tool_run(spans):
    recorder = Recorder()
    record = recorder.start(model="gpt-realtime-2.1", started_at=1000.0, started=50.0)
    record.on_event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "transcript": "Where is 42?",
        },
        51.0,
    )
    record.tool_done("fc1", "lookup", '{"order": "42"}', '{"ok": true, "result": 1}', 250, 52.0)
    failure = '{"ok": false, "error": "Function execution failed.", "details": "Out of stock."}'
    record.tool_done("fc2", "order", "{}", failure, 100, 53.0)
    record.on_event(
        {
            "type": "response.done",
            "response": {
                "usage": {
                    "input_tokens": 30,
                    "output_tokens": 20,
                    "input_token_details": {"text_tokens": 10, "audio_tokens": 20},
                    "output_token_details": {"text_tokens": 5, "audio_tokens": 15},
                }
            },
        },
        54.0,
    )
    fields = record.finish()
    summary = {
        "call_id": "rtc_1",
        "key": "k",
        "started_at": 1000.0,
        "ended_at": 1010.0,
        "seconds": 10.0,
        "end_reason": "ended",
        "function_calls": 2,
        "usage": record.usage,
        "transport": "sip",
        **fields,
    }
    recorder.publish(summary, record)
    call = next(s for s in spans() if s.name == "navai.call")
    assert dict(call.attributes) == {
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-realtime-2.1",
        "navai.call.id": "rtc_1",
        "navai.call.runtime": "realtime",
        "navai.call.transport": "sip",
        "navai.call.end_reason": "ended",
        "gen_ai.usage.input_tokens": 30,
        "gen_ai.usage.output_tokens": 20,
        "navai.call.cost_usd": fields["cost_usd"],
    }
    assert fields["cost_usd"] == pytest.approx((10 * 4 + 20 * 32 + 5 * 24 + 15 * 64) / 1e6)
    assert (call.start_time, call.end_time) == (1000 * 10**9, 1010 * 10**9)
    tools = [s for s in spans() if s.name.startswith("execute_tool")]
    assert [t.name for t in tools] == ["execute_tool lookup", "execute_tool order"]
    assert all(t.parent.span_id == call.context.span_id for t in tools)
    assert dict(tools[0].attributes) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup",
        "gen_ai.tool.call.id": "fc1",
    }
    assert tools[0].status.status_code == StatusCode.UNSET
    assert (tools[0].start_time, tools[0].end_time) == (int(1001.75 * 10**9), 1002 * 10**9)
    assert tools[1].status.status_code == StatusCode.ERROR
    assert tools[1].status.description == "Out of stock."


def test_the_execute_route_runs_get_the_same_spans(spans):
    functions = registry()
    reply = execute(prepare_call(functions, {"function_name": "lookup", "payload": {"order": "7"}}))
    assert reply.status == 200
    prepared = prepare_call(functions, {"function_name": "broken"})
    assert asyncio.run(aexecute(prepared)).status == 500
    done = spans()
    assert [s.name for s in done] == ["execute_tool lookup", "execute_tool broken"]
    assert done[0].attributes["gen_ai.operation.name"] == "execute_tool"
    assert done[0].status.status_code == StatusCode.UNSET
    assert done[1].status.status_code == StatusCode.ERROR
    assert done[1].attributes["error.type"] == "500"


def test_a_calls_runs_are_left_to_its_record(spans):
    context = RequestContext(method="CALL", headers={"x-navai-function-call-id": "fc9"})
    prepared = prepare_call(
        registry(), {"function_name": "lookup", "payload": {"order": "7"}}, context
    )
    assert asyncio.run(aexecute(prepared)).status == 200
    assert spans() == ()


def test_a_mint_gets_a_client_secret_span(spans):
    from navai_core.routes.table import _client_secret

    navai = Navai(NavaiConfig(openai_api_key="sk-test"))
    step = _client_secret(navai, RequestContext(), {}, None)  # its plan reads no path value

    class Down(Exception):
        pass

    def fail(request):
        raise Down

    navai.send_upstream = fail
    with pytest.raises(Down):
        step.run(navai)
    (span,) = spans()
    assert span.name == "navai.client_secret"
    assert span.attributes["gen_ai.system"] == "openai"
    assert span.status.status_code == StatusCode.ERROR


@pytest.mark.slow  # starts a Python process
def test_without_the_package_nothing_is_imported_and_nothing_changes(tmp_path):
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
import asyncio, json
from navai_core import FunctionRegistry
from navai_core.functions.dispatch import aexecute, execute, prepare_call
from navai_core.records import Recorder
from navai_core.records import tracing
functions = FunctionRegistry()
def one():
    return 1
functions.add(one)
assert execute(prepare_call(functions, {"function_name": "one"})).status == 200
assert asyncio.run(aexecute(prepare_call(functions, {"function_name": "one"}))).status == 200
recorder = Recorder(log_path=sys.argv[1])
record = recorder.start(model="gpt-live-1", runtime="live")
record.tool_done("c", "one", "{}", '{"ok": true}', 1, record.started)
summary = {"call_id": "x", "started_at": 1.0, "ended_at": 2.0, **record.finish(seconds=60)}
recorder.publish(summary, record)
assert tracing.traced_step("navai.client_secret", "step") == "step"
assert not tracing.available()
assert [m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m]] == []
print(json.dumps(summary["cost_usd"]))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "log")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.05"
    assert (tmp_path / "log").read_text().count("\n") == 1
