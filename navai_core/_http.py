"""Framework-neutral HTTP values: what an adapter hands to the core and what it gets back."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._json import JsonValue, dumps


def _lower_headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType({k.lower(): v for k, v in (value or {}).items()})


@attrs.frozen
class RequestContext:
    """What navai knows of an HTTP request, independent of the web framework.

    Backend functions that declare a ``context`` parameter receive this value.
    Header names are lower-case. ``raw`` is the framework's own request object
    (a Starlette ``Request``, a Werkzeug ``Request``, ...) for code that needs more.
    """

    method: str = "POST"
    path: str = "/"
    headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=_lower_headers, repr=False, eq=False
    )
    client: str | None = None
    query_string: str = ""
    raw: Any = attrs.field(default=None, repr=False, eq=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``default``."""
        return self.headers.get(name.lower(), default)


@attrs.frozen
class Reply:
    """A status, a JSON body and extra headers: every answer the core produces.

    A reply that is not JSON (the SDP answer of a call) carries its bytes in ``encoded``
    and its ``content_type``."""

    status: int
    body: JsonValue
    headers: tuple[tuple[str, str], ...] = ()
    # ``body`` already encoded, for replies answered many times (the function list).
    encoded: bytes | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)
    content_type: str = attrs.field(default="application/json", kw_only=True)

    @property
    def content(self) -> bytes:
        return dumps(self.body) if self.encoded is None else self.encoded

    def with_headers(self, *headers: tuple[str, str]) -> Reply:
        return attrs.evolve(self, headers=self.headers + tuple(headers))
