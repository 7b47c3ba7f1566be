"""The price table and the cost of a call (navai_core/records/cost.py, CONTRACT §12)."""

import datetime
import json
import logging

import pytest

from navai_core import NavaiConfig
from navai_core._config import DEFAULT_MODEL
from navai_core.records.cost import MINUTE_KINDS, TOKEN_KINDS, PriceTable, shipped_prices

# A response.done usage as openai-python 3.63 types it (types/realtime/realtime_response_usage*).
USAGE = {
    "total_tokens": 5300,
    "input_tokens": 3000,
    "output_tokens": 1800,
    "input_token_details": {
        "text_tokens": 1000,
        "audio_tokens": 2000,
        "image_tokens": 0,
        "cached_tokens": 900,
        "cached_tokens_details": {"text_tokens": 400, "audio_tokens": 500, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 300, "audio_tokens": 1500},
}


def test_every_shipped_entry_cites_its_page_and_day():
    table = shipped_prices()
    assert DEFAULT_MODEL in table
    assert {"gpt-live-1", "gpt-live-1.1"} <= set(table)
    for model, entry in table.items():
        assert entry["source"].startswith("https://developers.openai.com/"), model
        datetime.date.fromisoformat(entry["date"])
        prices = [k for k in (*TOKEN_KINDS, *MINUTE_KINDS) if k in entry]
        assert prices, model
        assert all(isinstance(entry[k], (int, float)) and entry[k] >= 0 for k in prices)
        if "per_minute" not in entry:
            assert set(TOKEN_KINDS[:6]) <= set(entry), model


def test_cached_tokens_are_inside_the_counts_and_billed_at_the_cached_rate():
    # gpt-realtime-2.1 per 1M: text 4 / cached 0.4 / out 24; audio 32 / cached 0.4 / out 64.
    expected = (600 * 4 + 400 * 0.4 + 1500 * 32 + 500 * 0.4 + 300 * 24 + 1500 * 64) / 1e6
    assert expected == pytest.approx(0.15396)
    assert PriceTable().realtime_cost("gpt-realtime-2.1", USAGE) == pytest.approx(expected)


def test_a_call_without_tokens_costs_nothing():
    assert PriceTable().realtime_cost("gpt-realtime-2.1", {}) == 0.0


def test_live_per_minute_billed_per_second():
    # OpenAI's cost guide (guides/voice-latency-cost): a 90-second session at the model's
    # $0.05 per minute, billed per second, not rounded up to whole minutes: $0.075.
    assert PriceTable().live_cost("gpt-live-1", 90) == pytest.approx(0.075)
    # gpt-live-1.1: 30 s active at $0.05/min and 30 s standby at $0.02/min.
    assert PriceTable().live_cost("gpt-live-1.1", 60, paused_seconds=30) == pytest.approx(0.035)


def test_live_backend_tokens_are_added(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {"backend-x": {"text_input": 1.25, "cached_text_input": 0.125, "text_output": 10}}
        )
    )
    table = PriceTable(file=str(path))
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 100,
    }
    backend = (800 * 1.25 + 200 * 0.125 + 100 * 10) / 1e6
    assert table.live_cost("gpt-live-1", 90, 0, "backend-x", usage) == pytest.approx(
        0.075 + backend
    )


def test_unknown_models_give_null_and_one_warning_each(caplog, tmp_path):
    table = PriceTable()
    with caplog.at_level(logging.WARNING, logger="navai"):
        assert table.realtime_cost("gpt-realtime-99", USAGE) is None
        assert table.realtime_cost("gpt-realtime-99", USAGE) is None
        assert table.live_cost("gpt-live-1", 60, 0, "unpriced-backend", {"input_tokens": 5}) is None
        assert table.live_cost("gpt-live-1", 60, 0, "unpriced-backend", {"input_tokens": 5}) is None
        assert table.live_cost("gpt-live-1", 60, paused_seconds=10) is None  # no standby rate
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3
    assert "gpt-realtime-99" in warnings[0] and "unpriced-backend" in warnings[1]
    # A second table (another Navai) warns again: the set lives on the table, not the module.
    with caplog.at_level(logging.WARNING, logger="navai"):
        PriceTable().realtime_cost("gpt-realtime-99", USAGE)
    assert len(caplog.records) == 4


def test_usage_of_a_kind_without_price_is_never_guessed():
    table = PriceTable({"m": {"text_input": 1, "text_output": 2}})
    assert table.realtime_cost("m", USAGE) is None
    text_only = {
        "input_token_details": {"text_tokens": 10},
        "output_token_details": {"text_tokens": 5},
    }
    assert table.realtime_cost("m", text_only) == pytest.approx(20 / 1e6)


def test_a_prices_file_replaces_whole_entries_and_adds_models(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "gpt-realtime-2.1": {
                    "text_input": 1,
                    "text_output": 1,
                    "source": "contract",
                    "date": "2027-01-01",
                },
                "my-model": {"per_minute": 1.0},
            }
        )
    )
    table = PriceTable(file=str(path))
    assert table.prices["gpt-realtime-2.1"] == {
        "text_input": 1,
        "text_output": 1,
        "source": "contract",
        "date": "2027-01-01",
    }
    assert table.realtime_cost("gpt-realtime-2.1", USAGE) is None  # audio now unpriced
    assert table.live_cost("my-model", 30) == pytest.approx(0.5)
    assert "gpt-realtime-2.1-mini" in table.prices


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"m": 5}', '{"m": {"text_input": -1}}', '{"m": {"source": "x"}}'],
)
def test_a_bad_prices_file_is_reported(tmp_path, content):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="NAVAI_PRICES_FILE"):
        PriceTable(file=str(path))
    problems = NavaiConfig(prices_file=str(path)).problems()
    assert any("NAVAI_PRICES_FILE" in p for p in problems)


def test_a_missing_prices_file_is_reported(tmp_path):
    problems = NavaiConfig.from_env({"NAVAI_PRICES_FILE": str(tmp_path / "none.json")}).problems()
    assert any("NAVAI_PRICES_FILE cannot be read" in p for p in problems)
