"""Serve a bare ceiling app (``apps.py``) on exactly the server ``navai serve`` runs.

    python benchmarks/serve_bare.py --port 8001 [--wsgi]

The same uvicorn or waitress configuration as ``navai serve`` (``navai_adapters._servers``:
protocol class, loop, connection cap, read deadlines, threads), so that the ratio
navai / ceiling measures navai's own work and not a difference of servers.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import apps  # noqa: E402

from navai_adapters import _servers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wsgi", action="store_true")
    parser.add_argument("--threads", type=int, default=_servers.DEFAULT_THREADS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    limits = _servers.Limits(
        max_connections=_servers.fit_connections(
            _servers.DEFAULT_MAX_CONNECTIONS, _servers.raise_file_limit()
        ),
        threads=args.threads,
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    try:
        if args.wsgi:
            _servers.run_wsgi(apps.bare_wsgi(), sock, limits, lambda: None)
        else:
            _servers.run_asgi(apps.bare_asgi(), sock, limits)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
