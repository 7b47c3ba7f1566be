"""JSON value types and the one encoder navai uses for every body it writes."""

from __future__ import annotations

import json
from typing import Any, TypeAlias, Union

JsonValue: TypeAlias = Union[bool, int, float, str, "list[JsonValue]", "dict[str, JsonValue]", None]
JsonObject: TypeAlias = "dict[str, JsonValue]"


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON (non-ASCII kept as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
