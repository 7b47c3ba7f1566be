"""navai's HTTP benchmark: ``navai serve`` against a bare ceiling on the same server and
against the Node backend, in one run.

    .venv/bin/python benchmarks/run.py            # full run (about 4 minutes)
    .venv/bin/python benchmarks/run.py --smoke    # a few seconds: checks, not figures

Everything binds 127.0.0.1 and every process it starts is bounded in time. It starts:

- a fake OpenAI upstream (``fake_openai.py``) with a fixed added latency (0, 20 or 50 ms)
  that counts the TCP connections it sees;
- four Python servers: ``navai serve`` and a bare Starlette app on the same uvicorn set-up,
  ``navai serve --wsgi`` and a bare Werkzeug app on the same waitress set-up (one process
  each; see ``apps.py`` and ``serve_bare.py``);
- the Node backend ``@navai/voice-backend`` on Express (``node/``: installed from npm into
  a cache folder, JavaScript twins of the functions, its ``fetch`` redirected to the fake
  upstream), when ``node`` and ``npm`` are there; without them it says so and goes on;
- a load generator: ``wrk`` (installed with apt-get when missing and allowed) or the asyncio
  one in ``loadgen.py``.

On a machine with two cores or more, the servers run on core 0 and the load generator and
the fake upstream on core 1, and the table shows each side's CPU use so that one can see
the server, not the load generator, was the limit. It prints one Markdown table (also
written as JSON with ``--json``) with, for each route and each server, navai's and the
ceiling's requests/s, p50/p99 latency, peak RSS, their ratio, and the upstream connections.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import apps  # noqa: E402

PYTHON = sys.executable
PROFILER = str(Path(sys.executable).with_name("py-spy"))
HOST = "127.0.0.1"
API_KEY = "sk-bench-not-a-real-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets (checked in the table, never asserted by the smoke test).
TARGET_RATIO = 0.85  # navai / the bare ceiling of the same server
TARGET_ADDED_P50_MS = 1.0
TARGET_NODE = {"asgi": 1.0, "wsgi": 0.8}  # navai / the Node backend, on the NODE_ROUTES
NODE_ROUTES = ("cs_c32_20", "exec_sync", "list")
STACKS = {"asgi": "navai serve", "wsgi": "navai serve --wsgi"}
NODE_DIR = HERE / "node"


@dataclass(frozen=True)
class Scenario:
    key: str
    route: str
    method: str
    path: str
    body: str
    concurrency: int
    upstream_ms: int = 0

    @property
    def label(self) -> str:
        up = f", upstream {self.upstream_ms} ms" if self.route == "client-secret" else ""
        return f"{self.route} (c={self.concurrency}{up})"


def scenarios() -> list[Scenario]:
    cs = ("client-secret", "POST", apps.CLIENT_SECRET, "{}")
    add = json.dumps({"function_name": "add", "payload": {"a": 1, "b": 2}})
    aping = json.dumps({"function_name": "aping", "payload": {}})
    return [
        Scenario("cs_c1_0", *cs, concurrency=1, upstream_ms=0),
        Scenario("cs_c32_0", *cs, concurrency=32, upstream_ms=0),
        Scenario("cs_c32_20", *cs, concurrency=32, upstream_ms=20),
        Scenario("cs_c64_50", *cs, concurrency=64, upstream_ms=50),
        Scenario("exec_sync", "execute sync add", "POST", apps.EXECUTE, add, 32),
        Scenario("exec_async", "execute async", "POST", apps.EXECUTE, aping, 32),
        Scenario("list", "list functions", "GET", apps.FUNCTIONS, "", 32),
    ]


@dataclass
class Measure:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    peak_rss_mb: float
    server_cpu: float  # share of one core used by the server's worker process
    loadgen_cpu: float  # share of one core used by the load generator
    upstream: dict[str, int] = field(default_factory=dict)


@dataclass
class Row:
    scenario: Scenario
    stack: str  # "asgi" or "wsgi"
    navai: Measure
    bare: Measure
    node: Measure | None = None

    @property
    def ratio(self) -> float:
        return self.navai.rps / self.bare.rps if self.bare.rps else float("nan")

    @property
    def node_ratio(self) -> float:
        return self.navai.rps / self.node.rps if self.node and self.node.rps else float("nan")

    @property
    def added_p50_ms(self) -> float:
        return self.navai.p50_ms - self.bare.p50_ms

    def target(self) -> tuple[str, bool | None]:
        """The target of this row and whether the run met it (None: no target)."""
        s = self.scenario
        goals: list[tuple[str, bool]] = []
        if s.key in NODE_ROUTES and self.node is not None:
            want = TARGET_NODE[self.stack]
            ok = self.node_ratio >= want
            if self.stack == "asgi":
                ok = ok and self.navai.p99_ms <= self.node.p99_ms
                goals.append((f"≥ {want:g}x Node, p99 ≤ Node's", ok))
            else:
                goals.append((f"≥ {want:g}x Node", ok))
        if s.route != "client-secret":
            goals.append((f"≥ {TARGET_RATIO}x ceiling", self.ratio >= TARGET_RATIO))
        elif s.concurrency == 1 and s.upstream_ms == 0:
            ok = self.added_p50_ms <= TARGET_ADDED_P50_MS
            goals.append((f"+p50 ≤ {TARGET_ADDED_P50_MS:g} ms", ok))
        elif s.concurrency == 64 and s.upstream_ms == 50:
            ok = self.ratio >= TARGET_RATIO and self.navai.upstream.get("used", 0) <= 1.1 * 64
            goals.append((f"≥ {TARGET_RATIO}x ceiling, conns ≈ c", ok))
        if not goals:
            return "-", None
        return "; ".join(g for g, _ in goals), all(ok for _, ok in goals)


# ----- processes ---------------------------------------------------------------------------


def cpus() -> tuple[set[int], set[int]]:
    """(server cores, load generator cores): split when there are at least two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, set(available[1:])


def pinned(cores: set[int]) -> Any:
    def preexec() -> None:
        os.setpgrp()  # our own process group: stopped as one, never by name
        os.sched_setaffinity(0, cores)

    return preexec


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Procs:
    """Every process this run started; all stopped (by process group) on exit."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], cores: set[int], budget: float, **kw: Any) -> Any:
        # `timeout` bounds each process even if this driver dies without cleaning up.
        argv = ["timeout", "-k", "5", str(int(budget)), *argv]
        kw.setdefault("cwd", ROOT)
        proc = subprocess.Popen(argv, preexec_fn=pinned(cores), **kw)
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.started:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def worker_pid(pid: int) -> int:
    """The process that serves: the deepest descendant (timeout → gunicorn → worker)."""
    while kids := children(pid):
        pid = kids[-1]
    return pid


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def reset_peak_rss(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def http(method: str, port: int, path: str, body: str = "") -> tuple[int, bytes, str]:
    import httpx2

    with httpx2.Client(base_url=f"http://{HOST}:{port}", timeout=10) as client:
        headers = {"Content-Type": "application/json"} if body else {}
        r = client.request(method, path, content=body or None, headers=headers)
        return r.status_code, r.content, r.headers.get("content-type", "")


def wait_ready(proc: Any, port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it was ready")
        with contextlib.suppress(Exception):
            if http("GET", port, apps.FUNCTIONS)[0] == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer within {timeout:.0f} s")


# ----- load generators -----------------------------------------------------------------------


class WrkLoad:
    name = "wrk"

    def __init__(self, wrk: str, cores: set[int], tmp: Path) -> None:
        self.wrk, self.cores, self.tmp = wrk, cores, tmp

    def run(self, port: int, s: Scenario, duration: float) -> dict[str, Any]:
        script = self.tmp / f"{s.key}.lua"
        script.write_text(
            f"wrk.method = {json.dumps(s.method)}\n"
            f"wrk.body = {json.dumps(s.body)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        seconds = max(1, round(duration))
        argv = [self.wrk, "-t1", f"-c{s.concurrency}", f"-d{seconds}s", "--latency"]
        argv += ["--timeout", "10s", "-s", str(script), f"http://{HOST}:{port}{s.path}"]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, preexec_fn=pinned(self.cores)
        )
        _, status, usage = os.wait4(proc.pid, 0)
        out = proc.stdout.read() if proc.stdout else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"wrk failed ({proc.returncode}):\n{out}")
        return parse_wrk(out, usage.ru_utime + usage.ru_stime)


def parse_wrk(out: str, cpu: float) -> dict[str, Any]:
    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if not total or len(latency) != 2:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    seconds = float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[total.group(3)]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return {
        "requests": int(total.group(1)),
        "errors": errors,
        "seconds": seconds,
        "rps": int(total.group(1)) / seconds,
        "p50_ms": ms(latency["50"]),
        "p99_ms": ms(latency["99"]),
        "cpu_seconds": cpu,
    }


class PythonLoad:
    name = "asyncio (loadgen.py)"

    def __init__(self, procs: Procs, cores: set[int], budget: float) -> None:
        self.proc = procs.start(
            [PYTHON, str(HERE / "loadgen.py"), "--max-seconds", str(int(budget))],
            cores,
            budget,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, port: int, s: Scenario, duration: float) -> dict[str, Any]:
        job = {
            "host": HOST,
            "port": port,
            "method": s.method,
            "path": s.path,
            "body": s.body,
            "headers": {"Content-Type": "application/json"} if s.body else {},
            "concurrency": s.concurrency,
            "duration": duration,
        }
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the load generator stopped")
        return dict(json.loads(line))


def find_wrk(install: bool) -> str | None:
    wrk = shutil.which("wrk")
    if wrk or not install:
        return wrk
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print("benchmark: wrk is missing; installing it with apt-get", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError):
            return None
    return shutil.which("wrk")


# ----- the run -------------------------------------------------------------------------------


@dataclass
class Server:
    stack: str  # "asgi", "wsgi" or "node"
    app: str  # "navai", "bare" or "node"
    port: int
    proc: Any

    @property
    def worker(self) -> int:
        return worker_pid(self.proc.pid)


def start_servers(
    procs: Procs,
    cores: set[int],
    env: dict[str, str],
    threads: int,
    budget: float,
    workdir: Path,
    node: Path | None,
    navai_env: dict[str, str],
) -> list[Server]:
    servers = []
    for stack in ("asgi", "wsgi"):
        wsgi = ["--wsgi", "--threads", str(threads)] if stack == "wsgi" else []
        port = free_port()
        # `navai serve` as a user runs it (from an empty folder: no .env).
        argv = [PYTHON, "-m", "navai_adapters", "serve", "--port", str(port)]
        argv += wsgi[:1] if "PYTHONPATH" in navai_env else wsgi
        proc = procs.start(
            argv, cores, budget, env={**env, **navai_env}, cwd=workdir, stdout=subprocess.DEVNULL
        )
        servers.append(Server(stack, "navai", port, proc))
        port = free_port()
        argv = [PYTHON, str(HERE / "serve_bare.py"), "--port", str(port), *wsgi]
        servers.append(Server(stack, "bare", port, procs.start(argv, cores, budget, env=env)))
    if node is not None:
        port = free_port()
        node_env = {**env, "PORT": str(port), "NAVAI_FUNCTIONS_BASE_DIR": str(node)}
        node_env["BENCH_OPENAI_ORIGIN"] = env["OPENAI_BASE_URL"].removesuffix("/v1")
        argv = ["node", "--import", "./preload.mjs", "server.mjs"]
        proc = procs.start(argv, cores, budget, env=node_env, cwd=node, stdout=subprocess.DEVNULL)
        servers.append(Server("node", "node", port, proc))
    for server in servers:
        wait_ready(server.proc, server.port, f"{server.app} ({server.stack})")
    return servers


def prepare_node(install: bool) -> tuple[Path | None, str]:
    """The folder the Node backend runs from (installed from npm on first use), or None
    and why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node/npm not found"
    spec = (NODE_DIR / "package.json").read_bytes()
    import hashlib

    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = cache_root / "navai-bench" / f"node-{hashlib.sha256(spec).hexdigest()[:12]}"
    for source in sorted(NODE_DIR.rglob("*")):
        if source.is_file():
            target = cache / source.relative_to(NODE_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    if not (cache / "node_modules" / "@navai" / "voice-backend").is_dir():
        if not install:
            return None, f"not installed in {cache} (run without --smoke once to install)"
        print(f"benchmark: installing the Node backend into {cache}", file=sys.stderr)
        argv = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            subprocess.run(argv, cwd=cache, check=True, timeout=300, capture_output=True)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"npm install failed: {exc}"
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    installed = {
        name: json.loads((cache / "node_modules" / name / "package.json").read_text())["version"]
        for name in ("@navai/voice-backend", "express")
    }
    what = ", ".join(f"{name} {v}" for name, v in installed.items())
    return cache, f"Node {version}, {what}"


def check_same_answers(servers: list[Server], upstream_port: int) -> None:
    """Each navai/bare pair answers every scenario with the same status and bytes; the
    Node backend answers the same values (its list has no parameters, its sources differ)."""
    upstream(upstream_port, 0)
    node = [srv for srv in servers if srv.app == "node"]
    for s in scenarios():
        for stack in ("asgi", "wsgi"):
            pair = [srv for srv in servers if srv.stack == stack]
            answers = [http(s.method, srv.port, s.path, s.body) for srv in pair]
            if answers[0] != answers[1] or answers[0][0] != 200:
                raise SystemExit(f"{s.label} on {stack}: navai and bare differ: {answers}")
        if node:
            ours = json.loads(answers[0][1])
            status, body, _ = http(s.method, node[0].port, s.path, s.body)
            theirs = json.loads(body) if status == 200 else {}
            key = {"client-secret": "value", "list functions": "items"}.get(s.route, "result")
            if key == "items":
                ours, theirs = (
                    sorted(i["name"] for i in x.get("items", [])) for x in (ours, theirs)
                )
            else:
                ours, theirs = ours.get(key), theirs.get(key)
            if status != 200 or ours != theirs:
                raise SystemExit(f"{s.label}: navai and Node differ: {ours!r} / {status} {body!r}")


def upstream(port: int, delay_ms: int | None = None) -> dict[str, int]:
    """Reset the fake upstream's counters (and set its latency), or read them."""
    if delay_ms is None:
        return dict(json.loads(http("GET", port, "/__stats")[1]))
    http("POST", port, f"/__reset?delay_ms={delay_ms}")
    return {}


def measure(
    load: Any,
    server: Server,
    s: Scenario,
    up_port: int,
    warmup: float,
    duration: float,
    profile: Path | None = None,
    profile_gil: bool = False,
) -> Measure:
    upstream(up_port, s.upstream_ms)
    load.run(server.port, s, warmup)
    pid = server.worker
    upstream(up_port, s.upstream_ms)
    reset_peak_rss(pid)
    spy = None
    if profile is not None and server.app == "navai":
        out = profile / f"{s.key}-{server.stack}.txt"
        argv = [PROFILER, "record", "-p", str(pid), "-d", str(max(1, int(duration))), "-r", "250"]
        argv += ["--nonblocking", "-f", "raw", "-o", str(out)]
        if profile_gil:
            argv.append("--gil")  # only the thread holding the GIL: where the CPU goes
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    result = load.run(server.port, s, duration)
    cpu1, t1 = cpu_seconds(pid), time.perf_counter()
    if spy is not None:
        spy.wait(30)
    stats = upstream(up_port) if s.route == "client-secret" else {}
    return Measure(
        rps=result["rps"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        requests=result["requests"],
        errors=result["errors"],
        peak_rss_mb=peak_rss_mb(pid),
        server_cpu=(cpu1 - cpu0) / (t1 - t0),
        loadgen_cpu=result["cpu_seconds"] / result["seconds"],
        upstream=stats,
    )


def discovery(files: int, per_file: int, budget: float) -> dict[str, float]:
    """Seconds a new server spends on ``files`` generated modules: discovery (walk, import,
    expose: ``load_functions``) and then the parameter schemas of every function, which
    ``Navai.functions()`` builds at start-up too. In a new process, without and with
    bytecode cache."""
    sys.path.insert(0, str(HERE))
    from bench_functions import write_tree

    code = textwrap.dedent(
        """
        import sys, time, json
        sys.path.insert(0, sys.argv[2])
        from navai_core.functions.discovery import load_functions
        start = time.perf_counter()
        registry = load_functions(base_dir=sys.argv[1], folders=None)
        loaded = time.perf_counter()
        registry.prepare_schemas()
        done = time.perf_counter()
        print(json.dumps({"functions": len(registry), "load": loaded - start,
                          "schemas": done - loaded, "warnings": registry.warnings[:3]}))
        """
    )
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_tree(Path(tmp), files, per_file)
        for label in ("cold", "warm"):
            out = subprocess.run(
                ["timeout", str(int(budget)), PYTHON, "-c", code, tmp, str(ROOT)],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
            data = json.loads(out)
            assert data["functions"] == files * per_file, data
            result[f"{label}_load"] = data["load"]
            result[f"{label}_schemas"] = data["schemas"]
    result["files"] = files
    result["functions"] = files * per_file
    return result


# ----- the table -------------------------------------------------------------------------------


def render(rows: list[Row], disc: dict[str, float]) -> str:
    head = (
        "| route | server | req/s navai | req/s ceiling | navai / ceiling | req/s Node "
        "| navai / Node | p50 navai / ceiling / Node | p99 navai / ceiling / Node "
        "| peak RSS navai / ceiling / Node | upstream conns navai / ceiling (requests) "
        "| CPU server / loadgen | target |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]

    def trio(values: list[float | None], unit: str, fmt: str) -> str:
        return " / ".join("-" if v is None else f"{v:{fmt}}" for v in values) + unit

    for row in rows:
        n, b, o = row.navai, row.bare, row.node
        if row.scenario.route == "client-secret":
            conns = (
                f"{n.upstream.get('used', 0)} / {b.upstream.get('used', 0)} "
                f"({n.upstream.get('requests', 0)})"
            )
        else:
            conns = "-"
        goal, met = row.target()
        mark = "" if met is None else (" ✅" if met else " ❌")
        node_rps = f"{o.rps:,.0f}" if o else "-"
        node_ratio = f"**{row.node_ratio:.2f}**" if o else "-"
        lines.append(
            f"| {row.scenario.label} | {STACKS[row.stack]} | {n.rps:,.0f} | {b.rps:,.0f} "
            f"| **{row.ratio:.2f}** | {node_rps} | {node_ratio} "
            f"| {trio([n.p50_ms, b.p50_ms, o.p50_ms if o else None], ' ms', '.2f')} "
            f"| {trio([n.p99_ms, b.p99_ms, o.p99_ms if o else None], ' ms', '.2f')} "
            f"| {trio([n.peak_rss_mb, b.peak_rss_mb, o.peak_rss_mb if o else None], ' MB', '.0f')} "
            f"| {conns} | {n.server_cpu:.0%} / {n.loadgen_cpu:.0%} | {goal}{mark} |"
        )
    lines.append("")
    lines.append(
        f"discovery of {disc['files']:.0f} modules ({disc['functions']:.0f} functions) in a new "
        f"process: {disc['cold_load']:.2f} s without bytecode cache, {disc['warm_load']:.2f} s "
        f"with (target < 1 s{' ✅' if disc['cold_load'] < 1 else ' ❌'}); then the parameter "
        f"schemas a server builds at start-up: {disc['cold_schemas']:.2f} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="very short run: checks, not figures")
    parser.add_argument("--duration", type=float, help="seconds measured per server and route")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each measure")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default=None,
        help="auto (default): wrk, installed with apt-get if missing, else the asyncio one; "
        "the smoke mode uses the asyncio one",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="--threads of navai serve --wsgi (default: its own)",
    )
    parser.add_argument(
        "--node",
        choices=("auto", "off", "require"),
        default=None,
        help="the Node backend: auto (default; installed from npm into a cache folder when "
        "node and npm are there), off (default of --smoke), require",
    )
    parser.add_argument("--only", default="", help="comma list of scenario keys to run")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record py-spy profiles (raw stacks) of the navai servers into this folder",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (threads waiting on a "
        "lock or a socket otherwise show up as busy under a threaded server)",
    )
    parser.add_argument("--stacks", default="asgi,wsgi", help="navai servers to measure")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    duration = args.duration or (0.4 if args.smoke else 5.0)
    warmup = args.warmup or (0.2 if args.smoke else 1.0)
    loadgen = args.loadgen or ("python" if args.smoke else "auto")
    chosen = [s for s in scenarios() if not args.only or s.key in args.only.split(",")]
    files = 40 if args.smoke else 500
    budget = 120 + len(chosen) * 5 * (duration + warmup + 3)
    node_mode = args.node or ("off" if args.smoke else "auto")
    node_dir, node_note = (None, "off") if node_mode == "off" else prepare_node(install=True)
    if node_dir is None and node_mode == "require":
        raise SystemExit(f"benchmark: the Node backend is required: {node_note}")
    if node_dir is None:
        print(f"benchmark: the Node backend is not measured ({node_note})", flush=True)
    from navai_adapters import _servers

    threads = args.threads or _servers.DEFAULT_THREADS

    server_cores, load_cores = cpus()
    # None of the developer's navai settings may reach the servers under test: only these.
    prefixes = ("NAVAI_", "OPENAI_", "ELEVENLABS_", "AZURE_OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        {
            "OPENAI_API_KEY": API_KEY,
            "NAVAI_RATE_LIMIT_CLIENT_SECRET": "off",  # the benchmark mints thousands per minute
            "NAVAI_FUNCTIONS_BASE_DIR": apps.FUNCTIONS_BASE_DIR,
            "NAVAI_FUNCTIONS_FOLDERS": apps.FUNCTIONS_FOLDERS,
            "NAVAI_RATE_LIMIT_FUNCTIONS": "off",  # and calls functions thousands per second
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    procs = Procs()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            up = procs.start(
                [PYTHON, str(HERE / "fake_openai.py"), "--max-seconds", str(int(budget))],
                load_cores,
                budget,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert up.stdout
            up_port = int(up.stdout.readline().split()[1])
            env["OPENAI_BASE_URL"] = f"http://{HOST}:{up_port}/v1"
            # BENCH_NAVAI_PYTHONPATH: run `navai serve` from another checkout (a "before").
            other = os.environ.get("BENCH_NAVAI_PYTHONPATH")
            navai_env = {"PYTHONPATH": other} if other else {}
            servers = start_servers(
                procs, server_cores, env, threads, budget, Path(tmp), node_dir, navai_env
            )
            check_same_answers(servers, up_port)
            wrk = find_wrk(install=True) if loadgen in ("auto", "wrk") else None
            if loadgen == "wrk" and wrk is None:
                raise SystemExit("wrk is not available")
            load: Any = (
                WrkLoad(wrk, load_cores, Path(tmp))
                if wrk
                else PythonLoad(procs, load_cores, budget)
            )
            print(
                f"# navai HTTP benchmark, {datetime.date.today()}, Python "
                f"{platform.python_version()}, {platform.system()} {platform.machine()}, "
                f"{os.cpu_count()} cores; servers on cores {sorted(server_cores)}, load "
                f"generator ({load.name}) and fake upstream on {sorted(load_cores)}; "
                f"{duration:g} s per measure after {warmup:g} s warm-up; navai serve --wsgi "
                f"--threads {threads}; {node_note}",
                flush=True,
            )
            node = next((srv for srv in servers if srv.app == "node"), None)
            for s in chosen:
                measured = []
                for stack in args.stacks.split(","):
                    pair = {srv.app: srv for srv in servers if srv.stack == stack}
                    navai = measure(
                        load,
                        pair["navai"],
                        s,
                        up_port,
                        warmup,
                        duration,
                        args.profile,
                        args.profile_gil,
                    )
                    bare = measure(load, pair["bare"], s, up_port, warmup, duration)
                    measured.append(Row(s, stack, navai, bare))
                node_measure = measure(load, node, s, up_port, warmup, duration) if node else None
                for row in measured:
                    row.node = node_measure
                    rows.append(row)
                    print(
                        f"  measured {s.label} on {STACKS[row.stack]}: ratio to the ceiling "
                        f"{row.ratio:.2f}, to Node {row.node_ratio:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        procs.stop()
    disc = discovery(files, 5, budget=60)
    print(render(rows, disc), flush=True)
    if args.json:
        data = {
            "date": str(datetime.date.today()),
            "loadgen": loadgen,
            "node": node_note,
            "duration": duration,
            "rows": [
                {
                    "scenario": asdict(r.scenario),
                    "label": r.scenario.label,
                    "stack": r.stack,
                    "navai": asdict(r.navai),
                    "bare": asdict(r.bare),
                    "node": asdict(r.node) if r.node else None,
                    "ratio": r.ratio,
                    "node_ratio": r.node_ratio if r.node else None,
                    "added_p50_ms": r.added_p50_ms,
                    "target_met": r.target()[1],
                }
                for r in rows
            ],
            "discovery": disc,
        }
        args.json.write_text(json.dumps(data, indent=2))
    failed = sum(r.navai.errors + r.bare.errors + (r.node.errors if r.node else 0) for r in rows)
    if failed:
        print(f"benchmark: {failed} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
