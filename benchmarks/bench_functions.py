"""Benchmark of backend functions: discovery time and per-call overhead of execute.

Run from the repository root:

    .venv/bin/python benchmarks/bench_functions.py [--files 500] [--per-file 5] [--calls 20000]

It prints plain text; the figures and how to read them are in docs/performance.md.
This is a measurement script, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from navai_core._http import RequestContext
from navai_core.functions.discovery import load_functions
from navai_core.functions.dispatch import aexecute, execute, prepare_call
from navai_core.functions.registry import FunctionRegistry

MODULE_TEMPLATE = '''\
"""Generated module {index}."""

from typing import Literal


def weather_{index}_{n}(city: str, units: Literal["c", "f"] = "c") -> dict:
    """Current weather of a city.

    Args:
        city: The city name.
        units: Unit system.
    """
    return {{"city": city, "units": units}}
'''


def write_tree(base: Path, files: int, per_file: int) -> None:
    folder = base / "src" / "ai" / "functions-modules"
    for index in range(files):
        sub = folder / f"group{index % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        header, _, body = MODULE_TEMPLATE.partition("\n\n\ndef")
        parts = [header.format(index=index, n=0)]
        for n in range(per_file):
            parts.append("def" + body.format(index=index, n=n))
        (sub / f"tools_{index}.py").write_text("\n\n".join(parts))


def bench_discovery(files: int, per_file: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_tree(base, files, per_file)
        for label in ("cold (no bytecode cache)", "warm (bytecode cached)"):
            start = time.perf_counter()
            registry = load_functions(base_dir=base, folders=None)
            loaded = time.perf_counter() - start
            start = time.perf_counter()
            registry.list_body()
            first_list = time.perf_counter() - start
            start = time.perf_counter()
            registry.list_body()
            again = time.perf_counter() - start
            assert len(registry) == files * per_file, (len(registry), registry.warnings[:3])
            print(
                f"discovery {label}: {files} files, {len(registry)} functions: "
                f"load {loaded * 1000:.0f} ms, first list (builds schemas) "
                f"{first_list * 1000:.0f} ms, later lists {again * 1000:.1f} ms"
            )


def add(a: int, b: int) -> int:
    return a + b


def ping() -> str:
    return "pong"


async def aping() -> str:
    return "pong"


def per_call(fn: Callable[[], Any], number: int, repeat: int = 7) -> float:
    """Best-of-``repeat`` seconds per call (the minimum is the least noisy estimate)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def bench_calls(number: int) -> None:
    registry = FunctionRegistry()
    registry.add(add)
    registry.add(ping)
    registry.add(aping)
    context = RequestContext("POST", "/navai/functions/execute", {}, "127.0.0.1")
    add_body = {"function_name": "add", "payload": {"a": 1, "b": 2}}
    ping_body = {"function_name": "ping", "payload": {}}
    execute(prepare_call(registry, add_body, context))  # build the schema once

    direct_add = per_call(lambda: add(1, 2), number)
    full_add = per_call(lambda: execute(prepare_call(registry, add_body, context)), number)
    prepare_add = per_call(lambda: prepare_call(registry, add_body, context), number)
    direct_ping = per_call(ping, number)
    full_ping = per_call(lambda: execute(prepare_call(registry, ping_body, context)), number)
    rows = [
        ("add(a: int, b: int), keywords", direct_add, full_add),
        ("ping(), no arguments", direct_ping, full_ping),
    ]
    for label, direct, full in rows:
        print(
            f"execute {label}: direct {direct * 1e6:.2f} us, through navai {full * 1e6:.2f} us, "
            f"overhead {(full - direct) * 1e6:.2f} us per call, ratio {full / direct:.0f}x"
        )
    print(f"  of which prepare_call (checks + validation) for add: {prepare_add * 1e6:.2f} us")

    async def direct_async(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await aping()
        return (time.perf_counter() - start) / n

    async def through_navai(n: int, name: str) -> float:
        body = {"function_name": name}
        start = time.perf_counter()
        for _ in range(n):
            await aexecute(prepare_call(registry, body, context))
        return (time.perf_counter() - start) / n

    direct = min(asyncio.run(direct_async(number)) for _ in range(5))
    full = min(asyncio.run(through_navai(number, "aping")) for _ in range(5))
    print(
        f"aexecute async ping(): direct await {direct * 1e6:.2f} us, through navai "
        f"{full * 1e6:.2f} us, overhead {(full - direct) * 1e6:.2f} us per call"
    )
    thread_hop = min(asyncio.run(through_navai(2000, "ping")) for _ in range(5))
    print(
        f"aexecute sync ping() from async code (one hop to a worker thread): "
        f"{thread_hop * 1e6:.0f} us"
    )
    aping_body = {"function_name": "aping"}
    hop = per_call(lambda: execute(prepare_call(registry, aping_body, context)), 500, 5)
    print(
        f"execute async ping() from sync code (one hop to the background loop): {hop * 1e6:.0f} us"
    )
    registry.concurrency().close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--per-file", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    options = parser.parse_args()
    print(
        f"# {datetime.date.today()} Python {platform.python_version()} on "
        f"{platform.system()} {platform.machine()} ({platform.processor() or 'unknown cpu'})"
    )
    bench_discovery(options.files, options.per_file)
    bench_calls(options.calls)


if __name__ == "__main__":
    main()
