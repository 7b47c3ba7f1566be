"""JSON value types and the one encoder navai uses for every body it writes."""

from __future__ import annotations

import json
import re
from typing import Any, TypeAlias, Union

JsonValue: TypeAlias = Union[bool, int, float, str, "list[JsonValue]", "dict[str, JsonValue]", None]
JsonObject: TypeAlias = "dict[str, JsonValue]"


# One encoder for every body: ``json.dumps`` with options builds a new one per call (~0.5 us).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON (non-ASCII kept as is)."""
    return _ENCODER.encode(value).encode()


def encode_text(value: Any) -> str:
    """:func:`dumps`, as text."""
    return _ENCODER.encode(value)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):  # 1e999: too large for a float, not infinity
        raise ValueError(f"{text} is out of range")
    return value


_INF = float("inf")
# ``json.loads(body, parse_constant=...)`` without building a decoder per request (~1 us).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(body: bytes) -> Any:
    """Decode a request body (UTF-8, -16 or -32, as RFC 8259 allows).

    Raises ``ValueError`` for anything that is not strict JSON: invalid bytes, ``NaN`` and
    ``Infinity``, a number too large for a float (``1e999``), and a ``\\u`` escape of a
    lone surrogate (a string Python holds but can never encode again, so it must not reach
    a function or an upstream).
    """
    return loads_text(body.decode(json.detect_encoding(body)))


def loads_text(text: str) -> Any:
    """Like :func:`loads`, for JSON already held as text (a model's function arguments)."""
    value = _DECODER.decode(text)
    if "\\u" in text and _holds_surrogate(value):
        raise ValueError("lone surrogate")
    return value


def _holds_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return False
