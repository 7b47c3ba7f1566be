"""Every error navai answers with lives in ``navai_core._errors``, with its status."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import navai_core
from navai_core import NavaiError
from navai_core._errors import UnsupportedMediaType


def _core_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(navai_core.__path__, prefix="navai_core.")]


def test_every_navai_error_subclass_is_defined_in_the_errors_module() -> None:
    elsewhere = set()
    for name in _core_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, NavaiError)
                and value.__module__ != "navai_core._errors"
            ):
                elsewhere.add(f"{value.__module__}.{value.__qualname__}")
    assert not elsewhere


def test_unsupported_media_type_names_what_the_route_reads() -> None:
    assert UnsupportedMediaType().to_reply().status == 415
    assert UnsupportedMediaType().body() == {"error": "Content-Type must be application/json."}
    both = UnsupportedMediaType(("application/sdp", "application/json"))
    assert both.message == "Content-Type must be application/sdp or application/json."
