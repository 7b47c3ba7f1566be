"""Parameter schemas, argument validation and result conversion for backend functions.

pydantic does the type work: each function's parameters become one pydantic model (built
once, on first use), whose JSON Schema is the tool's ``parameters`` and whose validator
checks the arguments before the function runs. navai only adds what pydantic does not do:
reading per-parameter text from docstrings, binding JSON arguments to a signature, and two
type adaptations (``typing.TypedDict`` before Python 3.12, attrs classes).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import sys
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import UnionType
from typing import Annotated, Any, Union

import attrs
import pydantic
import typing_extensions
from pydantic.json_schema import PydanticJsonSchemaWarning
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .._json import JsonValue

logger = logging.getLogger("navai")

CONTEXT_PARAMETER = "context"
# Most entries an "Invalid arguments." answer lists (then one entry counts the rest).
MAX_PROBLEMS = 20

_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
_VARIADIC = (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)


class InvalidArguments(Exception):
    """Arguments that do not fit a function; ``details`` has one entry per problem."""

    def __init__(self, details: list[dict[str, JsonValue]]) -> None:
        super().__init__("Invalid arguments.")
        self.details = details


class UnconvertibleResult(TypeError):
    """A function returned a value navai cannot turn into JSON."""


# ----- the call spec ------------------------------------------------------------------


class CallSpec:
    """How to bind, validate and call one callable (built once per function, then reused).

    ``skip_first`` drops the first parameter (``self`` of a method called on an instance).
    The parameter named ``context`` is not an argument: it receives the request context.
    """

    def __init__(self, fn: Callable[..., Any], *, skip_first: bool = False, title: str) -> None:
        params = list(inspect.signature(fn).parameters.values())
        if skip_first:
            params = params[1:]
        self.signature = inspect.Signature(params)
        self.wants_context = any(
            p.name == CONTEXT_PARAMETER and p.kind not in _VARIADIC for p in params
        )
        visible = [p for p in params if p.name != CONTEXT_PARAMETER or p.kind in _VARIADIC]
        self.positional = [p for p in visible if p.kind in _POSITIONAL]
        self.by_name = {p.name: p for p in visible if p.kind not in _VARIADIC}
        self.var_positional = next((p for p in visible if p.kind == _P.VAR_POSITIONAL), None)
        self.var_keyword = next((p for p in visible if p.kind == _P.VAR_KEYWORD), None)
        self.has_arguments = bool(visible)
        self._positional_only_defaults = {
            p.name: p.default
            for p in params
            if p.kind == _P.POSITIONAL_ONLY and p.default is not _P.empty
        }
        self.model, self.schema = _build_model(fn, visible, title)
        self._names = {f"p{index}": p.name for index, p in enumerate(visible)}

    def accepts_keywords(self, keys: Iterable[str]) -> bool:
        """True when every key names a parameter (rule 3 of the contract)."""
        if self.var_keyword is not None:
            return all(k != CONTEXT_PARAMETER for k in keys)
        return all(k in self.by_name for k in keys)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map JSON arguments onto parameters and validate them; raise InvalidArguments."""
        if not args and not kwargs and not self.has_arguments:
            return {}
        problems: list[dict[str, JsonValue]] = []
        values: dict[str, Any] = {}
        extra_positional: list[Any] = []
        extra_keywords: dict[str, Any] = {}
        takes = len(self.positional)
        for index, value in enumerate(args[:takes]):
            values[self.positional[index].name] = value
        if len(args) > takes:
            if self.var_positional is not None:
                extra_positional = list(args[takes:])
            else:
                # One entry for every surplus argument, however many were sent.
                surplus = f"args[{takes}]" if len(args) == takes + 1 else f"args[{takes}:]"
                problems.append(
                    _problem(
                        surplus,
                        f"Unexpected positional argument: the function takes at most {takes}"
                        f" (got {len(args)}).",
                    )
                )
        for key, value in kwargs.items():
            if key in self.by_name:
                if key in values:
                    problems.append(_problem(key, "Got more than one value."))
                else:
                    values[key] = value
            elif self.var_keyword is not None and key != CONTEXT_PARAMETER:
                extra_keywords[key] = value
            else:
                problems.append(_problem(key, "Unexpected argument."))
        if self.var_positional is not None and extra_positional:
            values[self.var_positional.name] = extra_positional
        if self.var_keyword is not None and extra_keywords:
            values[self.var_keyword.name] = extra_keywords
        validated = self._validate(values, problems)
        if problems:
            raise InvalidArguments(_capped(problems))
        return validated

    def _validate(
        self, values: dict[str, Any], problems: list[dict[str, JsonValue]]
    ) -> dict[str, Any]:
        try:
            instance = self.model.model_validate(values)
        except pydantic.ValidationError as exc:
            problems.extend(_problems_from(exc))
            return values
        fields = instance.__dict__
        names = self._names
        return {names[field]: fields[field] for field in instance.model_fields_set}

    def call_arguments(
        self, values: Mapping[str, Any], context: object
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for a call with bound ``values``."""
        if not values and not self.wants_context:
            return (), {}
        arguments = dict(self._positional_only_defaults)
        arguments.update(values)
        if self.wants_context:
            arguments[CONTEXT_PARAMETER] = context
        bound = inspect.BoundArguments(self.signature, arguments)  # type: ignore[arg-type,unused-ignore]
        return bound.args, bound.kwargs


def _capped(problems: list[dict[str, JsonValue]]) -> list[dict[str, JsonValue]]:
    """At most ``MAX_PROBLEMS`` entries (then one that counts the rest): an answer's size
    does not grow with what a client sends."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], _problem("...", f"{rest} more problems not listed.")]


def _problem(parameter: str, message: str) -> dict[str, JsonValue]:
    return {"parameter": parameter, "message": message}


def _problems_from(exc: pydantic.ValidationError) -> list[dict[str, JsonValue]]:
    problems = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        location = error["loc"]
        parameter = str(location[0]) if location else "payload"
        message = error["msg"]
        if error["type"] == "missing" and len(location) == 1:
            message = "Missing required argument."
        elif len(location) > 1:
            message = f"At {'.'.join(str(part) for part in location[1:])}: {message}"
        problems.append(_problem(parameter, message))
    return problems


# ----- building the model ---------------------------------------------------------------


def _build_model(
    fn: Callable[..., Any], visible: list[inspect.Parameter], title: str
) -> tuple[type[pydantic.BaseModel], dict[str, JsonValue]]:
    hints = _type_hints(fn)
    docs = parse_parameter_docs(inspect.getdoc(fn))
    if isinstance(fn, type) and inspect.isfunction(getattr(fn, "__init__", None)):
        docs = {**parse_parameter_docs(inspect.getdoc(fn.__init__)), **docs}  # type: ignore[misc]
    fields: dict[str, tuple[Any, Any]] = {}
    adapted: dict[Any, Any] = {}  # (one adapted type per hint, within this model)
    for index, p in enumerate(visible):
        annotation = adapt_type(hints.get(p.name, Any), adapted)
        default: Any = ... if p.default is _P.empty else p.default
        if p.kind == _P.VAR_POSITIONAL:
            annotation, default = list[annotation], []  # type: ignore[valid-type]
        elif p.kind == _P.VAR_KEYWORD:
            annotation, default = dict[str, annotation], {}  # type: ignore[valid-type]
        field = pydantic.Field(default, alias=p.name, description=docs.get(p.name.lstrip("*")))
        fields[f"p{index}"] = (annotation, field)
    name = re.sub(r"\W", "_", title) or "Arguments"
    try:
        model = _create_model(name, fields)
        raw_schema = _json_schema(model)
    except Exception:
        fields = {key: (_usable(fn, fields[key][0]), fields[key][1]) for key in fields}
        model = _create_model(name, fields)
        raw_schema = _json_schema(model)
    return model, _tool_schema(raw_schema, visible)


def _create_model(name: str, fields: dict[str, tuple[Any, Any]]) -> type[pydantic.BaseModel]:
    model: type[pydantic.BaseModel] = pydantic.create_model(  # type: ignore[call-overload]
        name, __config__=pydantic.ConfigDict(extra="ignore", populate_by_name=False), **fields
    )
    return model


def _json_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        return model.model_json_schema(by_alias=True)


def _usable(fn: Callable[..., Any], annotation: Any) -> Any:
    """``annotation`` if pydantic can validate it and describe it in JSON Schema, else Any."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
            pydantic.TypeAdapter(annotation).json_schema()
    except Exception as exc:
        logger.warning(
            "%s: type %r is not supported, the argument is not checked (%s)",
            getattr(fn, "__qualname__", fn),
            annotation,
            exc,
        )
        return Any
    return annotation


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    if isinstance(fn, type):  # a class: the parameters are those of __init__
        init = getattr(fn, "__init__", None)
        if not inspect.isfunction(init):
            return {}
        fn = init
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    target = inspect.unwrap(fn)
    namespace = getattr(target, "__globals__", {})
    for name, annotation in getattr(target, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            logger.warning(
                "%s: cannot resolve the type of %r; the argument is not checked",
                getattr(fn, "__qualname__", fn),
                name,
            )
    return hints


def _tool_schema(raw: dict[str, Any], visible: list[inspect.Parameter]) -> dict[str, JsonValue]:
    """Trim pydantic's schema to what a tool definition needs."""
    properties: dict[str, Any] = raw.get("properties", {})
    var_keyword: Any = True
    for p in visible:
        if p.kind == _P.VAR_POSITIONAL:
            properties.pop(p.name, None)
        elif p.kind == _P.VAR_KEYWORD:
            var_keyword = properties.pop(p.name, {}).get("additionalProperties", True)
    schema: dict[str, Any] = {"type": "object", "properties": _strip_titles(properties)}
    required = [name for name in raw.get("required", []) if name in properties]
    if required:
        schema["required"] = required
    has_var_keyword = any(p.kind == _P.VAR_KEYWORD for p in visible)
    schema["additionalProperties"] = var_keyword if has_var_keyword else False
    if "$defs" in raw:
        schema["$defs"] = {
            name: _strip_property_titles(definition) for name, definition in raw["$defs"].items()
        }
    return schema


def _strip_titles(properties: dict[str, Any]) -> dict[str, Any]:
    return {name: _strip_property_titles(value) for name, value in properties.items()}


def _strip_property_titles(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    result = {k: v for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(result.get("properties"), dict):
        result["properties"] = _strip_titles(result["properties"])
    for key in ("items", "additionalProperties"):
        if isinstance(result.get(key), dict):
            result[key] = _strip_property_titles(result[key])
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(result.get(key), list):
            result[key] = [_strip_property_titles(item) for item in result[key]]
    if "title" in schema and "properties" in schema:
        result["title"] = schema["title"]  # a named object ($defs entry) keeps its name
    return result


# ----- type adaptation --------------------------------------------------------------------


def adapt_type(tp: Any, cache: dict[Any, Any] | None = None) -> Any:
    """Rewrite the parts of a type hint pydantic cannot take as they are.

    ``typing.TypedDict`` classes (pydantic needs ``typing_extensions.TypedDict`` before
    Python 3.12) and attrs classes (validated as a model, then built) are replaced,
    anywhere inside unions, containers and ``Annotated``. ``cache`` (the caller's) keeps
    the adapted type of each hint, so one hint met twice gives one type.
    """
    if cache is None:
        return _adapt(tp, set())
    try:
        return cache[tp]
    except (KeyError, TypeError):
        pass
    result = _adapt(tp, set())
    with contextlib.suppress(TypeError):
        cache[tp] = result
    return result


def _adapt(tp: Any, seen: set[int]) -> Any:
    if id(tp) in seen:
        return Any  # a recursive TypedDict or attrs class: left unchecked
    if isinstance(tp, type) and attrs.has(tp):
        return _adapt_attrs(tp, seen | {id(tp)})
    if (
        sys.version_info < (3, 12)
        and typing_extensions.is_typeddict(tp)
        and type(tp).__module__ == "typing"
    ):
        return _adapt_typeddict(tp, seen | {id(tp)})
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is None or not args:
        return tp
    if origin is Annotated:
        inner = _adapt(args[0], seen)
        annotated: Any = Annotated
        params = (inner, *tp.__metadata__)
        return tp if inner is args[0] else annotated[params]
    if origin is typing.Literal:
        return tp
    new_args = tuple(_adapt(a, seen) if a is not Ellipsis else a for a in args)
    if all(new is old for new, old in zip(new_args, args, strict=True)):
        return tp
    if origin is Union or origin is UnionType:
        return Union[new_args]  # noqa: UP007
    try:
        return origin[new_args]
    except TypeError:
        return tp


def _adapt_typeddict(tp: Any, seen: set[int]) -> Any:
    hints = typing.get_type_hints(tp, include_extras=True)
    required = getattr(tp, "__required_keys__", frozenset(hints))
    fields = {
        key: (
            typing_extensions.Required[_adapt(value, seen)]
            if key in required
            else typing_extensions.NotRequired[_adapt(value, seen)]
        )
        for key, value in hints.items()
    }
    make: Any = typing_extensions.TypedDict
    adapted = make(tp.__name__, fields)
    adapted.__doc__ = tp.__doc__
    return adapted


_ATTRS_FACTORY: type[Any] = type(attrs.Factory(list))


def _adapt_attrs(cls: type, seen: set[int]) -> Any:
    attrs.resolve_types(cls)
    fields: dict[str, tuple[Any, Any]] = {}
    names: dict[str, str] = {}
    for index, a in enumerate(attrs.fields(cls)):
        if not a.init:
            continue
        key = a.alias or a.name
        annotation = Any if a.type is None else _adapt(a.type, seen)
        if a.default is attrs.NOTHING:
            field = pydantic.Field(alias=key)
        elif isinstance(a.default, _ATTRS_FACTORY):
            factory = a.default.factory
            field = pydantic.Field(default_factory=factory, alias=key)
        else:
            field = pydantic.Field(a.default, alias=key)
        fields[f"f{index}"] = (annotation, field)
        names[f"f{index}"] = key
    model = _create_model(cls.__name__, fields)
    model.__doc__ = cls.__doc__

    def build(value: pydantic.BaseModel) -> Any:
        return cls(**{names[field]: getattr(value, field) for field in names})

    return Annotated[model, pydantic.AfterValidator(build)]


# ----- docstrings --------------------------------------------------------------------------

_GOOGLE_HEADER = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters)"
    r"\s*:\s*$"
)
_GOOGLE_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_HEADER = re.compile(r"^(\s*)(Parameters|Other Parameters|Keyword Arguments)\s*$")
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
_NUMPY_ITEM = re.compile(r"^(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?$")
_REST_ITEM = re.compile(
    r"^(\s*):(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:\s*(.*)$"
)


def parse_parameter_docs(doc: str | None) -> dict[str, str]:
    """Per-parameter text of a Google, NumPy or reST (Sphinx) style docstring."""
    if not doc:
        return {}
    lines = inspect.cleandoc(doc).splitlines()
    found: dict[str, str] = {}
    _parse_rest(lines, found)
    _parse_google(lines, found)
    _parse_numpy(lines, found)
    return found


def first_paragraph(doc: str | None) -> str | None:
    """The docstring's first paragraph on one line, unless it is a parameter section."""
    if not doc:
        return None
    paragraph = inspect.cleandoc(doc).strip().split("\n\n", 1)[0]
    lines = paragraph.splitlines()
    if not lines or _GOOGLE_HEADER.match(lines[0]) or _REST_ITEM.match(lines[0]):
        return None
    if len(lines) > 1 and _NUMPY_RULE.match(lines[1]):
        return None
    return " ".join(line.strip() for line in lines) or None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join(parts: list[str]) -> str:
    return " ".join(part.strip() for part in parts if part.strip())


def _parse_rest(lines: list[str], found: dict[str, str]) -> None:
    i = 0
    while i < len(lines):
        match = _REST_ITEM.match(lines[i])
        i += 1
        if not match:
            continue
        indent, name, text = len(match[1]), match[2], [match[3]]
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > indent:
            if lines[i].lstrip().startswith(":"):
                break
            text.append(lines[i])
            i += 1
        found.setdefault(name, _join(text))


def _parse_google(lines: list[str], found: dict[str, str]) -> None:
    i = 0
    while i < len(lines):
        header = _GOOGLE_HEADER.match(lines[i])
        i += 1
        if not header:
            continue
        section_indent = len(header[1])
        item_indent: int | None = None
        name: str | None = None
        text: list[str] = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= section_indent:
                break
            i += 1
            if not line.strip():
                continue
            if item_indent is None:
                item_indent = _indent(line)
            item = _GOOGLE_ITEM.match(line.strip()) if _indent(line) == item_indent else None
            if item:
                if name:
                    found.setdefault(name, _join(text))
                name, text = item[1], [item[2]]
            else:
                text.append(line)
        if name:
            found.setdefault(name, _join(text))


def _parse_numpy(lines: list[str], found: dict[str, str]) -> None:
    i = 0
    while i < len(lines) - 1:
        header = _NUMPY_HEADER.match(lines[i])
        if not header or not _NUMPY_RULE.match(lines[i + 1]):
            i += 1
            continue
        section_indent = len(header[1])
        i += 2
        names: list[str] = []
        text: list[str] = []
        while i < len(lines):
            line = lines[i]
            if i + 1 < len(lines) and line.strip() and _NUMPY_RULE.match(lines[i + 1]):
                break  # the next section
            if line.strip() and _indent(line) < section_indent:
                break
            i += 1
            if not line.strip():
                continue
            if _indent(line) == section_indent:
                item = _NUMPY_ITEM.match(line.strip())
                for name in names:
                    found.setdefault(name, _join(text))
                names = [n.strip().lstrip("*") for n in item[1].split(",")] if item else []
                text = []
            else:
                text.append(line)
        for name in names:
            found.setdefault(name, _join(text))


# ----- results -------------------------------------------------------------------------------


def to_json(value: Any) -> JsonValue:
    """Convert a function's result to a JSON value, or raise UnconvertibleResult.

    Dataclasses, attrs classes and pydantic models become objects, datetimes ISO 8601
    strings, sets and tuples lists, bytes URL-safe base64, enums their value,
    NaN and infinities null.
    """
    if value is None or type(value) in (str, int, bool):
        return value  # type: ignore[no-any-return]
    try:
        converted = to_jsonable_python(
            value, bytes_mode="base64", inf_nan_mode="null", fallback=_fallback
        )
    except (PydanticSerializationError, TypeError, ValueError, RecursionError) as exc:
        raise UnconvertibleResult(
            f"The function returned a value that cannot be converted to JSON ({exc})."
        ) from exc
    return converted  # type: ignore[no-any-return]


def _fallback(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
