"""The function-error envelope, built in one place.

Every failed function call is answered ``{"ok": false, "function_name": ..., "error": ...,
"details": ...}``, by the execute route and during a server-controlled call alike.
"""

from __future__ import annotations

from .._json import JsonValue


def function_error(
    name: str | None, error: str | None = None, details: JsonValue | None = None
) -> dict[str, JsonValue]:
    """``{"ok": false, "function_name": name, "error": error, "details": details}``, in that
    order, a key left out when its value is ``None`` (a ``NavaiError``'s ``extra`` leaves out
    ``error``: the error's message fills it; a template leaves out ``function_name``)."""
    body: dict[str, JsonValue] = {"ok": False}
    if name is not None:
        body["function_name"] = name
    if error is not None:
        body["error"] = error
    if details is not None:
        body["details"] = details
    return body
