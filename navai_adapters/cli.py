"""``navai serve``: run a navai server for development or a simple deployment.

    navai serve [--host 127.0.0.1] [--port 3000] [--wsgi] [--env-file .env] [--app MOD:ATTR]

The ASGI app runs on uvicorn; with ``--wsgi`` the WSGI app runs on waitress (pure Python,
multi-threaded, production-grade on every OS). ``.env`` in the working directory is loaded
when present (variables already set in the environment win). The port comes from ``--port``,
else ``PORT``, else 3000 (what the navai clients assume); port 0 picks a free port. Ctrl-C
and SIGTERM stop the server gracefully (exit code 0). ``--app module:attr`` serves your own
``Navai`` (with its hooks and code-registered functions) or ``FunctionRegistry`` (or a callable
returning one); the working directory is on the import path, as with uvicorn.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from navai_core import FunctionRegistry, Navai, NavaiConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
HEALTH_PATH = "/health"
OPENAPI_PATH = "/openapi.json"

logger = logging.getLogger("navai")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _serve(parser, args)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the server took over the signals
        _say("navai: stopped.")
        return 0
    except ModuleNotFoundError as exc:
        if exc.name not in _SERVE_EXTRA:
            raise
        _say(f"navai: serve needs the {exc.name} package: pip install 'navai[serve]'", err=True)
        return 1


_SERVE_EXTRA = frozenset({"uvicorn", "waitress", "dotenv", "starlette", "werkzeug"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="navai", description="navai: a Python backend for OpenAI Realtime voice agents."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    serve = commands.add_parser(
        "serve",
        help="run a navai server",
        description="Serve navai's routes (plus GET /health). Configuration comes from the "
        "environment and a .env file; see docs/configuration.md.",
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
    return parser


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    env_file = _load_env_file(parser, args.env_file)
    port = _port(parser, args.port)
    _configure_logging()

    try:
        sock = _listen(args.host, port)
    except OSError as exc:
        _say(f"navai: cannot listen on {args.host}:{port}: {exc}", err=True)
        return 1
    try:
        navai = _navai(parser, args.app)
        url = _url(args.host, sock.getsockname()[1])
        _banner(navai, url, "WSGI on waitress" if args.wsgi else "ASGI on uvicorn", env_file)
        if args.wsgi:
            _run_waitress(navai, sock)
        else:
            _run_uvicorn(navai, sock, args.host)
    finally:
        sock.close()
    _say("navai: stopped.")
    return 0


def _navai(parser: argparse.ArgumentParser, target: str | None) -> Navai:
    """The instance to serve: from ``--app``, else the environment, plus /health and OpenAPI."""
    served: object = None
    if target is not None:
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            parser.error(f"--app must look like module:attribute, got {target!r}")
        sys.path.insert(0, os.getcwd())
        try:
            served = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            parser.error(f"--app {target}: {exc}")
        if callable(served) and not isinstance(served, (Navai, FunctionRegistry)):
            served = served()
    if isinstance(served, Navai):
        c = served.config
        return served.evolve(
            health_path=c.health_path or HEALTH_PATH, openapi_path=c.openapi_path or OPENAPI_PATH
        )
    if served is not None and not isinstance(served, FunctionRegistry):
        parser.error(f"--app {target} is neither a Navai nor a FunctionRegistry")
    config = NavaiConfig.from_env(health_path=HEALTH_PATH, openapi_path=OPENAPI_PATH)
    return Navai(config, functions=served)


# ----- servers ---------------------------------------------------------------------------


def _run_uvicorn(navai: Navai, sock: socket.socket, host: str) -> None:
    import uvicorn

    from .asgi import create_app

    app = create_app(navai)  # the lifespan logs the start-up warnings and closes the clients
    config = uvicorn.Config(
        app, host=host, port=sock.getsockname()[1], lifespan="on", timeout_graceful_shutdown=10
    )
    # uvicorn handles SIGINT/SIGTERM itself, then re-raises the signal once it has shut
    # down: that arrives here as KeyboardInterrupt (see the SIGTERM handler in _serve).
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


def _run_waitress(navai: Navai, sock: socket.socket) -> None:
    from waitress import create_server  # type: ignore[import-untyped]

    from .wsgi import create_app

    app = create_app(navai)  # logs the start-up warnings
    server = create_server(app, sockets=[sock], ident="navai")
    try:
        server.run()  # returns after Ctrl-C/SIGTERM, once the running requests are done
    finally:
        server.close()
        app.close()


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
        try:
            port = int(raw)
        except ValueError:
            parser.error(f"PORT must be a port number, got {raw!r}")
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
