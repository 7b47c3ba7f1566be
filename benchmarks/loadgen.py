"""A small closed-loop HTTP/1.1 load generator on asyncio (the fallback when wrk is missing).

    python benchmarks/loadgen.py        # reads one JSON job per line on stdin

Each job ``{"host", "port", "method", "path", "body", "headers", "concurrency", "duration"}``
opens ``concurrency`` keep-alive connections, each sending the request again as soon as the
previous answer arrived, for ``duration`` seconds. The answer is one JSON line on stdout:
``{"requests", "errors", "seconds", "rps", "p50_ms", "p99_ms", "cpu_seconds"}`` (``errors``
counts answers that are not 2xx and failed connections). The process stays up between
jobs, so a run of many short jobs does not pay for interpreter start-ups; it exits on EOF
or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import Any


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def request_bytes(job: dict[str, Any]) -> bytes:
    body = job.get("body", "").encode()
    lines = [
        f"{job['method']} {job['path']} HTTP/1.1",
        f"Host: {job['host']}:{job['port']}",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in job.get("headers", {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connection(
    job: dict[str, Any], raw: bytes, stop: float, latencies: list[float], counts: list[int]
) -> None:
    writer = None
    while time.perf_counter() < stop:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(job["host"], job["port"])
            start = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not 200 <= status < 300:
                counts[0] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            counts[0] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    raw = request_bytes(job)
    latencies: list[float] = []
    counts = [0]
    cpu = time.process_time()
    start = time.perf_counter()
    stop = start + float(job["duration"])
    await asyncio.gather(
        *(_connection(job, raw, stop, latencies, counts) for _ in range(int(job["concurrency"])))
    )
    seconds = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": counts[0],
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_seconds": time.process_time() - cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    # Stop by ourselves even if the driver never closes our stdin.
    timer = threading.Timer(args.max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    for line in sys.stdin:
        if not line.strip():
            continue
        result = asyncio.run(run_job(json.loads(line)))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
