"""`torchscope info PATH`: what a trace or run bundle contains (ranks, devices, events, steps)."""

from __future__ import annotations

import argparse
import sys

import orjson

from torchscope.analyzers.info import describe
from torchscope.analyzers.io.loader import load_set

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    traces = load_set(args.path, cache=False if args.no_cache else None)  # None: on unless $TORCHSCOPE_NO_CACHE
    summaries = [describe(t) for t in traces]
    if args.format == "json":
        sys.stdout.write(orjson.dumps({"schema_version": 1, "ranks": summaries}, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    for s in summaries:
        print(f"rank {s['rank']} of {s['world_size']}  {s['path']}")
        print(f"  device: {s['device'] or 'none recorded'}   span: {s['span_ms']:.1f} ms   steps: {s['steps']}")
        kinds = ", ".join(f"{k} {v}" for k, v in s["events_by_kind"].items())
        print(f"  events: {s['events']} ({kinds})")
        print(f"  counters: {s['counters']}   flows: {s['flows']}"
              + (f"   streams: {s['streams']}" if s["streams"] else ""))
        for w in s["warnings"]:
            print(f"  warning: {w}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `info` subcommand."""
    p = subparsers.add_parser("info", help="summarise what a trace, folder of traces or run bundle contains")
    p.add_argument("path", help="trace file (.json/.json.gz), folder of per-rank traces, or run bundle")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--no-cache", action="store_true",
                   help="parse the trace files again; neither read nor write the columnar cache")
    p.set_defaults(func=_run)

