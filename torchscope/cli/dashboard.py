"""`torchscope dashboard PATH [--host 127.0.0.1] [--port 8050] [--verbose]`: serve the dashboard over PATH.

Prints one line (how many runs, the URL) once the port is bound; request lines only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchscope.analyzers.core.errors import TraceError
from torchscope.dashboard import server
from torchscope.dashboard.server import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["register", "serve_runs"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `dashboard` subcommand."""
    p = subparsers.add_parser("dashboard", help="browse runs, timelines and findings in a local web app")
    p.add_argument("path", help="a run bundle, a trace file, or a folder of runs")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"interface to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--debug", action="store_true",
                   help="Dash debug mode on Flask's development server (never on a shared network)")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request (method, path, status, time)")
    p.add_argument("--no-preload", action="store_true", help="load runs only when opened, not all in the background")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    root = Path(args.path)
    if not root.exists():
        raise TraceError(root, "no such file or folder")
    if not (0 < args.port < 65536):
        raise TraceError(root, f"port must be within 1..65535, got {args.port}")
    from torchscope.dashboard.runs import discover_runs  # Dash loads only when the command runs

    runs = discover_runs(root)
    if not runs:
        raise TraceError(root, "no trace files or run bundles found")
    title = f"torchscope dashboard: {len(runs)} run(s) under {root.resolve()}"
    return serve_runs(root, args.host, args.port, title=title, verbose=args.verbose, debug=args.debug,
                      preload=not args.no_preload)


def serve_runs(root: Path, host: str, port: int, **options: object) -> int:
    """Serve the dashboard over ``root`` until stopped; the exit code (2 when it cannot listen there).

    Shared by `dashboard` and `demo`: the warning for a non-local host, the one-line error for a taken
    port or a foreign address, and the exit without interpreter teardown while a load is still running.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"torchscope: warning: serving on {host}: anyone who can reach it can read these runs\n")
    try:
        stopped = server.serve(root, host=host, port=port, **options)
    except OSError as exc:  # the port is taken, or the host is not an address of this machine
        sys.stderr.write(f"torchscope: error: --host {host} --port {port}: "
                         f"cannot listen there ({exc.strerror or exc})\n")
        return 2
    if stopped is False:  # the loader is still inside a load: leave without the interpreter's teardown
        server.exit_now(0)
    return 0
