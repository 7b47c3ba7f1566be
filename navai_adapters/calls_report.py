"""``navai calls``: what the call log says, as a table (CONTRACT §12).

    navai calls [--log PATH] [--since 24h] [--by key|model|day] [--json]

Reads ``NAVAI_CALL_LOG`` (or ``--log``), one JSON record per line, and prints one row per key,
model or day (UTC, of ``ended_at``): calls, minutes, tool runs, failed tool runs and cost in
USD, and a total. ``--since`` keeps the records whose ``ended_at`` is at most that long ago
(``24h``, ``90m``, ``7d``, ``1h30m``: parsed by ``pytimeparse``) or after a date or time
(``2026-12-01``, ``2026-12-01T08:00:00+00:00``). A call whose model has no price counts in
``unpriced`` rather than in the cost. ``--json`` prints the same rows as a JSON list. The table
is drawn by ``tabulate``; both come with ``pip install 'navai[calls]'``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

LOG_ENV = "NAVAI_CALL_LOG"
GROUPS = ("key", "model", "day")
COLUMNS = ("calls", "minutes", "tool_runs", "tool_failures", "cost_usd", "unpriced")
TOTAL = "total"


def add_command(commands: Any) -> None:
    """Add ``calls`` to the ``navai`` command's subparsers."""
    calls = commands.add_parser(
        "calls",
        help="summarise the call log",
        description="Calls, minutes, tool runs and failures, and cost from the call log "
        f"(${LOG_ENV}); see docs/calls.md.",
    )
    calls.add_argument("--log", default=None, help=f"the call log (default: ${LOG_ENV})")
    calls.add_argument(
        "--since",
        default=None,
        help="only calls that ended at most this long ago (24h, 7d, 90m) or after this "
        "date or time (2026-12-01, ISO 8601)",
    )
    calls.add_argument("--by", choices=GROUPS, default="day", help="one row per (default: day)")
    calls.add_argument("--json", action="store_true", help="print the rows as JSON")


def since_time(text: str, now: float | None = None) -> float:
    """The Unix time ``--since`` names. Raises ``ValueError`` for text it cannot read."""
    from pytimeparse.timeparse import timeparse as parse

    now = time.time() if now is None else now
    seconds = parse(text.strip())
    if seconds is not None:
        return now - float(seconds)
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since must be a duration (24h, 7d, 90m) or an ISO date or time: {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def read_log(lines: Iterable[str]) -> Iterator[Mapping[str, Any]]:
    """The records of a call log; lines that are not a JSON object are skipped."""
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def _group(record: Mapping[str, Any], by: str) -> str:
    if by == "day":
        ended = _number(record.get("ended_at"))
        return datetime.datetime.fromtimestamp(ended, datetime.UTC).date().isoformat()
    value = record.get(by)
    return str(value) if value not in (None, "") else "(none)"


def summarise(
    records: Iterable[Mapping[str, Any]], by: str = "day", since: float | None = None
) -> list[dict[str, Any]]:
    """One row per group (sorted), then the total row."""
    rows: dict[str, dict[str, Any]] = {}
    total = _empty(TOTAL, by)
    for record in records:
        if since is not None and _number(record.get("ended_at")) < since:
            continue
        name = _group(record, by)
        row = rows.setdefault(name, _empty(name, by))
        for target in (row, total):
            _add(target, record)
    ordered = [rows[name] for name in sorted(rows)]
    return [_rounded(row) for row in (*ordered, total)]


def _empty(name: str, by: str) -> dict[str, Any]:
    return {by: name, **dict.fromkeys(COLUMNS, 0)}


def _add(row: dict[str, Any], record: Mapping[str, Any]) -> None:
    row["calls"] += 1
    row["minutes"] += _number(record.get("seconds")) / 60
    tools = record.get("tools")
    if isinstance(tools, list):
        row["tool_runs"] += len(tools)
        row["tool_failures"] += sum(
            1 for tool in tools if isinstance(tool, dict) and tool.get("ok") is False
        )
    else:
        row["tool_runs"] += int(_number(record.get("function_calls")))
    cost = record.get("cost_usd")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        row["cost_usd"] += cost
    else:
        row["unpriced"] += 1


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "minutes": round(row["minutes"], 1), "cost_usd": round(row["cost_usd"], 4)}


def table(rows: list[dict[str, Any]], by: str) -> str:
    from tabulate import tabulate

    headers = [by, "calls", "minutes", "tool runs", "failures", "cost USD", "unpriced"]
    body = [[row[by], *(row[column] for column in COLUMNS)] for row in rows]
    return tabulate(body, headers=headers, floatfmt=("", "", ".1f", "", "", ".4f", ""))


def run(args: argparse.Namespace) -> int:
    """``navai calls``: exit 0 with the table, 1 when the log or an option cannot be read."""
    path = args.log or os.environ.get(LOG_ENV)
    if not path:
        print(f"navai calls: no log: pass --log PATH or set {LOG_ENV}", file=sys.stderr)
        return 1
    try:
        since = since_time(args.since) if args.since else None
    except ModuleNotFoundError as exc:
        return _missing(exc)
    except ValueError as exc:
        print(f"navai calls: {exc}", file=sys.stderr)
        return 1
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            rows = summarise(read_log(handle), args.by, since)
    except OSError as exc:
        print(f"navai calls: {path} cannot be read: {exc.strerror}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    try:
        print(table(rows, args.by))
    except ModuleNotFoundError as exc:
        return _missing(exc)
    return 0


def _missing(exc: ModuleNotFoundError) -> int:
    print(f"navai calls needs the {exc.name} package: pip install 'navai[calls]'", file=sys.stderr)
    return 1
