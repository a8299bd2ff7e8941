"""`torchscope demo`: profile a small real workload here, analyze it, and serve the dashboard.

The recording half needs torch (the `record` extra); it is imported only when the command runs,
so the analysis side still imports without torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.report.text import render_text

__all__ = ["register"]

DEFAULT_RUNS_DIR = "runs"


def _run(args: argparse.Namespace) -> int:
    if not args.no_serve and not (0 < args.port < 65536):  # before minutes of recording, not after
        sys.stderr.write(f"torchscope: error: --port must be within 1..65535, got {args.port}\n")
        return 2
    try:
        from torchscope.profiler.demo import record_demo
    except ImportError as exc:
        sys.stderr.write(f"torchscope demo: recording needs torch (pip install -e '.[record]'): {exc}\n")
        return 2
    root = Path(args.runs_dir).resolve()
    run_dir = root / time.strftime("demo-%Y%m%d-%H%M%S")
    print(f"recording a small GPT training run on this machine into {run_dir} ...", flush=True)
    started = time.perf_counter()
    record_demo(run_dir)
    print(f"recorded in {time.perf_counter() - started:.1f} s; analyzing ...", flush=True)
    traces, report = analyze_path(str(run_dir))
    sys.stdout.write(render_text(traces, report))
    sys.stdout.flush()
    if args.no_serve:
        return 0
    from torchscope.cli.dashboard import serve_runs  # Dash loads only when serving

    return serve_runs(root, args.host, args.port, verbose=args.verbose, title=f"torchscope dashboard over {root}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    p = subparsers.add_parser("demo", help="profile a small real CPU workload, analyze it, serve the dashboard")
    p.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="where the run folder goes (default: ./runs)")
    p.add_argument("--host", default="127.0.0.1", help="address the dashboard binds to (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--no-serve", action="store_true", help="record and analyze, but do not start the dashboard")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request the dashboard serves")
    p.set_defaults(func=_run)
