"""What a call cost: navai's price table and the arithmetic over a call's usage (CONTRACT §12).

The table ships inside the package (``prices.json``, read with :mod:`importlib.resources`): one
entry per model, each with the page it was read from and the day. A Realtime model has USD per
1M tokens by kind (``text_input``, ``cached_text_input``, ``text_output``, ``audio_input``,
``cached_audio_input``, ``audio_output``, and ``image_input``/``cached_image_input`` where
OpenAI prices them); a Live model has ``per_minute`` (and ``paused_per_minute``).
``NAVAI_PRICES_FILE`` names a JSON file of the same shape whose entries replace the shipped
entries of the same models (or add models).

OpenAI counts cached tokens inside ``text_tokens``/``audio_tokens``/``image_tokens``: those are
billed at the cached rate, the rest at the full rate. A model with no entry, or usage of a kind
its entry has no price for, gives ``None`` and one warning naming the model, once per model for
the life of the :class:`PriceTable` (a ``Navai`` owns one): never a made-up number.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any

logger = logging.getLogger("navai")

TOKEN_KINDS = (
    "text_input",
    "cached_text_input",
    "text_output",
    "audio_input",
    "cached_audio_input",
    "audio_output",
    "image_input",
    "cached_image_input",
)
MINUTE_KINDS = ("per_minute", "paused_per_minute")
PER_TOKEN = 1_000_000  # prices are per 1M tokens

Prices = Mapping[str, Mapping[str, Any]]


def shipped_prices() -> dict[str, dict[str, Any]]:
    """The table shipped with navai: ``{model: entry}``."""
    text = resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8")
    table: dict[str, dict[str, Any]] = json.loads(text)
    return table


def entry_problems(model: str, entry: object) -> list[str]:
    """What is wrong with one entry of a price table (empty: nothing)."""
    if not isinstance(entry, dict):
        return [f"price of {model!r} must be a JSON object"]
    found = []
    for kind in (*TOKEN_KINDS, *MINUTE_KINDS):
        value = entry.get(kind)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            found.append(f"price {kind!r} of {model!r} must be a number of 0 or more")
    if not any(kind in entry for kind in (*TOKEN_KINDS, *MINUTE_KINDS)):
        found.append(f"price of {model!r} names no price")
    return found


def read_prices_file(path: str) -> dict[str, dict[str, Any]]:
    """A ``NAVAI_PRICES_FILE``: ``{model: entry}``. Raises ``ValueError`` saying what is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            table = json.load(handle)
    except OSError as exc:
        raise ValueError(f"NAVAI_PRICES_FILE cannot be read: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"NAVAI_PRICES_FILE is not JSON: {exc}") from None
    if not isinstance(table, dict):
        raise ValueError("NAVAI_PRICES_FILE must hold a JSON object {model: prices}")
    problems = [p for model, entry in table.items() for p in entry_problems(model, entry)]
    if problems:
        raise ValueError("NAVAI_PRICES_FILE: " + "; ".join(problems))
    return table


class PriceTable:
    """The shipped prices with a file's entries merged over them, and the models already
    warned about (one warning per unpriced model for the life of this object)."""

    def __init__(self, prices: Prices | None = None, *, file: str | None = None) -> None:
        table: dict[str, Mapping[str, Any]] = dict(shipped_prices() if prices is None else prices)
        if file:
            table.update(read_prices_file(file))
        self.prices: Mapping[str, Mapping[str, Any]] = table
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def entry(self, model: str | None) -> Mapping[str, Any] | None:
        return self.prices.get(model) if model else None

    def _unpriced(self, model: str | None, why: str) -> None:
        name = model or "(none)"
        with self._lock:
            if name in self._warned:
                return
            self._warned.add(name)
        logger.warning("no price for model %r (%s): calls on it have cost_usd null", name, why)

    def realtime_cost(self, model: str | None, usage: Mapping[str, Any]) -> float | None:
        """USD of a Realtime call from its summed ``response.done`` usage, or None."""
        entry = self.entry(model)
        if entry is None:
            self._unpriced(model, "not in the price table")
            return None
        cost = tokens_cost(entry, usage)
        if cost is None:
            self._unpriced(model, "usage of a kind the table does not price")
        return cost

    def live_cost(
        self,
        model: str | None,
        seconds: float,
        paused_seconds: float = 0.0,
        backend_model: str | None = None,
        backend_usage: Mapping[str, Any] | None = None,
    ) -> float | None:
        """USD of a Live call: billed seconds at the model's per-minute rates plus the backend
        model's tokens (Responses usage), or None when a part has no price."""
        entry = self.entry(model)
        if entry is None or entry.get("per_minute") is None:
            self._unpriced(model, "no per-minute price")
            return None
        paused = max(min(paused_seconds, seconds), 0.0)
        cost = (seconds - paused) * float(entry["per_minute"]) / 60
        if paused:
            rate = entry.get("paused_per_minute")
            if rate is None:
                self._unpriced(model, "paused time but no paused_per_minute price")
                return None
            cost += paused * float(rate) / 60
        if backend_usage and _responses_tokens(backend_usage):
            backend = self.entry(backend_model)
            backend_cost = responses_cost(backend, backend_usage) if backend is not None else None
            if backend_cost is None:
                self._unpriced(backend_model, "backend model tokens without a price")
                return None
            cost += backend_cost
        return round(cost, 6)


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else {}


def _bill(entry: Mapping[str, Any], kind: str, tokens: int) -> float | None:
    """``tokens`` at ``entry[kind]``; None when there are tokens and no price."""
    if tokens == 0:
        return 0.0
    rate = entry.get(kind)
    if rate is None:
        return None
    return tokens * float(rate) / PER_TOKEN


def tokens_cost(entry: Mapping[str, Any], usage: Mapping[str, Any]) -> float | None:
    """USD of Realtime usage (``response.done.usage`` summed): ``input_token_details``
    text/audio/image tokens with their ``cached_tokens_details`` billed at the cached rate,
    ``output_token_details`` text/audio tokens at the output rates."""
    inputs = _details(usage, "input_token_details")
    cached = _details(inputs, "cached_tokens_details")
    outputs = _details(usage, "output_token_details")
    parts: list[float | None] = []
    for modality in ("text", "audio", "image"):
        total = _number(inputs.get(f"{modality}_tokens"))
        hit = min(_number(cached.get(f"{modality}_tokens")), total)
        parts.append(_bill(entry, f"{modality}_input", total - hit))
        parts.append(_bill(entry, f"cached_{modality}_input", hit))
    for modality in ("text", "audio"):
        parts.append(_bill(entry, f"{modality}_output", _number(outputs.get(f"{modality}_tokens"))))
    # Usage without details (an older event shape): the totals as text tokens.
    if not inputs and not outputs:
        parts = [
            _bill(entry, "text_input", _number(usage.get("input_tokens"))),
            _bill(entry, "text_output", _number(usage.get("output_tokens"))),
        ]
    if any(part is None for part in parts):
        return None
    return round(sum(part for part in parts if part is not None), 6)


def _responses_tokens(usage: Mapping[str, Any]) -> int:
    return _number(usage.get("input_tokens")) + _number(usage.get("output_tokens"))


def responses_cost(entry: Mapping[str, Any], usage: Mapping[str, Any]) -> float | None:
    """USD of Responses usage (a Live backend): ``input_tokens`` with
    ``input_tokens_details.cached_tokens`` at the cached text rate, ``output_tokens`` (which
    include reasoning tokens) at the text output rate."""
    total = _number(usage.get("input_tokens"))
    hit = min(_number(_details(usage, "input_tokens_details").get("cached_tokens")), total)
    parts = [
        _bill(entry, "text_input", total - hit),
        _bill(entry, "cached_text_input", hit),
        _bill(entry, "text_output", _number(usage.get("output_tokens"))),
    ]
    if any(part is None for part in parts):
        return None
    return sum(part for part in parts if part is not None)
