"""Example backend functions: the weather, from a small built-in table (no network).

`navai serve` exposes every public function defined here as a tool the voice agent may
call: `get_weather` and `list_cities`. Run it from the repository root with

    NAVAI_FUNCTIONS_FOLDERS=examples/functions .venv/bin/navai serve
"""

from __future__ import annotations

from typing import Literal

from navai_core import FunctionError

_CITIES = {
    "bogota": ("Bogotá", 14.0, "light rain"),
    "lima": ("Lima", 19.0, "overcast"),
    "madrid": ("Madrid", 24.0, "sunny"),
    "mexico city": ("Mexico City", 18.0, "cloudy"),
}


async def get_weather(city: str, units: Literal["c", "f"] = "c") -> dict[str, object]:
    """Current weather for a city.

    Args:
        city: City name, for example "Bogota".
        units: "c" for Celsius, "f" for Fahrenheit.
    """
    found = _CITIES.get(city.strip().lower())
    if found is None:
        raise FunctionError(f"City not found: {city}")  # this text reaches the model
    name, celsius, sky = found
    temperature = celsius if units == "c" else round(celsius * 9 / 5 + 32, 1)
    return {"city": name, "temperature": temperature, "units": units, "sky": sky}


def list_cities() -> list[str]:
    """The cities get_weather knows."""
    return sorted(name for name, _, _ in _CITIES.values())
