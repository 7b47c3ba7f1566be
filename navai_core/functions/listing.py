"""The list reply of the function registry (``GET .../functions``), encoded once.

:class:`ListedFunctions` keeps the encoded reply until functions or warnings are added to the
registry (about 4 us a request). With ``expose_function_warnings`` off, the warnings (paths,
exception texts) are one short line in the reply, each logged once instead.
"""

from __future__ import annotations

from typing import Any

from .._http import Reply
from .._json import dumps
from .._logging import logger
from .registry import FunctionRegistry

__all__ = ["ListedFunctions", "short_warnings"]


class ListedFunctions:
    """The list reply of one server's registry, encoded once (see the module)."""

    def __init__(self) -> None:
        self._listed: tuple[int, int, Reply] | None = None

    def reply(self, registry: FunctionRegistry, *, expose_warnings: bool) -> Reply:
        """The list reply of ``registry``, encoded again only when it has grown."""
        key = (len(registry), len(registry.warnings))
        listed = self._listed
        if listed is None or listed[:2] != key:
            body = registry.list_body()
            if not expose_warnings:
                logged = 0 if listed is None else listed[1]
                body = short_warnings(body, registry.warnings, logged)
            listed = self._listed = (*key, Reply(200, body, encoded=dumps(body)))
        return listed[2]


def short_warnings(body: dict[str, Any], warnings: list[str], logged: int) -> dict[str, Any]:
    """``body`` with its warnings replaced by one short line; the ones not logged yet (past
    the first ``logged``) go to the server log."""
    for warning in warnings[logged:]:
        logger.warning("backend functions: %s", warning)
    count = len(warnings)
    short = f"{count} warning{'' if count == 1 else 's'} about the backend functions: see the "
    return {**body, "warnings": [short + "server log."] if warnings else []}
