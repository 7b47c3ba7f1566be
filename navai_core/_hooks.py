"""Running user hooks (authorisation of a route or of one function): one rule, two tails.

A hook may be sync or async (or a callable object whose ``__call__`` returns an awaitable).
Its verdict: ``None`` or ``True`` allows, ``False`` denies; it may also raise a
:class:`NavaiError` (``Unauthorized``, ``Forbidden``, ...) to choose the answer itself.

- from sync code (:func:`allowed`), an async hook runs on navai's background loop;
- from async code (:func:`aallowed`), a sync hook runs in a worker thread (anyio's), so the
  event loop never blocks.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import anyio.to_thread

from . import _background
from ._errors import Forbidden
from ._http import RequestContext

AuthResult: TypeAlias = "bool | None"
AuthHook: TypeAlias = "Callable[[RequestContext], AuthResult | Awaitable[AuthResult]]"

DENIED = "Forbidden."


def verdict(result: object) -> bool:
    """The one rule: only ``False`` denies."""
    return result is not False


def allowed(hook: Callable[..., Any], *args: Any) -> bool:
    """Ask ``hook(*args)`` from sync code."""
    result = hook(*args)
    if inspect.isawaitable(result):
        result = _background.run(result)
    return verdict(result)


async def aallowed(hook: Callable[..., Any], *args: Any) -> bool:
    """Ask ``hook(*args)`` from async code."""
    if inspect.iscoroutinefunction(hook):
        result = await hook(*args)
    else:
        result = await anyio.to_thread.run_sync(hook, *args)
        if inspect.isawaitable(result):  # a callable object with an async __call__
            result = await result
    return verdict(result)


def authorize(hook: AuthHook | None, context: RequestContext) -> None:
    """A route's hook from sync code: raise ``Forbidden`` (403) when it says no."""
    if hook is not None and not allowed(hook, context):
        raise Forbidden(DENIED)


async def aauthorize(hook: AuthHook | None, context: RequestContext) -> None:
    """A route's hook from async code: raise ``Forbidden`` (403) when it says no."""
    if hook is not None and not await aallowed(hook, context):
        raise Forbidden(DENIED)
