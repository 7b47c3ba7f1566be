"""The function registry: what a voice agent may call, under which name.

Only what is in a :class:`FunctionRegistry` ever runs. Functions get there by registration
in code (``@registry.function``, ``registry.add``) or from a module (``add_module``, which
``load_functions`` uses for discovered files); both follow the same exposure, naming and
collision rules (CONTRACT.md section 5).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import ModuleType
from typing import Any, TypeAlias, TypeVar, overload

import attrs

from .._http import RequestContext
from .._json import JsonValue
from ..concurrency.owner import Concurrency
from .schema import CallSpec, first_paragraph

F = TypeVar("F")

#: ``hook(context, arguments)``: the request and the validated arguments by parameter name.
#: ``None`` or ``True`` allows the call, ``False`` answers 403; it may also raise
#: ``Unauthorized`` / ``Forbidden`` (any NavaiError) to choose the status and message.
FunctionAuthHook: TypeAlias = (
    "Callable[[RequestContext, Mapping[str, Any]], bool | Awaitable[bool | None] | None]"
)

logger = logging.getLogger("navai")

_MISSING = object()


class FunctionError(Exception):
    """Raise it in a backend function to report a failure to the model (and the user).

    Its message becomes the ``details`` of the failure answer, e.g.
    ``raise FunctionError("City not found")``; any other exception is reported with a
    generic text and only logged on the server.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def normalize_name(raw: str) -> str:
    """``getWeather`` / ``Get-Weather`` / ``get weather`` → ``get_weather``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", raw)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


class _Compiled:
    """Call specs of one entry, built on first use (schema building is the slow part).

    A failure (a signature Python cannot read) is kept and raised again on each use.
    """

    __slots__ = ("_lock", "error", "specs")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.specs: tuple[CallSpec, CallSpec | None] | None = None
        self.error: Exception | None = None

    def get(self, entry: FunctionEntry) -> tuple[CallSpec, CallSpec | None]:
        specs = self.specs
        if specs is None:
            with self._lock:
                if self.specs is None and self.error is None:
                    try:
                        self.specs = _compile(entry)
                    except Exception as exc:
                        logger.error(
                            "cannot read the parameters of %s (%s)",
                            entry.source,
                            entry.name,
                            exc_info=exc,
                        )
                        self.error = exc
                if self.error is not None:
                    raise self.error
                assert self.specs is not None
                specs = self.specs
        return specs


def _compile(entry: FunctionEntry) -> tuple[CallSpec, CallSpec | None]:
    constructor = None
    if entry.owner is not None:
        constructor = CallSpec(entry.owner, title=f"{entry.name}_constructor")
    call = CallSpec(entry.target, skip_first=entry.owner is not None, title=entry.name)
    return call, constructor


def _any_object() -> dict[str, JsonValue]:
    return {"type": "object", "properties": {}}


@attrs.frozen
class FunctionEntry:
    """One callable tool.

    ``target`` is what runs. When ``owner`` is set, ``target`` is an instance method of
    that class: the class is built from ``payload.constructorArgs`` and ``target`` called
    on the new instance.

    ``authorize`` is checked before each call (see :data:`FunctionAuthHook`); ``timeout``
    is the time limit in seconds: ``None`` uses the server's default, ``0`` means none.
    """

    name: str
    description: str
    source: str
    target: Callable[..., Any] = attrs.field(repr=False)
    owner: type | None = attrs.field(default=None, repr=False)
    base_name: str = attrs.field(default="", repr=False, eq=False)
    is_async: bool = attrs.field(default=False, repr=False, eq=False)
    authorize: FunctionAuthHook | None = attrs.field(default=None, repr=False, eq=False)
    timeout: float | None = attrs.field(default=None, repr=False, eq=False)
    _compiled: _Compiled = attrs.field(factory=_Compiled, repr=False, eq=False)

    @property
    def call_spec(self) -> CallSpec:
        return self._compiled.get(self)[0]

    @property
    def constructor_spec(self) -> CallSpec | None:
        return self._compiled.get(self)[1]

    @property
    def parameters(self) -> dict[str, JsonValue]:
        """JSON Schema of the arguments (``constructorArgs`` included for methods)."""
        try:
            call, constructor = self._compiled.get(self)
        except Exception:
            return _any_object()
        if constructor is None or not constructor.has_arguments:
            return call.schema
        schema = dict(call.schema)
        properties = dict(schema["properties"])  # type: ignore[arg-type]
        ctor = dict(constructor.schema)
        defs = ctor.pop("$defs", None)
        ctor["description"] = "Arguments of the class constructor."
        properties["constructorArgs"] = ctor
        schema["properties"] = properties
        if defs:
            schema["$defs"] = {**defs, **schema.get("$defs", {})}  # type: ignore[dict-item]
        return schema

    def item(self) -> dict[str, JsonValue]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "parameters": self.parameters,
        }


class FunctionRegistry:
    """Functions a voice agent may call, by normalised name, in registration order.

    >>> registry = FunctionRegistry()
    >>> @registry.function
    ... async def get_weather(city: str) -> dict: ...

    ``warnings`` collects what a client should be told (renamed duplicates, modules that
    failed to load, ...); ``list_body()`` is the answer of the list route.
    """

    def __init__(self) -> None:
        self._entries: dict[str, FunctionEntry] = {}
        self.warnings: list[str] = []
        self._concurrency: Concurrency | None = None
        self._concurrency_lock = threading.Lock()

    def concurrency(self) -> Concurrency:
        """Where ``execute``/``aexecute`` run this registry's calls when the caller passes
        no owner (a ``Navai`` passes its own): one per registry, made on first use, so
        direct callers share one bounded thread budget and one background loop."""
        owner = self._concurrency
        if owner is None:
            with self._concurrency_lock:
                if self._concurrency is None:
                    self._concurrency = Concurrency(finalize=True)
                owner = self._concurrency
        return owner

    def __repr__(self) -> str:
        return f"FunctionRegistry({self.names()!r})"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[FunctionEntry]:
        return iter(list(self._entries.values()))

    # ----- reading -------------------------------------------------------------------

    def get(self, name: str) -> FunctionEntry | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[FunctionEntry]:
        return list(self._entries.values())

    def prepare_schemas(self) -> None:
        """Build every entry's schema and validator now rather than on first use.

        Building costs about 0.4 ms per function; a server can call this at start-up (in a
        worker thread under an async server) so the first list request does not pay for it.
        """
        for entry in self._entries.values():
            with contextlib.suppress(Exception):  # kept on the entry and logged once
                entry.call_spec  # noqa: B018

    def list_body(self) -> dict[str, JsonValue]:
        """``{"items": [{name, description, source, parameters}], "warnings": [...]}``."""
        return {
            "items": [entry.item() for entry in self._entries.values()],
            "warnings": list(self.warnings),
        }

    # ----- registration in code --------------------------------------------------------

    @overload
    def function(self, fn: F) -> F: ...

    @overload
    def function(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        authorize: FunctionAuthHook | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def function(
        self,
        fn: Any = None,
        *,
        name: str | None = None,
        description: str | None = None,
        authorize: FunctionAuthHook | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Register a function (or a class, or a dict of functions); return it unchanged.

        Use it bare, ``@registry.function``, or with options,
        ``@registry.function(name="weather", description="Current weather of a city.")``,
        ``@registry.function(authorize=is_admin, timeout=5)`` (see :meth:`add`).
        """

        def register(obj: F) -> F:
            self.add(obj, name=name, description=description, authorize=authorize, timeout=timeout)
            return obj

        return register if fn is None else register(fn)

    def add(
        self,
        obj: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        source: str | None = None,
        authorize: FunctionAuthHook | None = None,
        timeout: float | None = None,
    ) -> list[FunctionEntry]:
        """Register a function, a class (one tool per public method) or a dict of functions.

        ``name`` replaces the function's own name (for a class or dict: the prefix);
        ``description`` replaces its docstring's first paragraph. ``authorize`` is called
        as ``authorize(context, arguments)`` before each call, after validation (``None`` /
        ``True`` allows, ``False`` answers 403); ``timeout`` is the time limit in seconds
        (``None``: the server's ``function_timeout_seconds``; ``0``: no limit). Both apply to
        every entry ``obj`` gives. Returns the new entries.
        """
        if authorize is not None and not callable(authorize):
            raise TypeError(f"authorize must be a callable, not {authorize!r}.")
        timeout = _check_timeout(timeout)
        export = name or getattr(obj, "__name__", None)
        if not export:
            raise TypeError(f"Pass name= to register {obj!r}: it has no __name__.")
        if not (
            _is_function(obj) or inspect.ismethod(obj) or inspect.isclass(obj)
        ) and not isinstance(obj, dict):
            raise TypeError(
                f"Cannot register {obj!r}: expected a Python function, a class or a dict "
                "of functions."
            )
        if source is None:
            module = getattr(obj, "__module__", None) or "__main__"
            source = f"{module}#{getattr(obj, '__qualname__', export)}"
        entries = self._expose(export, obj, source, module_name=None, description=description)
        if not entries and inspect.isclass(obj):
            self.warnings.append(f"Class {export} ({source}) has no public methods to expose.")
        if authorize is None and timeout is None:
            return entries
        guarded = [attrs.evolve(e, authorize=authorize, timeout=timeout) for e in entries]
        for entry in guarded:
            self._entries[entry.name] = entry
        return guarded

    def add_module(self, module: ModuleType, *, source: str | None = None) -> list[FunctionEntry]:
        """Register what ``module`` exposes: ``__all__``, else its own public names.

        ``source`` (default: the module's name) is the part before ``#`` in each entry's
        ``source``. Nothing the module imported, nothing private and no builtin is exposed.
        """
        prefix = source or module.__name__
        namespace = vars(module)
        declared = namespace.get("__all__", _MISSING)
        entries: list[FunctionEntry] = []
        if declared is _MISSING:
            for export, value in list(namespace.items()):
                if export.startswith("_") or not _defined_in(value, module.__name__):
                    continue
                entries += self._expose(export, value, f"{prefix}#{export}", module.__name__)
            return entries
        if not isinstance(declared, (list, tuple)) or not all(isinstance(n, str) for n in declared):
            self.warnings.append(f"Ignored __all__ of {prefix}: it is not a list of names.")
            return entries
        for export in dict.fromkeys(declared):
            value = namespace.get(export, _MISSING)
            problem = _export_problem(export, value, module.__name__)
            if problem:
                if problem != "-":
                    self.warnings.append(f'Skipped "{export}" of {prefix}: {problem}.')
                continue
            entries += self._expose(export, value, f"{prefix}#{export}", module.__name__)
        return entries

    # ----- combining -----------------------------------------------------------------------

    def copy(self) -> FunctionRegistry:
        new = FunctionRegistry()
        new._entries = dict(self._entries)
        new.warnings = list(self.warnings)
        return new

    def merge(self, *others: FunctionRegistry) -> FunctionRegistry:
        """A new registry: this one's functions, then each other's, with the usual renaming."""
        merged = self.copy()
        for other in others:
            merged.warnings += other.warnings
            for entry in other._entries.values():
                merged._insert(entry, entry.base_name or entry.name)
        return merged

    @classmethod
    def combine(cls, *registries: FunctionRegistry) -> FunctionRegistry:
        """One registry from several, in order (see :meth:`merge`)."""
        return cls().merge(*registries)

    # ----- exposure rules ------------------------------------------------------------------

    def _expose(
        self,
        export: str,
        value: Any,
        source: str,
        module_name: str | None,
        description: str | None = None,
    ) -> list[FunctionEntry]:
        if inspect.isclass(value):
            return self._expose_class(export, value, source)
        if isinstance(value, dict):
            # The dict is the export: a value need not be a public name of its own (its key
            # is the tool's name), but a function imported from elsewhere stays excluded.
            entries = []
            for key, member in value.items():
                if (
                    isinstance(key, str)
                    and not key.startswith("_")
                    and (_is_function(member) or inspect.ismethod(member))
                    and (module_name is None or _defined_in(member, module_name))
                ):
                    entries.append(self._add_callable(f"{export}_{key}", member, f"{source}.{key}"))
            return entries
        if _is_function(value) or inspect.ismethod(value):
            return [self._add_callable(export, value, source, description=description)]
        return []

    def _expose_class(self, export: str, cls: type, source: str) -> list[FunctionEntry]:
        entries = []
        for attribute, member in vars(cls).items():
            if attribute.startswith("_"):
                continue
            if isinstance(member, staticmethod):
                entry = self._add_callable(
                    f"{export}_{attribute}", member.__func__, f"{source}.{attribute}"
                )
            elif isinstance(member, classmethod):
                bound = getattr(cls, attribute)
                entry = self._add_callable(f"{export}_{attribute}", bound, f"{source}.{attribute}")
            elif _is_function(member):
                entry = self._add_callable(
                    f"{export}_{attribute}", member, f"{source}.{attribute}", owner=cls
                )
            else:
                continue
            entries.append(entry)
        return entries

    def _add_callable(
        self,
        raw_name: str,
        fn: Callable[..., Any],
        source: str,
        *,
        owner: type | None = None,
        description: str | None = None,
    ) -> FunctionEntry:
        base = normalize_name(raw_name) or "function"
        text = description or first_paragraph(inspect.getdoc(fn))
        entry = FunctionEntry(
            name=base,
            description=text or f"Call exported function {base}.",
            source=source,
            target=fn,
            owner=owner,
            base_name=base,
            is_async=inspect.iscoroutinefunction(fn),
        )
        return self._insert(entry, base)

    def _insert(self, entry: FunctionEntry, base: str) -> FunctionEntry:
        final = base
        counter = 1
        while final in self._entries:
            counter += 1
            final = f"{base}_{counter}"
        if final != base:
            self.warnings.append(f'Renamed duplicated function "{base}" to "{final}".')
        if final != entry.name:
            entry = attrs.evolve(entry, name=final, description=_rename(entry, final))
        self._entries[final] = entry
        return entry


def _check_timeout(timeout: object) -> float | None:
    """``None`` (the default limit), ``0`` (no limit) or a positive number of seconds."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise ValueError(f"timeout must be a number of seconds (0: no limit), not {timeout!r}.")
    return float(timeout)


def _rename(entry: FunctionEntry, final: str) -> str:
    generated = f"Call exported function {entry.name}."
    if entry.description == generated:
        return f"Call exported function {final}."
    return entry.description


def _is_function(value: object) -> bool:
    """A function written in Python (``def``, ``async def``, lambda): never a builtin."""
    return inspect.isfunction(value)


def _defined_in(value: object, module_name: str) -> bool:
    """True for functions and classes defined in that module, and for dicts (checked later)."""
    if isinstance(value, dict):
        return True
    if _is_function(value) or inspect.isclass(value):
        return getattr(value, "__module__", None) == module_name
    return False


def _export_problem(export: str, value: object, module_name: str) -> str | None:
    """Why a name of ``__all__`` is not exposed: a warning text, "-" (silently), or None."""
    if export.startswith("_"):
        return "private names are never exposed"
    if value is _MISSING:
        return "the module does not define it"
    if _is_function(value) or inspect.isclass(value):
        if getattr(value, "__module__", None) != module_name:
            return "it is imported from another module"
        return None
    if isinstance(value, dict):
        return None
    if callable(value):
        return "only functions, classes and dicts of functions are exposed"
    return "-"
