"""The call record's transcript and tool runs (navai_core/records/transcript.py, CONTRACT §12).

Event shapes follow openai-python 3.63: types/realtime/
conversation_item_input_audio_transcription_completed_event.py,
response_audio_transcript_done_event.py, response_text_done_event.py, and
types/live/input_transcript_delta_event.py / output_transcript_delta_event.py.
"""

import json

from navai_core.records.transcript import (
    MAX_ARGUMENT_BYTES,
    MAX_TOOLS,
    MAX_TURN_BYTES,
    MAX_TURNS,
    REDACTION_FAILED,
    TURN_GAP_MS,
    Transcript,
    cut_utf8,
    tool_outcome,
)


def user(text):
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "e1",
        "item_id": "i1",
        "content_index": 0,
        "transcript": text,
        "usage": {"type": "duration", "seconds": 1.0},
    }


def audio_done(text):
    return {"type": "response.output_audio_transcript.done", "transcript": text, "item_id": "i2"}


def text_done(text):
    return {"type": "response.output_text.done", "text": text, "item_id": "i3"}


def live(role, delta, start, end):
    kind = "session.input_transcript.delta" if role == "user" else "session.output_transcript.delta"
    return {"type": kind, "event_id": "e", "delta": delta, "start_ms": start, "end_ms": end}


def test_realtime_turns_with_their_time():
    t = Transcript()
    t.on_event(user("Where is my order?"), 1.23456)
    t.on_event(audio_done("Let me check."), 2.5)
    t.on_event(text_done("Order 42 ships today."), 4.0)
    t.on_event({"type": "response.output_audio_transcript.delta", "delta": "x"}, 5.0)
    t.on_event({"type": "response.done"}, 5.0)
    assert t.finish() == [
        {"role": "user", "text": "Where is my order?", "at": 1.235},
        {"role": "assistant", "text": "Let me check.", "at": 2.5},
        {"role": "assistant", "text": "Order 42 ships today.", "at": 4.0},
    ]


def test_garbage_and_blank_texts_are_ignored():
    t = Transcript()
    t.on_event({"type": "conversation.item.input_audio_transcription.completed"}, 1)
    t.on_event({"type": "response.output_text.done", "text": 5}, 1)
    t.on_event(user("   "), 1)
    t.on_event(live("user", None, 0, 10), 1)
    t.on_event(live("user", "hi", "0", 10), 1)
    assert t.finish() == []


def test_live_fragments_join_into_turns():
    t = Transcript()
    for event in [
        live("user", "Where ", 1000, 1300),
        live("user", "is my ", 1300, 1600),
        live("user", "order?", 1600, 2000),
        live("assistant", "Let me ", 2400, 2700),
        live("assistant", "check.", 2700, 3000),
        live("user", "Thanks.", 3500, 3900),
    ]:
        t.on_event(event, 99.0)
    assert t.finish() == [
        {"role": "user", "text": "Where is my order?", "at": 1.0},
        {"role": "assistant", "text": "Let me check.", "at": 2.4},
        {"role": "user", "text": "Thanks.", "at": 3.5},
    ]


def test_live_pause_longer_than_the_gap_ends_a_turn():
    t = Transcript()
    t.on_event(live("assistant", "One.", 0, 500), 0)
    t.on_event(live("assistant", " Two.", 501 + TURN_GAP_MS, 600 + TURN_GAP_MS), 0)
    t.on_event(live("assistant", " Three.", 600 + TURN_GAP_MS * 2, 800 + TURN_GAP_MS * 2), 0)
    assert [turn["text"] for turn in t.finish()] == ["One.", " Two. Three."]


def test_live_talking_over_each_other_keeps_both_turns_open():
    t = Transcript()
    t.on_event(live("assistant", "Your order ", 1000, 1500), 0)
    t.on_event(live("user", "mm-hm", 1200, 1400), 0)  # starts before the assistant's end
    t.on_event(live("assistant", "ships today.", 1500, 2000), 0)
    assert t.finish() == [
        {"role": "assistant", "text": "Your order ships today.", "at": 1.0},
        {"role": "user", "text": "mm-hm", "at": 1.2},
    ]


def test_no_text_is_kept_when_transcripts_are_off():
    t = Transcript(keep_text=False, redact=lambda s: 1 / 0)
    t.on_event(user("my card is 4242"), 1)
    t.on_event(live("user", "secret", 0, 10), 1)
    t.tool_done("c1", "pay", '{"card": "4242"}', '{"ok": true}', 12.0)
    assert t.finish() == []
    assert t.tools == [
        {"call_id": "c1", "name": "pay", "arguments": "", "ok": True, "error": None, "ms": 12.0}
    ]


def test_redact_runs_on_every_text_before_it_is_kept():
    seen = []

    def redact(text):
        seen.append(text)
        return text.replace("4242", "****")

    t = Transcript(redact=redact)
    t.on_event(user("card 4242"), 1)
    t.on_event(audio_done("got 4242"), 2)
    t.on_event(live("user", "pin 42", 0, 100), 3)
    t.on_event(live("user", "42", 100, 200), 3)
    t.tool_done("c1", "pay", '{"card": "4242"}', '{"ok": true}', 1)
    turns = t.finish()
    assert [turn["text"] for turn in turns] == [
        "pin ****",
        "card ****",
        "got ****",
    ]
    assert t.tools[0]["arguments"] == '{"card": "****"}'
    # Live fragments are redacted once joined: a number split across fragments is still seen.
    assert "pin 4242" in seen


def test_a_redact_hook_that_raises_keeps_no_text():
    t = Transcript(redact=lambda s: 1 / 0)
    t.on_event(user("secret"), 1)
    t.tool_done("c1", "f", '{"a": "secret"}', '{"ok": true}', 1)
    assert t.finish()[0]["text"] == REDACTION_FAILED
    assert t.tools[0]["arguments"] == REDACTION_FAILED


def test_arguments_are_cut_at_4096_bytes_on_a_character_boundary():
    arguments = json.dumps({"text": "é" * 5000}, ensure_ascii=False)
    t = Transcript()
    t.tool_done("c1", "f", arguments, '{"ok": true}', 1)
    kept = t.tools[0]["arguments"]
    assert len(kept.encode()) <= MAX_ARGUMENT_BYTES
    assert len(kept.encode()) >= MAX_ARGUMENT_BYTES - 1
    assert arguments.startswith(kept)
    assert cut_utf8("aé", 2) == "a" and cut_utf8("aé", 3) == "aé"


def test_tool_outcomes_are_the_text_the_model_got():
    assert tool_outcome('{"ok": true, "result": 1}') == (True, None)
    assert tool_outcome(
        '{"ok": false, "error": "Function execution failed.", "details": "Out of stock."}'
    ) == (False, "Out of stock.")
    assert tool_outcome('{"ok": false, "error": "Forbidden."}') == (False, "Forbidden.")
    assert tool_outcome('{"ok": false, "error": "Invalid arguments.", "details": [{"p": 1}]}') == (
        False,
        '[{"p": 1}]',
    )
    assert tool_outcome("not json") == (False, None)


def test_tools_in_the_order_they_ran():
    t = Transcript()
    t.tool_done("c2", "slow", "{}", '{"ok": true, "result": 1}', 900.04)
    t.tool_done("c1", "fails", "{}", '{"ok": false, "error": "E", "details": "D"}', 3)
    assert [(x["call_id"], x["ok"], x["error"], x["ms"]) for x in t.tools] == [
        ("c2", True, None, 900.0),
        ("c1", False, "D", 3.0),
    ]


def test_memory_is_bounded():
    t = Transcript()
    for i in range(MAX_TURNS + 10):
        t.on_event(user(f"turn {i}"), i)
    assert len(t.finish()) == MAX_TURNS and t.dropped_turns == 10
    t = Transcript()
    t.on_event(user("x" * (MAX_TURN_BYTES * 2)), 0)
    for i in range(300):
        t.on_event(live("user", "y" * 1000, i * 10_000, i * 10_000 + 1), 0)
    turns = t.finish()
    assert len(turns[0]["text"]) == MAX_TURN_BYTES
    assert sum(len(turn["text"].encode()) for turn in turns) <= 256 * 1024
    assert t.dropped_turns > 0
    t = Transcript()
    for i in range(MAX_TOOLS + 3):
        t.tool_done(str(i), "f", "{}", '{"ok": true}', 1)
    assert len(t.tools) == MAX_TOOLS and t.dropped_tools == 3
