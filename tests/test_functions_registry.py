"""Registration in code: the decorator, add(), naming, collisions, merging, the list body."""

from __future__ import annotations

import types

import attrs
import pytest

from navai_core.functions.registry import FunctionEntry, FunctionRegistry, normalize_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("get_weather", "get_weather"),
        ("getWeather", "get_weather"),
        ("GetWeather", "get_weather"),
        ("getHTTPResponse", "get_http_response"),
        ("HTTPServer", "http_server"),
        ("get-weather now!", "get_weather_now"),
        ("__get__weather__", "get_weather"),
        ("Weather2Day", "weather2_day"),
        ("WEATHER", "weather"),
    ],
)
def test_normalize_name(raw, expected):
    assert normalize_name(raw) == expected


def test_bare_decorator_registers_and_returns_the_function():
    registry = FunctionRegistry()

    @registry.function
    async def getWeather(city: str) -> dict:
        """Current weather of a city.

        More text that is not part of the description.
        """
        return {"city": city}

    assert isinstance(getWeather, types.FunctionType)
    entry = registry.get("get_weather")
    assert entry.target is getWeather
    assert entry.description == "Current weather of a city."
    assert (
        entry.source
        == f"{__name__}#test_bare_decorator_registers_and_returns_the_function.<locals>.getWeather"
    )
    assert entry.is_async


def test_decorator_with_overrides():
    registry = FunctionRegistry()

    @registry.function(name="Weather Now", description="Tell the weather.")
    def get_weather():
        """Ignored docstring."""

    assert registry.names() == ["weather_now"]
    assert registry.get("weather_now").description == "Tell the weather."
    assert get_weather.__name__ == "get_weather"


def test_description_is_the_first_paragraph_on_one_line_or_generated():
    registry = FunctionRegistry()

    def wrapped():
        """First line
        continues here.

        Second paragraph.
        """

    def args_only(city):
        """Args:
        city: the city.
        """

    def nothing():
        pass

    for fn in (wrapped, args_only, nothing):
        registry.add(fn)
    assert [e.description for e in registry.entries()] == [
        "First line continues here.",
        "Call exported function args_only.",
        "Call exported function nothing.",
    ]


def test_add_rejects_builtins_and_odd_values():
    registry = FunctionRegistry()
    for value in (print, len, 3, "text", object()):
        with pytest.raises(TypeError):
            registry.add(value)
    assert len(registry) == 0


def test_add_a_class_and_a_dict():
    registry = FunctionRegistry()

    @registry.function
    class Calculator:
        def add(self, a: int, b: int) -> int:
            return a + b

        def _hidden(self):
            pass

    registry.add({"double": lambda x: 2 * x, "_skip": lambda: 0, "n": 3}, name="math")
    assert registry.names() == ["calculator_add", "math_double"]
    assert registry.get("calculator_add").owner is Calculator


def test_class_without_public_methods_gives_a_warning():
    registry = FunctionRegistry()

    class Empty:
        pass

    assert registry.add(Empty) == []
    assert registry.warnings[0].startswith("Class Empty (")


def test_duplicates_are_renamed_with_a_warning():
    registry = FunctionRegistry()
    for _ in range(3):
        registry.add(lambda: None, name="ping")
    assert registry.names() == ["ping", "ping_2", "ping_3"]
    assert registry.warnings == [
        'Renamed duplicated function "ping" to "ping_2".',
        'Renamed duplicated function "ping" to "ping_3".',
    ]


def test_merge_keeps_order_and_applies_the_collision_rules():
    first, second = FunctionRegistry(), FunctionRegistry()
    first.add(lambda: 1, name="a")
    second.add(lambda: 2, name="a")
    second.add(lambda: 3, name="b")
    second.warnings.append("from second")
    merged = first.merge(second)
    assert merged.names() == ["a", "a_2", "b"]
    assert merged.get("a_2").target() == 2
    assert merged.warnings == ["from second", 'Renamed duplicated function "a" to "a_2".']
    assert first.names() == ["a"] and second.names() == ["a", "b"]
    assert FunctionRegistry.combine(first, second).names() == merged.names()


def test_entries_are_frozen_values():
    registry = FunctionRegistry()
    registry.add(lambda: None, name="x")
    entry = registry.get("x")
    assert isinstance(entry, FunctionEntry)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        entry.name = "y"


def test_lookup_and_list_body():
    registry = FunctionRegistry()

    @registry.function
    def get_weather(city: str):
        """Weather."""

    assert registry.get("nope") is None
    assert "get_weather" in registry
    assert [e.name for e in registry] == ["get_weather"]
    body = registry.list_body()
    assert body == {
        "items": [
            {
                "name": "get_weather",
                "description": "Weather.",
                "source": registry.get("get_weather").source,
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            }
        ],
        "warnings": [],
    }


def test_add_module_uses_the_module_name_as_source():
    module = types.ModuleType("voice_tools")
    exec("def hello():\n    return 'hi'\n", module.__dict__)
    registry = FunctionRegistry()
    registry.add_module(module)
    assert registry.get("hello").source == "voice_tools#hello"


def test_prepare_schemas_builds_every_entry_once():
    registry = FunctionRegistry()

    @registry.function
    def a(x: int): ...

    def broken(): ...

    broken.__signature__ = "not a signature"
    registry.add(broken)
    entry = registry.get("a")
    assert entry._compiled.specs is None
    registry.prepare_schemas()  # never raises
    specs = entry._compiled.specs
    assert specs is not None
    assert registry.get("broken")._compiled.error is not None
    registry.prepare_schemas()
    assert entry._compiled.specs is specs
