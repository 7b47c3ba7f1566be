"""The call record on real calls (CONTRACT section 12), through both adapters in process and
real ``navai serve`` processes (ASGI and --wsgi), against the fake Realtime server: a call
with spoken turns, a succeeding and a failing tool and full usage ends with one record, in
the ``on_call_end`` hook, in the ``NAVAI_CALL_LOG`` file and as spans (in process: the
OpenTelemetry SDK's in-memory exporter)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import NAVAI_VARIABLES, SERVER_KEY, Setup, in_process, start_server
from fakes import FakeOpenAI, fn_call, parse_multipart, response_done
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from navai_core import Navai, NavaiConfig
from navai_core.calls.events import CallSummary

OFFER = "v=0\r\no=- 77 2 IN IP4 127.0.0.1\r\ns=browser offer\r\n"
MODEL = "gpt-realtime-2.1"  # navai's default model
KINDS = ("asgi", "wsgi", "asgi-server", "wsgi-server")
EXPORTER = InMemorySpanExporter()

# Full Realtime usage: cached tokens inside text_tokens/audio_tokens (billed at the cached rate).
USAGE = {
    "total_tokens": 1500,
    "input_tokens": 1000,
    "output_tokens": 500,
    "input_token_details": {
        "text_tokens": 200,
        "audio_tokens": 800,
        "image_tokens": 0,
        "cached_tokens": 150,
        "cached_tokens_details": {"text_tokens": 50, "audio_tokens": 100, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 100, "audio_tokens": 400},
}
# gpt-realtime-2.1, USD per 1M tokens: text in 4, cached 0.4, audio in 32, cached 0.4,
# text out 24, audio out 64: (150*4 + 50*0.4 + 700*32 + 100*0.4 + 100*24 + 400*64) / 1e6.
COST = 0.05106
USER_SAID = "What is two plus forty, and is Atlantis a city?"
ASSISTANT_SAID = "Two plus forty is 42; I could not find Atlantis."


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
    if not getattr(EXPORTER, "added", False):  # once, whichever module runs first
        current.add_span_processor(SimpleSpanProcessor(EXPORTER))
        EXPORTER.added = True  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def fake_realtime() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key=SERVER_KEY) as fake:
        yield fake


def record_env(base: Path, fake: FakeOpenAI, log: Path) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "NAVAI_UPSTREAM_MAX_RETRIES": "0",
        "NAVAI_UPSTREAM_TIMEOUT": "5",
        "NAVAI_RATE_LIMIT_CALLS": "off",
        "NAVAI_FUNCTIONS_BASE_DIR": str(base),
        "NAVAI_FUNCTIONS_FOLDERS": "functions",
        "NAVAI_CALL_LOG": str(log),
    }


class Served:
    """navai served one way, with its call log (and, in process, its hook's summaries)."""

    def __init__(self, kind: str, http: httpx2.Client, log: Path, navai: Navai | None) -> None:
        self.kind = kind
        self.http = http
        self.log = log
        self.navai = navai
        self.ended: list[CallSummary] = []

    def records(self) -> list[dict[str, Any]]:
        text = self.log.read_text() if self.log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def record_of(self, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.records() if r["call_id"] == call_id]
            if found:
                time.sleep(0.1)  # a second line would show up now
                found = [r for r in self.records() if r["call_id"] == call_id]
                assert len(found) == 1, found  # exactly one record per call
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no record of {call_id} in {self.log}")


@pytest.fixture(scope="module")
def served_all(
    functions_dir: Path, fake_realtime: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Served]]:
    root = tmp_path_factory.mktemp("record-servers")
    found: dict[str, Served] = {}
    closers = []
    processes = []
    for kind in KINDS:
        log = root / f"{kind}.jsonl"
        env = record_env(functions_dir, fake_realtime, log)
        if kind.endswith("-server"):
            process = start_server(Setup(f"record-{kind}", env), kind == "wsgi-server", root)
            processes.append(process)
            http = httpx2.Client(base_url=process.wait_ready(), timeout=10)
            closers.append(http.close)
            found[kind] = Served(kind, http, log, None)
            continue
        ended: list[CallSummary] = []
        config = NavaiConfig.from_env(
            {**dict.fromkeys(NAVAI_VARIABLES, ""), **env}, on_call_end=ended.append
        )
        navai = Navai(config)
        context = in_process(navai, kind)
        http = context.__enter__()
        closers.append(lambda context=context: context.__exit__(None, None, None))
        served = Served(kind, http, log, navai)
        served.ended = ended
        found[kind] = served
    yield found
    for close in reversed(closers):
        close()
    for process in processes:
        process.stop()


@pytest.fixture(params=KINDS)
def served(request: pytest.FixtureRequest, served_all: dict[str, Served], fake_realtime) -> Served:
    fake_realtime.reset()
    EXPORTER.clear()
    return served_all[request.param]


def start_call(served: Served) -> str:
    answer = served.http.post(
        "/navai/realtime/calls", content=OFFER, headers={"Content-Type": "application/sdp"}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.headers["location"].rsplit("/", 1)[1])


def spoken_call(fake: FakeOpenAI, call_id: str) -> Any:
    """The caller speaks, the model runs a succeeding and a failing tool, answers, and the
    caller hangs up."""
    call = fake.call(call_id)
    call.wait_for(lambda c: c.connections == 1)
    call.send(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_u1",
            "content_index": 0,
            "transcript": USER_SAID,
        },
        fn_call("c1", "add", {"a": 2, "b": 40}),
        fn_call("c2", "city", {"name": "Atlantis"}),
        response_done(
            "resp_1",
            ("c1", "add", {"a": 2, "b": 40}),
            ("c2", "city", {"name": "Atlantis"}),
            usage=USAGE,
        ),
    )
    call.wait_for(lambda c: len(c.of_type("response.create")) == 1)
    call.send(
        {
            "type": "response.output_audio_transcript.done",
            "response_id": "resp_2",
            "item_id": "item_a1",
            "output_index": 0,
            "content_index": 0,
            "transcript": ASSISTANT_SAID,
        }
    )
    return call


def check_record(record: dict[str, Any], call_id: str, transport: str = "webrtc") -> None:
    assert record["call_id"] == call_id
    assert record["runtime"] == "realtime"
    assert record["model"] == MODEL
    assert record["transport"] == transport
    assert record["end_reason"] == "ended"
    assert record["function_calls"] == 2
    assert record["workers"] == 1
    assert record["usage"] == USAGE
    assert record["cost_usd"] == pytest.approx(COST)
    transcript = record["transcript"]
    assert [(t["role"], t["text"]) for t in transcript] == [
        ("user", USER_SAID),
        ("assistant", ASSISTANT_SAID),
    ]
    assert 0 <= transcript[0]["at"] <= transcript[1]["at"] <= record["seconds"]
    tools = sorted(record["tools"], key=lambda t: t["call_id"])
    assert [(t["call_id"], t["name"], t["ok"], t["error"]) for t in tools] == [
        ("c1", "add", True, None),
        ("c2", "city", False, "City not found"),
    ]
    assert json.loads(tools[0]["arguments"]) == {"a": 2, "b": 40}
    assert json.loads(tools[1]["arguments"]) == {"name": "Atlantis"}
    assert all(isinstance(t["ms"], float) and t["ms"] >= 0 for t in tools)


def test_the_session_asks_for_input_transcription(served: Served, fake_realtime) -> None:
    call_id = start_call(served)
    created = fake_realtime.requests[0]
    parts = parse_multipart(created.headers["content-type"], created.body)
    session = json.loads(parts["session"][1])
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-live-transcribe"}
    served.http.post(f"/navai/realtime/calls/{call_id}/hangup", json={})
    served.record_of(call_id)


def test_a_call_ends_with_its_record_in_the_hook_the_log_and_spans(
    served: Served, fake_realtime: FakeOpenAI
) -> None:
    call_id = start_call(served)
    call = spoken_call(fake_realtime, call_id)
    time.sleep(0.2)  # the assistant's turn arrives before the caller hangs up
    call.end()
    record = served.record_of(call_id)
    check_record(record, call_id)
    if served.navai is None:
        return  # a real server: its hook and spans are the in-process kinds' checks
    # The hook got the same record (the log line is the CallSummary's fields).
    summaries = [s for s in served.ended if s.call_id == call_id]
    assert len(summaries) == 1
    summary = summaries[0]
    assert json.loads(json.dumps(_fields(summary))) == record
    # The spans: navai.call with a child execute_tool span per run, the failing one an error.
    spans = EXPORTER.get_finished_spans()
    calls = [s for s in spans if s.name == "navai.call"]
    assert len(calls) == 1
    span = calls[0]
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["navai.call.id"] == call_id
    assert attributes["navai.call.runtime"] == "realtime"
    assert attributes["navai.call.transport"] == "webrtc"
    assert attributes["navai.call.end_reason"] == "ended"
    assert attributes["gen_ai.usage.input_tokens"] == 1000
    assert attributes["gen_ai.usage.output_tokens"] == 500
    assert attributes["navai.call.cost_usd"] == pytest.approx(COST)
    tools = {s.name: s for s in spans if s.name.startswith("execute_tool ")}
    assert set(tools) == {"execute_tool add", "execute_tool city"}
    for child in tools.values():
        assert child.parent is not None and child.parent.span_id == span.context.span_id
        assert child.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tools["execute_tool add"].status.status_code != StatusCode.ERROR
    assert tools["execute_tool city"].status.status_code == StatusCode.ERROR
    assert tools["execute_tool city"].status.description == "City not found"


def _fields(summary: CallSummary) -> dict[str, Any]:
    import attrs

    return attrs.asdict(summary)


def test_transcripts_off_keeps_no_text_and_asks_for_none(
    make_navai, fake_realtime: FakeOpenAI, functions_dir: Path, tmp_path: Path
) -> None:
    fake_realtime.reset()
    log = tmp_path / "calls.jsonl"
    env = {**dict.fromkeys(NAVAI_VARIABLES, ""), **record_env(functions_dir, fake_realtime, log)}
    env["NAVAI_CALL_TRANSCRIPTS"] = "false"
    navai = Navai(NavaiConfig.from_env(env))
    try:
        with in_process(navai, "asgi") as http:
            served = Served("asgi", http, log, navai)
            call_id = start_call(served)
            created = fake_realtime.requests[0]
            session = json.loads(
                parse_multipart(created.headers["content-type"], created.body)["session"][1]
            )
            assert "input" not in session["audio"]
            call = spoken_call(fake_realtime, call_id)
            time.sleep(0.2)
            call.end()
            record = served.record_of(call_id)
    finally:
        navai.close()
    assert record["transcript"] == []
    assert {t["arguments"] for t in record["tools"]} == {""}
    assert record["cost_usd"] == pytest.approx(COST)
    assert USER_SAID not in log.read_text()


def test_a_template_s_own_transcription_is_kept(make_navai, fake_realtime: FakeOpenAI) -> None:
    from navai_core.calls.plans import call_session
    from navai_core.sessions.client_secret import ClientSecretOptions

    own = {"model": "gpt-realtime-whisper", "language": "de"}
    config = NavaiConfig(
        openai_api_key=SERVER_KEY, session={"audio": {"input": {"transcription": own}}}
    )
    session = call_session(config, ClientSecretOptions(), None)
    assert session["audio"]["input"]["transcription"] == own
    plain = call_session(NavaiConfig(openai_api_key=SERVER_KEY), ClientSecretOptions(), None)
    assert plain["audio"]["input"]["transcription"] == {"model": "gpt-live-transcribe"}


def test_live_events_make_the_same_record() -> None:
    """A Live call's events (transcript fragments, the backend's usage, billed seconds) go
    through the same events of the record (records/events.py) as a Realtime call's."""
    import asyncio

    from navai_core.calls.events import LiveCall, ToolRun
    from navai_core.records import Recorder
    from navai_core.records.events import record_events

    async def run() -> CallSummary:
        recorder = Recorder(tracing_on=False)
        started = time.time()
        live = LiveCall("rtc_live1", "127.0.0.1", started, "webrtc", 0, "gpt-live-1")
        events = record_events(recorder, live, runtime="live", model="gpt-live-1")
        events.started(live)
        for kind, delta, start, end in (
            ("session.input_transcript.delta", "Book a table ", 100, 600),
            ("session.input_transcript.delta", "for two.", 600, 1100),
            ("session.output_transcript.delta", "Done, ", 1500, 1800),
            ("session.output_transcript.delta", "table for two.", 1800, 2600),
        ):
            events.event(
                "rtc_live1", {"type": kind, "delta": delta, "start_ms": start, "end_ms": end}
            )
        events.tool_ran("rtc_live1", ToolRun("fc_1", "book", '{"people": 2}', True, None, 12.5))
        events.tool_ran("rtc_live1", ToolRun("fc_2", "pay", "{}", False, "Card declined", 3.0))
        events.event("rtc_live1", {"type": "session.usage.updated", "usage": {"seconds": 60}})
        summary = CallSummary(
            call_id="rtc_live1",
            key="127.0.0.1",
            started_at=started,
            ended_at=started + 61,
            seconds=61.0,
            end_reason="ended",
            function_calls=2,
        )
        summary = events.finish(summary)
        published = events.ended(summary)
        assert published is not None
        await published
        assert "rtc_live1" not in recorder.calls
        return summary

    summary = asyncio.run(run())
    assert summary.runtime == "live" and summary.model == "gpt-live-1"
    assert [(t["role"], t["text"], t["at"]) for t in summary.transcript] == [
        ("user", "Book a table for two.", 0.1),
        ("assistant", "Done, table for two.", 1.5),
    ]
    assert [(t["name"], t["ok"], t["error"]) for t in summary.tools] == [
        ("book", True, None),
        ("pay", False, "Card declined"),
    ]
    assert summary.cost_usd is not None and summary.cost_usd > 0  # one billed minute


def test_a_phone_call_gets_its_record_too(make_navai) -> None:
    """SIP calls attach like WebRTC ones (phone.py): the record's label is the transport."""
    import asyncio

    from navai_core.calls.events import LiveCall
    from navai_core.records.events import RecordEvents

    navai = make_navai(None, openai_api_key=SERVER_KEY)

    async def run() -> RecordEvents:
        live = LiveCall("rtc_sip1", "+15550100", time.time(), "sip", 0)
        events = navai._call_events(live)
        assert isinstance(events, RecordEvents)
        return events

    events = asyncio.run(run())
    assert events.record.model == MODEL and events.record.runtime == "realtime"
    assert navai.recorder.calls["rtc_sip1"] is events
