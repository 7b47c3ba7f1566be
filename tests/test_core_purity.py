"""navai_core imports no web framework, and its public API is what __all__ says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import navai_core

FRAMEWORKS = ("starlette", "werkzeug", "flask", "django", "fastapi", "uvicorn", "waitress")


@pytest.mark.slow  # starts a Python process
def test_importing_navai_core_imports_no_web_framework():
    code = (
        "import sys, navai_core\n"
        f"found = [m for m in {FRAMEWORKS!r} if m in sys.modules]\n"
        "print(','.join(found))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_all_is_sorted_and_matches_public_names():
    # The subpackages (calls, functions, ...) are the core's rooms, not its API.
    here = Path(navai_core.__file__).parent
    rooms = {p.name for p in here.iterdir() if (p / "__init__.py").exists()}
    public = {name for name in dir(navai_core) if not name.startswith("_")} - rooms
    assert sorted(navai_core.__all__) == navai_core.__all__
    assert set(navai_core.__all__) == public
