"""The call log (navai_core/records/log.py, CONTRACT §12): one whole JSON line per call,
even with several worker processes appending at once."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from navai_core.records.log import CallLog, encode_line

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys
from navai_core.records.log import CallLog
log = CallLog(sys.argv[1])
worker, count = int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    # Lines from 100 bytes to ~200 KB: far past PIPE_BUF and a page, so a torn write would show.
    size = 50 if i % 3 else (i * 7919) % 200_000
    text = chr(0x41 + worker) * size + "é\\n"
    assert log.append({"call_id": f"{worker}-{i}", "worker": worker, "text": text})
"""


def test_one_line_per_record_and_no_newline_inside(tmp_path):
    path = tmp_path / "calls.jsonl"
    log = CallLog(str(path))
    assert log.append({"call_id": "a", "transcript": [{"text": "line\nbreak é \ud800"}]})
    assert log.append({"call_id": "b", "cost_usd": None})
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert json.loads(lines[0])["transcript"][0]["text"].startswith("line\nbreak é")
    assert json.loads(lines[1]) == {"call_id": "b", "cost_usd": None}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert encode_line({"a": 1}) == b'{"a":1}\n'


def test_a_log_that_cannot_be_written_never_raises(tmp_path, caplog):
    log = CallLog(str(tmp_path / "missing" / "calls.jsonl"))
    assert log.append({"call_id": "a"}) is False
    assert "cannot be opened" in caplog.text


@pytest.mark.slow  # starts a Python process
def test_concurrent_processes_never_tear_or_interleave_a_line(tmp_path):
    path = tmp_path / "calls.jsonl"
    workers, count = 4, 150
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(count)], env=env)
        for w in range(workers)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    seen = set()
    for raw in path.read_bytes().split(b"\n")[:-1]:
        record = json.loads(raw)  # a torn or interleaved line would not parse
        letter = chr(0x41 + record["worker"])
        assert record["text"].rstrip("é\n") == letter * (len(record["text"]) - 2)
        seen.add(record["call_id"])
    assert len(seen) == workers * count
