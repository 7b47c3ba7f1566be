"""The HTTP benchmark's smoke mode: every server starts, every route answers, one table.

It runs ``benchmarks/run.py --smoke`` (the asyncio load generator, a fraction of a second
per measure) and checks that the table has every row and that no request failed. The
figures of a smoke run mean nothing and the targets are not checked here: see
docs/performance.md for a full run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"

pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn")

ROUTES = [
    "client-secret (c=1, upstream 0 ms)",
    "client-secret (c=1, upstream 50 ms)",
    "client-secret (c=64, upstream 0 ms)",
    "client-secret (c=64, upstream 50 ms)",
    "execute sync (c=64)",
    "execute async (c=64)",
    "list functions (c=64)",
]


def test_smoke_run_prints_every_row_and_no_request_fails(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2 * len(ROUTES)  # header + one row per route and server
    for route in ROUTES:
        for stack in ("uvicorn", "gunicorn"):
            assert any(row.startswith(f"| {route} | {stack} |") for row in table), (route, stack)
    assert "discovery of " in done.stdout

    data = json.loads(out.read_text())
    assert {(row["label"], row["stack"]) for row in data["rows"]} == {
        (route, stack) for route in ROUTES for stack in ("uvicorn", "gunicorn")
    }
    for row in data["rows"]:
        for app in ("navai", "bare"):
            measure = row[app]
            assert measure["errors"] == 0, row
            assert measure["requests"] > 0, row
        if row["scenario"]["route"] == "client-secret":
            # The fake upstream saw the mints, over kept-alive connections.
            assert row["navai"]["upstream"]["requests"] > 0, row
            assert row["navai"]["upstream"]["used"] <= row["navai"]["upstream"]["requests"]
