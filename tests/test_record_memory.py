"""What a call record costs in memory: a typical call (20 turns, 5 tool runs) measured with
tracemalloc over 200 records, as a live call holds it (before the call ends and the record is
turned into the summary's fields, which the call then hands on and drops)."""

import gc
import json
import tracemalloc

from navai_core.records import Recorder

SENTENCE = "I would like to know where my order is, it was due on Tuesday."
USAGE = {
    "total_tokens": 900,
    "input_tokens": 600,
    "output_tokens": 300,
    "input_token_details": {
        "text_tokens": 100,
        "audio_tokens": 500,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0},
    },
    "output_token_details": {"text_tokens": 60, "audio_tokens": 240},
}
OUTPUT = '{"ok": true, "function_name": "lookup_order", "result": {"status": "shipped"}}'
# Measured over 1,000 records as a live call holds them: 11,838 bytes a record with each turn
# and tool run kept as a dict, 6,706 with each kept as its JSON text (now); the bound leaves
# room for other Pythons.
BOUND = 20_000


def typical_call(record, i):
    at = 0.0
    for turn in range(10):
        record.on_event(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "transcript": f"{SENTENCE} {i}-{turn}",
            },
            at,
        )
        record.on_event(
            {
                "type": "response.output_audio_transcript.done",
                "transcript": f"{SENTENCE} {SENTENCE} {i}-{turn}",
            },
            at + 3,
        )
        record.on_event({"type": "response.done", "response": {"usage": USAGE}}, at + 4)
        at += 6
    for k in range(5):
        arguments = json.dumps({"order_id": f"A{i}{k}", "verbose": True})
        record.tool_done(f"call_{i}_{k}", "lookup_order", arguments, OUTPUT, 120.0, at)


def test_a_typical_record_holds_less_than_the_bound():
    recorder = Recorder()
    count = 200
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        records = [recorder.start(model="gpt-realtime-2.1") for _ in range(count)]
        for i, record in enumerate(records):
            typical_call(record, i)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per_call = sum(stat.size_diff for stat in after.compare_to(before, "filename")) / count
    fields = records[0].finish(seconds=60)
    assert len(fields["transcript"]) == 20 and len(fields["tools"]) == 5
    assert 2_000 < per_call < BOUND
