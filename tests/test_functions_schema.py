"""Parameter schemas (pydantic-generated), docstring parsing and result conversion."""

import dataclasses
import datetime
import decimal
import enum
import logging
import sys
import textwrap
import typing
import uuid
from typing import Annotated, Any, Literal, Optional, Union

import attrs
import jsonschema
import pydantic
import pytest
import typing_extensions

from navai_core._http import RequestContext
from navai_core.functions.discovery import load_functions
from navai_core.functions.registry import FunctionRegistry
from navai_core.functions.schema import (
    CallSpec,
    InvalidArguments,
    UnconvertibleResult,
    parse_parameter_docs,
    to_json,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


class Address(typing.TypedDict):
    street: str
    number: int


class PartialAddress(typing.TypedDict, total=False):
    street: str


class ExtAddress(typing_extensions.TypedDict):
    city: str
    zip: typing_extensions.NotRequired[str]


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


@attrs.define
class Box:
    width: int
    label: str = "box"
    tags: list = attrs.Factory(list)
    _secret: str = "s"


@attrs.frozen
class Crate:
    box: Box
    where: Address


class Opaque:
    """A class pydantic cannot validate or describe."""


def schema_of(fn):
    registry = FunctionRegistry()
    registry.add(fn)
    [entry] = registry.entries()
    schema = entry.parameters
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def prop(fn, name="x"):
    return schema_of(fn)["properties"][name]


def bind(fn, **values):
    return CallSpec(fn, title="t").bind((), values)


def problems(fn, **values):
    with pytest.raises(InvalidArguments) as info:
        bind(fn, **values)
    return info.value.details


# ----- one schema per supported type ---------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        (Union[int, str], {"anyOf": [{"type": "integer"}, {"type": "string"}]}),  # noqa: UP007
        (Literal["c", "f"], {"enum": ["c", "f"], "type": "string"}),
        (Literal[1, 2], {"enum": [1, 2], "type": "integer"}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (typing.List[str], {"type": "array", "items": {"type": "string"}}),  # noqa: UP006
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (dict, {"type": "object", "additionalProperties": True}),
        (Any, {}),
        (datetime.date, {"type": "string", "format": "date"}),
        (
            Annotated[int, pydantic.Field(ge=1, le=5)],
            {"type": "integer", "minimum": 1, "maximum": 5},
        ),
    ],
)
def test_schema_of_plain_types(annotation, expected):
    def fn(x): ...

    fn.__annotations__ = {"x": annotation}
    assert prop(fn) == expected


def test_unannotated_parameters_accept_anything():
    def fn(x, y=2): ...

    schema = schema_of(fn)
    assert schema == {
        "type": "object",
        "properties": {"x": {}, "y": {"default": 2}},
        "required": ["x"],
        "additionalProperties": False,
    }


def test_enum_schema_and_validation():
    def fn(color: Color, size: Size = Size.SMALL): ...

    schema = schema_of(fn)
    assert schema["properties"]["color"] == {"$ref": "#/$defs/Color"}
    assert schema["$defs"]["Color"] == {"enum": ["red", "blue"], "type": "string"}
    assert schema["$defs"]["Size"]["enum"] == [1, 2]
    assert bind(fn, color="blue", size=2) == {"color": Color.BLUE, "size": Size.LARGE}
    assert problems(fn, color="green")[0]["parameter"] == "color"


@pytest.mark.parametrize("cls", [Address, ExtAddress, PartialAddress])
def test_typeddict_schema_and_validation(cls):
    def fn(where): ...

    fn.__annotations__ = {"where": cls}
    schema = schema_of(fn)
    definition = schema["$defs"][cls.__name__]
    assert definition["type"] == "object"
    if cls is Address:
        assert definition["required"] == ["street", "number"]
        assert bind(fn, where={"street": "Main", "number": "7"}) == {
            "where": {"street": "Main", "number": 7}
        }
        assert problems(fn, where={"street": "Main"}) == [
            {"parameter": "where", "message": "At number: Field required"}
        ]
    elif cls is ExtAddress:
        assert definition["required"] == ["city"]
    else:
        assert "required" not in definition
        assert bind(fn, where={}) == {"where": {}}


def test_typing_typeddict_works_on_every_python_version():
    # pydantic refuses typing.TypedDict before Python 3.12; navai adapts it.
    assert sys.version_info >= (3, 12) or type(Address).__module__ == "typing"

    def fn(where: Address): ...

    assert bind(fn, where={"street": "a", "number": 1}) == {"where": {"street": "a", "number": 1}}


def test_dataclass_schema_and_validation():
    def fn(point: Point): ...

    schema = schema_of(fn)
    assert schema["$defs"]["Point"]["required"] == ["x"]
    assert bind(fn, point={"x": 1}) == {"point": Point(1.0, 0.0)}
    assert problems(fn, point={"x": "far"})[0]["parameter"] == "point"


def test_attrs_schema_and_validation():
    def fn(box: Box, crate: Crate | None = None): ...

    schema = schema_of(fn)
    box = schema["$defs"]["Box"]
    assert box["required"] == ["width"]
    assert set(box["properties"]) == {"width", "label", "tags", "secret"}
    assert "Address" in schema["$defs"] and "Crate" in schema["$defs"]
    values = bind(fn, box={"width": "3", "secret": "x"})
    assert values == {"box": Box(3, "box", [], "x")}
    assert isinstance(values["box"], Box)
    crate = bind(
        fn, box={"width": 1}, crate={"box": {"width": 2}, "where": {"street": "s", "number": 1}}
    )
    assert crate["crate"] == Crate(Box(2), {"street": "s", "number": 1})
    assert problems(fn, box={"label": "x"}) == [
        {"parameter": "box", "message": "At width: Field required"}
    ]


def test_unsupported_types_are_left_unchecked_with_a_log(caplog):
    def fn(thing: Opaque, n: int): ...

    with caplog.at_level(logging.WARNING, logger="navai"):
        schema = schema_of(fn)
    assert schema["properties"] == {"thing": {}, "n": {"type": "integer"}}
    assert "is not supported" in caplog.text
    marker = object()
    assert bind(fn, thing=marker, n=1) == {"thing": marker, "n": 1}


def test_unresolvable_string_annotation_is_left_unchecked(caplog):
    def fn(a: "NoSuchType", b: "int"): ...  # noqa: F821

    with caplog.at_level(logging.WARNING, logger="navai"):
        schema = schema_of(fn)
    assert schema["properties"] == {"a": {}, "b": {"type": "integer"}}
    assert "cannot resolve" in caplog.text


def test_future_annotations_in_a_discovered_file(tmp_path):
    path = tmp_path / "tools" / "weather.py"
    path.parent.mkdir()
    path.write_text(
        textwrap.dedent(
            """
            from __future__ import annotations
            import dataclasses
            from typing import Literal

            @dataclasses.dataclass
            class Where:
                city: str

            def get_weather(where: Where, units: Literal["c", "f"] = "c") -> dict:
                return {"city": where.city, "units": units}
            """
        )
    )
    registry = load_functions(base_dir=tmp_path, folders="tools")
    entry = registry.get("get_weather")
    assert entry.parameters["properties"]["units"] == {
        "default": "c",
        "enum": ["c", "f"],
        "type": "string",
    }
    assert entry.parameters["$defs"]["Where"]["required"] == ["city"]
    values = entry.call_spec.bind((), {"where": {"city": "Lima"}})
    assert values["where"].city == "Lima"


def test_context_varargs_and_kwargs_are_not_properties():
    def fn(city: str, *rest: int, context: RequestContext, **options: str): ...

    schema = schema_of(fn)
    assert schema == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": {"type": "string"},
    }
    spec = CallSpec(fn, title="t")
    assert spec.bind(("a", "1", 2), {"x": "y"}) == {
        "city": "a",
        "rest": [1, 2],
        "options": {"x": "y"},
    }
    details = InvalidArguments
    with pytest.raises(details):
        spec.bind(("a", "nope"), {})


def test_no_parameters_is_an_empty_object():
    def fn(): ...

    assert schema_of(fn) == {"type": "object", "properties": {}, "additionalProperties": False}


def test_parameter_names_that_clash_with_pydantic_are_fine():
    def fn(model_config: str, json: int, _private: bool = False, schema: str = "s"): ...

    assert list(schema_of(fn)["properties"]) == ["model_config", "json", "_private", "schema"]
    assert bind(fn, model_config="a", json=1, _private=True) == {
        "model_config": "a",
        "json": 1,
        "_private": True,
    }


def test_method_schema_includes_constructor_args():
    class Service:
        def __init__(self, api_key: str, retries: int = 1, context=None): ...

        def lookup(self, city: str): ...

    registry = FunctionRegistry()
    registry.add(Service)
    schema = registry.get("service_lookup").parameters
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["city"] == {"type": "string"}
    assert schema["properties"]["constructorArgs"] == {
        "type": "object",
        "properties": {"api_key": {"type": "string"}, "retries": {"default": 1, "type": "integer"}},
        "required": ["api_key"],
        "additionalProperties": False,
        "description": "Arguments of the class constructor.",
    }


def test_generated_schemas_accept_what_validation_accepts():
    def fn(
        units: Literal["c", "f"], point: Point, tags: list[str], where: Address | None = None
    ): ...

    schema = schema_of(fn)
    good = {"units": "c", "point": {"x": 1.5}, "tags": ["a"], "where": {"street": "s", "number": 2}}
    jsonschema.validate(good, schema)
    bind(fn, **good)
    bad = {"units": "k", "point": {"x": 1.5}, "tags": ["a"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    assert problems(fn, **bad)[0]["parameter"] == "units"


# ----- docstrings -----------------------------------------------------------------------


def google(city: str, units: str = "c", *args, **kwargs):
    """Current weather.

    Args:
        city (str): The city,
            with a country.
        units: Unit system.
        *args: Extra values.

    Returns:
        dict: the weather.
    """


def numpy(city: str, units: str = "c", a: int = 0, b: int = 0):
    """Current weather.

    Parameters
    ----------
    city : str
        The city,
        with a country.
    units : {"c", "f"}, optional
        Unit system.
    a, b : int
        Two numbers.

    Returns
    -------
    dict
        the weather.
    """


def rest(city: str, units: str = "c"):
    """Current weather.

    :param city: The city,
        with a country.
    :param str units: Unit system.
    :returns: the weather.
    :rtype: dict
    """


def test_google_docstring():
    assert parse_parameter_docs(google.__doc__) == {
        "city": "The city, with a country.",
        "units": "Unit system.",
        "args": "Extra values.",
    }


def test_numpy_docstring():
    assert parse_parameter_docs(numpy.__doc__) == {
        "city": "The city, with a country.",
        "units": "Unit system.",
        "a": "Two numbers.",
        "b": "Two numbers.",
    }


def test_rest_docstring():
    assert parse_parameter_docs(rest.__doc__) == {
        "city": "The city, with a country.",
        "units": "Unit system.",
    }


@pytest.mark.parametrize("fn", [google, numpy, rest])
def test_docstring_text_reaches_the_schema(fn):
    registry = FunctionRegistry()
    registry.add(fn)
    [entry] = registry.entries()
    assert entry.description == "Current weather."
    properties = entry.parameters["properties"]
    assert properties["city"]["description"] == "The city, with a country."
    assert properties["units"]["description"] == "Unit system."


def test_docstring_without_parameters():
    assert parse_parameter_docs("Just a summary.\n\nMore text: not a parameter.") == {}
    assert parse_parameter_docs(None) == {}


def test_class_docstring_documents_constructor():
    class Service:
        """A service.

        Args:
            api_key: The key.
        """

        def __init__(self, api_key: str): ...

        def run(self): ...

    registry = FunctionRegistry()
    registry.add(Service)
    ctor = registry.get("service_run").parameters["properties"]["constructorArgs"]
    assert ctor["properties"]["api_key"]["description"] == "The key."


# ----- results -------------------------------------------------------------------------


def test_results_convert_to_json():
    when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)
    value = {
        "point": Point(1, 2),
        "box": Box(1),
        "when": when,
        "day": datetime.date(2024, 5, 1),
        "tags": {"a"},
        "pair": (1, "x"),
        "raw": b"\x00\xffhi",
        "color": Color.RED,
        "price": decimal.Decimal("1.50"),
        "id": uuid.UUID(int=1),
        "nan": float("nan"),
        "nested": [frozenset(), (Point(0, 0),)],
    }
    assert to_json(value) == {
        "point": {"x": 1, "y": 2},
        "box": {"width": 1, "label": "box", "tags": [], "_secret": "s"},
        "when": "2024-05-01T12:30:00Z",
        "day": "2024-05-01",
        "tags": ["a"],
        "pair": [1, "x"],
        "raw": "AP9oaQ==",
        "color": "red",
        "price": "1.50",
        "id": "00000000-0000-0000-0000-000000000001",
        "nan": None,
        "nested": [[], [{"x": 0, "y": 0}]],
    }


@pytest.mark.parametrize("value", [None, "text", 3, True, 1.5, [1, "a"], {"a": {"b": None}}])
def test_plain_json_results_are_unchanged(value):
    assert to_json(value) == value


@pytest.mark.parametrize("value", [Opaque(), {"a": object()}, [lambda: None]])
def test_unconvertible_results_raise_a_clear_error(value):
    with pytest.raises(UnconvertibleResult, match="cannot be converted to JSON"):
        to_json(value)
