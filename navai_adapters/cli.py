"""``navai serve``: run a navai server for development or a simple deployment.

    navai serve [--host 127.0.0.1] [--port 3000] [--wsgi] [--env-file .env] [--app MOD:ATTR]
                [--workers 1] [--threads 64] [--max-connections 1000] [--head-timeout S]
                [--forwarded-allow-ips IPS] [--access-log] [--gc tuned|python] [--reload]

The ASGI app runs on uvicorn (httptools, and uvloop where it is installed); with ``--wsgi``
the WSGI app runs on waitress (pure Python, multi-threaded, production-grade on every OS).
Both are configured by ``_servers`` (connection cap, read deadlines, thread count). ``.env``
in the working directory is loaded when present (variables already set in the environment
win). The port comes from ``--port``, else ``PORT``, else 3000 (what the navai clients
assume); port 0 picks a free port. Ctrl-C and SIGTERM stop the server gracefully (exit
code 0). ``--app module:attr`` serves your own
``Navai`` (with its hooks and code-registered functions) or ``FunctionRegistry`` (or a callable
returning one); the working directory is on the import path, as with uvicorn.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.metadata
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import attrs

from navai_core import FunctionRegistry, Navai, NavaiConfig, SettingProblem, SettingsError
from navai_core._config import environment_variables
from navai_core.calls.registry import CallRegistry

from . import _servers, _workers, calls_report, playground

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
HEALTH_PATH = "/health"
OPENAPI_PATH = "/openapi.json"

logger = logging.getLogger("navai")


#: Where the settings are described, wherever navai is installed from.
DOCS_HINT = (
    "Every setting with its default: navai settings. The full reference is "
    "docs/configuration.md in navai's source (a clone, or the sdist navai-<version>.tar.gz)."
)
#: How to install an extra while navai is not on a public package index.
INSTALL_HINT = (
    "install navai with its {extra} extra from a clone or a built wheel: "
    "pip install './navai[{extra}]' (the folder of the clone) or "
    "pip install './dist/navai-{version}-py3-none-any.whl[{extra}]'"
)
EXIT_CONFIG = 2  # like a command-line error: nothing was served


class _CannotStart(Exception):
    """A reason not to start, said in one line (exit code 2)."""


def version() -> str:
    try:
        return importlib.metadata.version("navai")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "calls":
        return calls_report.run(args)
    if args.command == "settings":
        _say(_settings_table())
        return 0
    try:
        return _serve(parser, args)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the server took over the signals
        _say("navai: stopped.")
        return 0
    except SettingsError as exc:
        _say(f"navai: cannot start: {exc.message}\n{DOCS_HINT}", err=True)
        return EXIT_CONFIG
    except _CannotStart as exc:
        _say(f"navai: {exc}", err=True)
        return EXIT_CONFIG
    except ModuleNotFoundError as exc:
        if exc.name not in _SERVE_EXTRA:
            raise
        hint = INSTALL_HINT.format(extra="serve", version=version())
        _say(f"navai: serve needs the {exc.name} package; {hint}", err=True)
        return 1


_SERVE_EXTRA = frozenset(
    {"uvicorn", "httptools", "uvloop", "waitress", "dotenv", "starlette", "werkzeug"}
)
#: The environment variable that ``--forwarded-allow-ips`` defaults to.
FORWARDED_ENV = "NAVAI_FORWARDED_ALLOW_IPS"
#: The environment variable that ``--gc`` defaults to.
GC_ENV = "NAVAI_SERVE_GC"
GC_MODES = ("tuned", "python")
#: With ``--gc tuned``: new objects the youngest generation holds before it is collected
#: (Python's default is 700). See docs/performance.md, "Server-controlled calls".
GC_YOUNG_THRESHOLD = 10_000


#: The variables ``navai serve --help`` names (all of them: ``navai settings``).
MAIN_VARIABLES = (
    ("OPENAI_API_KEY", "the server's OpenAI key (without it, client secrets answer 401)"),
    ("OPENAI_REALTIME_MODEL", "default Realtime model (gpt-realtime-2.1)"),
    ("OPENAI_REALTIME_VOICE", "default voice (marin)"),
    ("NAVAI_FUNCTIONS_FOLDERS", "where backend functions are found (src/ai/functions-modules)"),
    ("NAVAI_CORS_ORIGIN", "browser origins allowed (default: localhost only)"),
    ("NAVAI_ALLOW_FRONTEND_API_KEY", "let a request bring its own apiKey (false)"),
    ("NAVAI_EXPOSE_FUNCTION_WARNINGS", "false: load errors stay in the log (true)"),
    ("PORT", "port when --port is not given (3000)"),
)


def _serve_epilog() -> str:
    width = max(len(name) for name, _ in MAIN_VARIABLES)
    lines = [f"  {name:<{width}}  {meaning}" for name, meaning in MAIN_VARIABLES]
    return (
        "main environment variables (also read from .env):\n"
        + "\n".join(lines)
        + (f"\n\n{DOCS_HINT}\nA setting that cannot be read stops the server (exit code 2).")
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="navai", description="navai: a Python backend for OpenAI Realtime voice agents."
    )
    parser.add_argument("--version", action="version", version=f"navai {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    commands.add_parser(
        "settings",
        help="list every environment variable navai reads, with its default",
        description="List every environment variable navai reads, with its default.",
    )
    serve = commands.add_parser(
        "serve",
        help="run a navai server",
        description="Serve navai's routes (plus GET /health). Configuration comes from the "
        "environment and a .env file.",
        epilog=_serve_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    serve.add_argument(
        "--port", type=int, default=None, help="port (default: $PORT, else 3000; 0 = any free)"
    )
    serve.add_argument(
        "--wsgi", action="store_true", help="serve the WSGI app on waitress instead of ASGI"
    )
    serve.add_argument(
        "--env-file", type=Path, default=None, help="environment file to load (default: ./.env)"
    )
    serve.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        default=None,
        help="serve this Navai or FunctionRegistry (or a callable returning one)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (default 1; POSIX only). Each has its own "
        "rate-limit counters unless NAVAI_RATE_LIMIT_STORAGE points at Redis",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=_servers.DEFAULT_THREADS,
        help="request threads per worker of the WSGI server (default %(default)s)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=_servers.DEFAULT_MAX_CONNECTIONS,
        help="open connections per worker (default %(default)s); at the cap, idle ones "
        "are closed first",
    )
    serve.add_argument(
        "--head-timeout",
        type=float,
        default=_servers.HEAD_TIMEOUT,
        metavar="SECONDS",
        help="seconds a client has to send a request head (default %(default)g; the body "
        f"then has {_servers.BODY_TIMEOUT:g} s more)",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        default=None,
        help="trust X-Forwarded-For/-Proto from these proxy addresses (comma list, or *); "
        f"default: ${FORWARDED_ENV}, else trust no one",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (uvicorn's access log; not with --wsgi; off by default)",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="restart when a .py or .env file under the working directory changes (development)",
    )
    serve.add_argument(
        "--gc",
        choices=GC_MODES,
        default=None,
        help="tuned: freeze the start-up objects and collect the youngest generation every "
        f"{GC_YOUNG_THRESHOLD:,} new objects (shorter, rarer pauses with many live calls); "
        f"python: Python's own settings (default: ${GC_ENV}, else tuned)",
    )
    serve.add_argument("--inherit-fd", type=int, default=None, help=argparse.SUPPRESS)
    calls_report.add_command(commands)
    return parser


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    for name in ("workers", "threads", "max_connections", "head_timeout"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be above 0")
    if args.workers > 1 and not hasattr(os, "fork"):
        parser.error("--workers above 1 needs a POSIX system (use one process on Windows)")
    if args.reload and args.workers > 1:
        parser.error("--reload runs one worker; drop --workers")
    environ = dict(os.environ)  # before .env: a --reload child reads the file again
    env_file = _load_env_file(parser, args.env_file)
    _check_settings(args)  # (after .env, which may set them)
    port = _port(parser, args.port)
    try:  # the playground page at / (after .env, which may set NAVAI_PLAYGROUND)
        args.playground = playground.enabled(args.host, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    _configure_logging()
    missing = _servers.required_packages(args.wsgi)
    if missing:
        raise ModuleNotFoundError(name=missing[0])

    if args.inherit_fd is not None:  # a child of --reload: the socket is already listening
        sock = socket.socket(fileno=args.inherit_fd)
    else:
        try:
            sock = _listen(args.host, port)
        except OSError as exc:
            _say(f"navai: cannot listen on {args.host}:{port}: {exc}", err=True)
            return 1
    try:
        url = _url(args.host, sock.getsockname()[1])
        if args.reload:
            return _reload(args, sock, environ)
        navai = _navai(parser, args.app)
        limits = _limits(args, navai.config.max_body_bytes)
        _banner(navai, url, _server_name(args), env_file)
        if args.playground:
            _say(f"navai: playground at {url}/ ({playground.ENV}=false turns it off)")
        _warn_exposure(navai, args.host)
        if args.workers > 1:
            return _run_workers(parser, args, sock, limits, navai)
        _run(navai, sock, limits, wsgi=args.wsgi, gc_mode=args.gc, page=args.playground)
    finally:
        sock.close()
    _say("navai: stopped.")
    return 0


def _check_settings(args: argparse.Namespace) -> None:
    """Raise :class:`SettingsError` listing every variable that cannot be read: the
    configuration's and those of ``navai serve`` itself (``PORT``, ``NAVAI_SERVE_GC``)."""
    found: list[SettingProblem] = []
    if args.gc is None:
        args.gc = os.environ.get(GC_ENV, "").strip().lower() or "tuned"
        if args.gc not in GC_MODES:
            found.append(SettingProblem(GC_ENV, os.environ[GC_ENV], " or ".join(GC_MODES)))
    raw_port = (os.environ.get("PORT") or "").strip()
    if args.port is None and raw_port and not (raw_port.isdigit() and int(raw_port) <= 65535):
        found.append(SettingProblem("PORT", raw_port, "a port number (0 to 65535)"))
    try:
        NavaiConfig.from_env()
    except SettingsError as exc:
        found += exc.problems
    if found:
        raise SettingsError(found)


def _settings_table() -> str:
    """Every variable navai reads, with its default (``navai settings``)."""
    fields = attrs.fields_dict(NavaiConfig)
    rows = [
        (variable, _shown(fields[name].default))
        for name, variable in environment_variables().items()
    ]
    rows += [
        ("PORT", str(DEFAULT_PORT)),
        (FORWARDED_ENV, "unset"),
        (GC_ENV, "tuned"),
        (playground.ENV, "on when serving on loopback"),
    ]
    width = max(len(variable) for variable, _ in rows)
    lines = [f"{variable:<{width}}  {default}" for variable, default in rows]
    return "\n".join(
        ["navai reads these environment variables (default on the right):", *lines, "", DOCS_HINT]
    )


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    return str(default).lower() if isinstance(default, bool) else str(default)


def _warn_exposure(navai: Navai, host: str) -> None:
    """Say loudly when the function routes are open to anyone who can reach ``host``."""
    for warning in navai.exposure_warnings(host):
        logger.warning("%s", warning)


def _server_name(args: argparse.Namespace) -> str:
    name = "WSGI on waitress" if args.wsgi else "ASGI on uvicorn"
    return name if args.workers == 1 else f"{name}, {args.workers} workers"


def _limits(args: argparse.Namespace, max_body: int) -> _servers.Limits:
    forwarded = args.forwarded_allow_ips
    if forwarded is None:
        forwarded = os.environ.get(FORWARDED_ENV, "").strip() or None
    return _servers.Limits(
        max_connections=_servers.fit_connections(args.max_connections, _servers.raise_file_limit()),
        threads=args.threads,
        head_timeout=args.head_timeout,
        max_body_bytes=max_body,
        forwarded_allow_ips=forwarded,
        access_log=args.access_log,
    )


def _run(
    navai: Navai,
    sock: socket.socket,
    limits: _servers.Limits,
    *,
    wsgi: bool,
    gc_mode: str = "tuned",
    page: bool = False,
) -> None:
    if wsgi:
        from .wsgi import create_app as create_wsgi_app

        wsgi_app = create_wsgi_app(navai)  # logs the start-up warnings
        _servers.keep_request_threads(navai.concurrency.functions, limits.threads)
        served = playground.wsgi(wsgi_app, navai) if page else wsgi_app
        _tune_gc(gc_mode)
        _servers.run_wsgi(served, sock, limits, wsgi_app.close)
    else:
        from .asgi import create_app as create_asgi_app

        # The lifespan logs the start-up warnings and closes the clients.
        app = create_asgi_app(navai)
        _tune_gc(gc_mode)
        _servers.run_asgi(playground.asgi(app, navai) if page else app, sock, limits)


def _tune_gc(mode: str) -> None:
    """With ``tuned``, set the garbage collector up for a long-running server, once the
    modules and the app are loaded (just before serving).

    Python's full collections stop the whole process for a time proportional to every
    object it tracks: with a thousand live calls, some 130 ms on a slow core, a pause every
    call's function calls wait through. Two changes shorten and thin them out:

    - ``gc.freeze()`` moves the start-up objects (imported modules, classes, the app: some
      60,000) out of the collector's sight for good; they are never garbage, and objects
      freed by reference counting are still freed. It happens once, so it cannot grow.
    - the youngest generation is collected every ``GC_YOUNG_THRESHOLD`` new objects instead
      of 700: objects that live about a second (a call's wait for its next event) die before
      they are promoted, so the older generations fill, and are fully collected, less often.
      Cyclic garbage waits at most that many allocations longer to be freed.

    ``python`` leaves Python's settings as they are.
    """
    if mode != "tuned":
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _run_workers(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    sock: socket.socket,
    limits: _servers.Limits,
    navai: Navai,
) -> int:
    """Fork ``--workers`` processes that accept on the same socket and keep them: a dead one
    is restarted and its calls hung up (see ``_workers``); stop them together."""

    def serve(held: CallRegistry) -> None:  # in a worker, after fork: its own Navai
        worker = _navai(parser, args.app)
        worker.calls.held_calls = held  # where the supervisor finds its calls if it dies
        _run(worker, sock, limits, wsgi=args.wsgi, gc_mode=args.gc, page=args.playground)

    code = _workers.Supervisor(args.workers, serve, navai).run()
    _say("navai: stopped.")
    return code


# ----- --reload ---------------------------------------------------------------------------------

_RELOAD_SKIP = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache"})


def _reload(args: argparse.Namespace, sock: socket.socket, environ: dict[str, str]) -> int:
    """Run ``navai serve`` (without --reload) in a child on the same listening socket, and
    restart it whenever a ``.py`` or ``.env`` file under the working directory changes."""
    argv = [a for a in sys.argv[1:] if a != "--reload"] if sys.argv[1:2] == ["serve"] else None
    if argv is None:  # called as main([...]): rebuild the command from the options
        argv = ["serve", "--host", args.host]
        argv += ["--wsgi"] if args.wsgi else []
        argv += ["--app", args.app] if args.app else []
        argv += ["--env-file", str(args.env_file)] if args.env_file else []
    argv = [sys.executable, "-m", "navai_adapters", *argv, "--inherit-fd", str(sock.fileno())]
    root = Path.cwd()
    _say(f"navai: reloading on changes under {root} (development only)")
    snapshot = _snapshot(root)
    child = subprocess.Popen(argv, pass_fds=(sock.fileno(),), env=environ)
    try:
        while True:
            time.sleep(0.3)
            now = _snapshot(root)
            if now != snapshot:
                changed = sorted(set(now.items()) ^ set(snapshot.items()))
                snapshot = now
                _say(f"navai: {changed[0][0]} changed, restarting")
                _stop_child(child)
                child = subprocess.Popen(argv, pass_fds=(sock.fileno(),), env=environ)
            elif child.poll() is not None and child.returncode != 0:
                time.sleep(0.5)  # it failed (a syntax error?): wait for the next change
    except KeyboardInterrupt:
        _stop_child(child)
    return 0


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _snapshot(root: Path) -> dict[str, float]:
    return {str(path): mtime for path, mtime in _watched(root)}


def _watched(root: Path) -> Iterator[tuple[Path, float]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _RELOAD_SKIP and not d.startswith(".")]
        for name in filenames:
            if name.endswith(".py") or name == ".env" or name.endswith(".env"):
                path = Path(dirpath, name)
                with contextlib.suppress(OSError):
                    yield path, path.stat().st_mtime


def _navai(parser: argparse.ArgumentParser, target: str | None) -> Navai:
    """The instance to serve: from ``--app``, else the environment, plus /health and OpenAPI."""
    served = None if target is None else _app(target)
    if isinstance(served, Navai):
        c = served.config
        return served.evolve(
            health_path=c.health_path or HEALTH_PATH, openapi_path=c.openapi_path or OPENAPI_PATH
        )
    config = NavaiConfig.from_env(health_path=HEALTH_PATH, openapi_path=OPENAPI_PATH)
    return Navai(config, functions=served)


_APP_KINDS = "a Navai or a FunctionRegistry (or a function returning one)"


def _app(target: str) -> Navai | FunctionRegistry:
    """What ``--app module:attr`` names, or a one-line reason it cannot be served."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        _refuse(f"--app must look like module:attribute, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        served = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        _refuse(f"--app {target}: {exc}")
    if isinstance(served, (Navai, FunctionRegistry)):
        return served
    if inspect.isroutine(served):
        try:
            inspect.signature(served).bind()
        except TypeError:
            _refuse(
                f"--app {target} is a function that needs arguments; navai serve calls it "
                f"with none and serves what it returns: {_APP_KINDS}."
            )
        except ValueError:  # no signature to read (a builtin): just call it
            pass
        made = served()
        if isinstance(made, (Navai, FunctionRegistry)):
            return made
        _refuse(f"--app {target} returned {_kind(made)}; navai serve serves {_APP_KINDS}.")
    _refuse(
        f"--app {target} is {_kind(served)}; navai serve serves {_APP_KINDS}."
        + _app_hint(target, served)
    )


def _kind(value: object) -> str:
    if value is None:
        return "None"
    kind = type(value)
    module = kind.__module__.split(".")[0]
    article = "an" if kind.__name__[:1].lower() in "aeiou" else "a"
    origin = f" (from {module})" if module not in ("builtins", "__main__") else ""
    return f"{article} {kind.__name__} object{origin}"


def _app_hint(target: str, served: object) -> str:
    """For a web application: the command that serves it, and what to point --app at."""
    module = type(served).__module__.split(".")[0]
    if module in ("fastapi", "starlette", "django", "flask") or callable(served):
        server = "waitress-serve" if module in ("flask", "django") else "uvicorn"
        return (
            f" To serve this application run {server} {target}; or point --app at the "
            "Navai it mounts."
        )
    return ""


def _refuse(message: str) -> NoReturn:
    raise _CannotStart(message)


# ----- helpers -------------------------------------------------------------------------------


def _load_env_file(parser: argparse.ArgumentParser, path: Path | None) -> Path | None:
    if path is None:
        path = Path(".env")
        if not path.is_file():
            return None
    elif not path.is_file():
        parser.error(f"--env-file {path}: no such file")
    from dotenv import dotenv_values

    for name, value in dotenv_values(path).items():
        # The environment wins, but a blank variable counts as unset (like everywhere else).
        if value is not None and not os.environ.get(name, "").strip():
            os.environ[name] = value
    return path


def _port(parser: argparse.ArgumentParser, port: int | None) -> int:
    if port is None:
        raw = (os.environ.get("PORT") or "").strip()
        if not raw:
            return DEFAULT_PORT
        port = int(raw)  # checked by _check_settings
    if not 0 <= port <= 65535:
        parser.error(f"port must be between 0 and 65535, got {port}")
    return port


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _configure_logging() -> None:
    if any(getattr(h, "navai_cli", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.navai_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _banner(navai: Navai, url: str, server: str, env_file: Path | None) -> None:
    lines = [f"navai: serving on {url} ({server})"]
    lines.append(f"navai: Realtime model {navai.config.model}, voice {navai.config.voice}")
    if env_file is not None:
        lines.append(f"navai: loaded environment from {env_file}")
    width = max(len(", ".join(r.methods)) for r in navai.routes)
    lines += [f"  {', '.join(r.methods):<{width}}  {url}{r.path}" for r in navai.routes]
    if navai.config.functions_enabled:
        items = navai.functions().entries()
        lines.append(f"navai: {len(items)} backend function(s)" + (":" if items else "."))
        lines += [f"  {entry.name}  ({entry.source})" for entry in items]
    else:
        lines.append("navai: the function routes are off (NAVAI_FUNCTIONS_ENABLED=false).")
    lines.append("navai: press Ctrl-C to stop.")
    _say("\n".join(lines))


def _say(text: str, *, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
