"""Running user hooks (authorisation of a route or of one function): one rule, two tails.

A hook may be sync or async (or a callable object whose ``__call__`` returns an awaitable).
Its verdict: ``None`` or ``True`` allows, ``False`` denies; it may also raise a
:class:`NavaiError` (``Unauthorized``, ``Forbidden``, ...) to choose the answer itself.

- from sync code (:func:`allowed`), an async hook runs on the owner's background loop;
- from async code (:func:`aallowed`), a sync hook runs on one of the owner's hook threads
  (:meth:`Concurrency.run_sync`), so the event loop never blocks.

The owner is the ``Navai``'s :class:`~navai_core.concurrency.owner.Concurrency`, passed in.

Event hooks (``on_call_end``, ``on_call_event``) give no verdict: :func:`anotify` runs them
by the same rules and logs, never raises, what they raise.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from ._errors import Forbidden
from ._http import RequestContext
from .concurrency.owner import Concurrency

logger = logging.getLogger("navai")

AuthResult: TypeAlias = "bool | None"
AuthHook: TypeAlias = "Callable[[RequestContext], AuthResult | Awaitable[AuthResult]]"

DENIED = "Forbidden."


def verdict(result: object) -> bool:
    """The one rule: only ``False`` denies."""
    return result is not False


def allowed(hook: Callable[..., Any], owner: Concurrency, *args: Any) -> bool:
    """Ask ``hook(*args)`` from sync code."""
    result = hook(*args)
    if inspect.isawaitable(result):
        result = owner.run(result)
    return verdict(result)


async def aallowed(hook: Callable[..., Any], owner: Concurrency, *args: Any) -> bool:
    """Ask ``hook(*args)`` from async code."""
    if inspect.iscoroutinefunction(hook):
        result = await hook(*args)
    else:
        result = await owner.run_sync(hook, *args)
        if inspect.isawaitable(result):  # a callable object with an async __call__
            result = await result
    return verdict(result)


def authorize(hook: AuthHook | None, context: RequestContext, owner: Concurrency) -> None:
    """A route's hook from sync code: raise ``Forbidden`` (403) when it says no."""
    if hook is not None and not allowed(hook, owner, context):
        raise Forbidden(DENIED)


async def aauthorize(hook: AuthHook | None, context: RequestContext, owner: Concurrency) -> None:
    """A route's hook from async code: raise ``Forbidden`` (403) when it says no."""
    if hook is not None and not await aallowed(hook, owner, context):
        raise Forbidden(DENIED)


async def anotify(
    hook: Callable[..., Any] | None, *args: Any, owner: Concurrency | None = None
) -> None:
    """Tell an event hook ``hook(*args)`` from async code: an async hook is awaited; a sync
    one runs on one of ``owner``'s hook threads, or on the loop without an owner (for a hook
    that sees every event and must be quick). What it raises is logged, never raised."""
    if hook is None:
        return
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(*args)
            return
        if owner is not None:
            result = await owner.run_sync(hook, *args)
        else:
            result = hook(*args)
        if inspect.isawaitable(result):  # a callable object with an async __call__
            await result
    except Exception:
        logger.exception("the hook %s raised", getattr(hook, "__name__", type(hook).__name__))
