"""``navai calls`` (navai_adapters/calls_report.py, CONTRACT §12) over a real call log."""

import json
import time

import pytest

from navai_adapters import cli
from navai_adapters.calls_report import since_time, summarise
from navai_core.records import CallLog

DAY = 86_400
NOW = time.time()


def record(call_id, key, model, ago, seconds, tools, cost):
    return {
        "call_id": call_id,
        "key": key,
        "model": model,
        "started_at": NOW - ago - seconds,
        "ended_at": NOW - ago,
        "seconds": seconds,
        "end_reason": "ended",
        "tools": [{"name": "f", "ok": ok} for ok in tools],
        "cost_usd": cost,
    }


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "calls.jsonl"
    calls = CallLog(str(path))
    calls.append(record("a", "alice", "gpt-realtime-2.1", 60, 120, [True, False], 0.5))
    calls.append(record("b", "bob", "gpt-live-1", 3600, 60, [True], 0.05))
    calls.append(record("c", "alice", "mystery", 3 * DAY, 30, [], None))
    with open(path, "a") as handle:
        handle.write("not json\n")
    return str(path)


def test_rows_by_key_with_a_total(log):
    with open(log) as handle:
        rows = summarise((json.loads(x) for x in handle if x.startswith("{")), "key")
    assert rows == [
        {
            "key": "alice",
            "calls": 2,
            "minutes": 2.5,
            "tool_runs": 2,
            "tool_failures": 1,
            "cost_usd": 0.5,
            "unpriced": 1,
        },
        {
            "key": "bob",
            "calls": 1,
            "minutes": 1.0,
            "tool_runs": 1,
            "tool_failures": 0,
            "cost_usd": 0.05,
            "unpriced": 0,
        },
        {
            "key": "total",
            "calls": 3,
            "minutes": 3.5,
            "tool_runs": 3,
            "tool_failures": 1,
            "cost_usd": 0.55,
            "unpriced": 1,
        },
    ]


def test_the_table(log, capsys):
    assert cli.main(["calls", "--log", log, "--by", "model"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "model",
        "calls",
        "minutes",
        "tool",
        "runs",
        "failures",
        "cost",
        "USD",
        "unpriced",
    ]
    assert lines[1].startswith("---")
    assert lines[2].split() == ["gpt-live-1", "1", "1.0", "1", "0", "0.0500", "0"]
    assert lines[-1].split() == ["total", "3", "3.5", "3", "1", "0.5500", "1"]


def test_since_and_json(log, capsys, monkeypatch):
    monkeypatch.setenv("NAVAI_CALL_LOG", log)
    assert cli.main(["calls", "--since", "24h", "--by", "key", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["key"] for row in rows] == ["alice", "bob", "total"]
    assert rows[-1]["calls"] == 2
    assert cli.main(["calls", "--since", "30m", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[-1]["calls"] == 1


def test_since_reads_durations_and_dates():
    assert since_time("24h", now=100_000.0) == 100_000.0 - DAY
    assert since_time("1h30m", now=10_000.0) == 10_000.0 - 5400
    assert since_time("2026-12-01") == 1796083200.0
    assert since_time("2026-12-01T01:00:00+01:00") == 1796083200.0
    with pytest.raises(ValueError, match="--since"):
        since_time("yesterday-ish")


def test_errors_answer_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NAVAI_CALL_LOG", raising=False)
    assert cli.main(["calls"]) == 1
    assert "NAVAI_CALL_LOG" in capsys.readouterr().err
    assert cli.main(["calls", "--log", str(tmp_path / "none")]) == 1
    assert "cannot be read" in capsys.readouterr().err
    assert cli.main(["calls", "--log", str(tmp_path / "none"), "--since", "soon"]) == 1
