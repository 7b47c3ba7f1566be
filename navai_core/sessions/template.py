"""What OpenAI would reject in a session template (``NAVAI_SESSION_JSON`` and friends).

The checks follow the GA session objects of the official openai-python package 3.57.0
(``types/realtime/realtime_session_create_request_param.py`` and
``realtime_transcription_session_create_request_param.py``): the values navai can check
without knowing the model. Fields navai does not know pass through unchanged, so a field
OpenAI adds later can be used before navai learns of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

# Top-level fields of the Realtime beta that the GA API rejects, and what replaced them.
BETA_SESSION_FIELDS = MappingProxyType(
    {
        "modalities": "output_modalities",
        "voice": "audio.output.voice",
        "turn_detection": "audio.input.turn_detection",
        "input_audio_format": "audio.input.format",
        "output_audio_format": "audio.output.format",
        "input_audio_transcription": "audio.input.transcription",
        "input_audio_noise_reduction": "audio.input.noise_reduction",
        "speed": "audio.output.speed",
        "max_response_output_tokens": "max_output_tokens",
        "temperature": None,
    }
)

REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
TOOL_CHOICE_MODES = ("none", "auto", "required")
TRUNCATION_MODES = ("auto", "disabled")
INCLUDE_VALUES = ("item.input_audio_transcription.logprobs",)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _reasoning(value: object) -> str | None:
    if not isinstance(value, dict) or set(value) - {"effort"}:
        return 'must be an object with one optional field, "effort"'
    effort = value.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        return f".effort must be one of {_quoted(REASONING_EFFORTS)}. Received: {effort!r}"
    return None


def _output_modalities(value: object) -> str | None:
    if not (isinstance(value, list) and len(value) == 1 and value[0] in ("text", "audio")):
        return f'must be ["audio"] or ["text"] (one of them, not both). Received: {value!r}'
    return None


def _include(value: object) -> str | None:
    if not (isinstance(value, list) and all(v in INCLUDE_VALUES for v in value)):
        return f"must be a list of {_quoted(INCLUDE_VALUES)}. Received: {value!r}"
    return None


def _max_output_tokens(value: object) -> str | None:
    if value != "inf" and not (_is_int(value) and 1 <= value <= 4096):  # type: ignore[operator]
        return f'must be 1..4096 or "inf". Received: {value!r}'
    return None


def _tool_choice(value: object) -> str | None:
    if value in TOOL_CHOICE_MODES:
        return None
    if isinstance(value, dict) and value.get("type") in ("function", "mcp"):
        return None
    return (
        f'must be one of {_quoted(TOOL_CHOICE_MODES)} or an object with "type" "function" '
        f'or "mcp". Received: {value!r}'
    )


def _tools(value: object) -> str | None:
    if not (isinstance(value, list) and all(isinstance(t, dict) and "type" in t for t in value)):
        return 'must be a list of tool objects, each with a "type"'
    return None


def _tracing(value: object) -> str | None:
    if value is None or value == "auto" or isinstance(value, dict):
        return None
    return f'must be "auto", an object or null. Received: {value!r}'


def _truncation(value: object) -> str | None:
    if value in TRUNCATION_MODES:
        return None
    if isinstance(value, dict) and value.get("type") == "retention_ratio":
        ratio = value.get("retention_ratio")
        if _is_number(ratio) and 0 <= ratio <= 1:  # type: ignore[operator]
            return None
        return f".retention_ratio must be a number from 0 to 1. Received: {ratio!r}"
    return (
        f'must be {_quoted(TRUNCATION_MODES)} or {{"type": "retention_ratio", '
        f'"retention_ratio": 0..1}}. Received: {value!r}'
    )


def _prompt(value: object) -> str | None:
    if value is None or (isinstance(value, dict) and isinstance(value.get("id"), str)):
        return None
    return 'must be an object with a string "id", or null'


def _string(value: object) -> str | None:
    return None if isinstance(value, str) else f"must be a string. Received: {value!r}"


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false. Received: {value!r}"


def _object(value: object) -> str | None:
    return None if isinstance(value, dict) else "must be an object"


# Field -> a check returning what is wrong (None when the value looks right).
_CHECKS: Mapping[str, Callable[[object], str | None]] = MappingProxyType(
    {
        "audio": _object,
        "include": _include,
        "instructions": _string,
        "max_output_tokens": _max_output_tokens,
        "model": _string,
        "output_modalities": _output_modalities,
        "parallel_tool_calls": _boolean,
        "prompt": _prompt,
        "reasoning": _reasoning,
        "tool_choice": _tool_choice,
        "tools": _tools,
        "tracing": _tracing,
        "truncation": _truncation,
    }
)


def session_problems(session: object, name: str, kind: str) -> list[str]:
    """What OpenAI would reject in a session template (empty when it looks right).

    ``kind`` is the session type, ``"realtime"`` or ``"transcription"``; ``name`` the
    setting it came from, for the messages.
    """
    if session is None:
        return []
    if not isinstance(session, dict):
        return [f"{name} must be a JSON object."]
    found = []
    if session.get("type", kind) != kind:
        found.append(f'{name}: "type" must be "{kind}". Received: {session.get("type")!r}')
    for field, value in session.items():
        if field in BETA_SESSION_FIELDS:
            new = BETA_SESSION_FIELDS[field]
            hint = f'; use "{new}" instead' if new else "; the GA API has no such field"
            found.append(f'{name}: "{field}" is a Realtime beta field{hint}.')
        elif (check := _CHECKS.get(field)) is not None and (problem := check(value)):
            found.append(f"{name}: {field} {problem}".replace(f"{field} .", f"{field}."))
    found += _audio_problems(session.get("audio"), name)
    return found


def _audio_problems(audio: Any, name: str) -> list[str]:
    output = audio.get("output") if isinstance(audio, dict) else None
    speed = output.get("speed") if isinstance(output, dict) else None
    if speed is not None and not (_is_number(speed) and 0.25 <= speed <= 1.5):
        return [f"{name}: audio.output.speed must be between 0.25 and 1.5. Received: {speed}"]
    return []
