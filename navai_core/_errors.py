"""Errors that know the HTTP status and JSON body a server should answer with.

Every :class:`NavaiError` subclass navai raises lives here, with its status (as werkzeug's
``exceptions``): the module that raises one builds its message, this one knows its answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from ._http import Reply
from ._json import JsonValue


class NavaiError(Exception):
    """Base of every error navai answers over HTTP.

    ``message`` is safe to show to a client: it never holds a key or a secret.
    ``to_reply()`` renders ``{"error": message, **extra}`` with ``status_code``.
    """

    status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        extra: Mapping[str, JsonValue] | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.extra: dict[str, JsonValue] = dict(extra or {})
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)

    def body(self) -> dict[str, JsonValue]:
        return {"error": self.message, **self.extra}

    def to_reply(self) -> Reply:
        return Reply(self.status_code, self.body(), self.headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.message!r})"


class BadRequest(NavaiError):
    status_code = 400


class Unauthorized(NavaiError):
    status_code = 401


class Forbidden(NavaiError):
    status_code = 403


class NotFound(NavaiError):
    status_code = 404


class MethodNotAllowed(NavaiError):
    status_code = 405

    def __init__(self, allowed: Iterable[str]) -> None:
        allow = ", ".join(sorted(set(allowed)))
        super().__init__(f"Method not allowed. Allowed: {allow}.", headers=[("Allow", allow)])


class InvalidWebhook(BadRequest):
    """A delivery whose signature headers do not check out (answered 400)."""


class PayloadTooLarge(NavaiError):
    status_code = 413


class UnsupportedMediaType(NavaiError):
    """A body whose ``Content-Type`` the route does not read; the text names what it reads."""

    status_code = 415

    def __init__(self, accepted: Iterable[str] = ("application/json",)) -> None:
        super().__init__(f"Content-Type must be {' or '.join(accepted)}.")


class TooManyRequests(NavaiError):
    """A rate limit or a call-time budget is spent (with ``Retry-After``)."""

    status_code = 429


class ConfigurationError(NavaiError):
    """The server's configuration is wrong (answered per request; the server still boots)."""

    status_code = 400


class RateLimitUnavailable(NavaiError):
    """The shared rate-limit store (Redis) does not answer and the limits fail closed."""

    status_code = 503


class CallsFull(NavaiError):
    """This process holds ``call_max_live`` calls: a new one waits (503, ``Retry-After``)."""

    status_code = 503


class UpstreamError(NavaiError):
    """An upstream API (OpenAI, ElevenLabs) failed; status is the upstream's or 502/504."""

    status_code = 502


class UpstreamUnavailable(UpstreamError):
    status_code = 502


class UpstreamTimeout(UpstreamError):
    status_code = 504


@attrs.frozen
class SettingProblem:
    """A setting whose value cannot be read: the variable, the value as given, and what the
    variable expects."""

    variable: str
    value: str
    expected: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r}: expected {self.expected}"


class SettingsError(ConfigurationError):
    """Settings that cannot be read, every one of them in one error.

    Raised by :meth:`NavaiConfig.from_env` and by ``Navai(...)``, so a server never starts
    on a value it would otherwise have replaced by its default; ``navai serve`` prints
    :attr:`problems` and exits with code 2. Legal but unwise values are not errors:
    :meth:`NavaiConfig.problems` lists them as start-up warnings.
    """

    status_code = 500

    def __init__(self, problems: Iterable[SettingProblem]) -> None:
        self.problems: tuple[SettingProblem, ...] = tuple(problems)
        count = len(self.problems)
        lines = "".join(f"\n  {problem}" for problem in self.problems)
        super().__init__(f"{count} setting{'' if count == 1 else 's'} cannot be read:{lines}")
