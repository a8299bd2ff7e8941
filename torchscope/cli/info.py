"""`torchscope info PATH`: what a trace or run bundle contains (ranks, devices, events, steps traced of the run).

A run that did not end normally says so first ("incomplete: <reason>"), with the loader's warnings.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from torchscope.analyzers.info import describe
from torchscope.analyzers.io.loader import load_set
from torchscope.analyzers.report.text import status_lines, traced_steps_line

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    traces = load_set(args.path, cache=False if args.no_cache else None)  # None: on unless $TORCHSCOPE_NO_CACHE
    summaries = [describe(t) for t in traces]
    if args.format == "json":
        sys.stdout.write(orjson.dumps({"schema_version": 1, "ranks": summaries}, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    for line in status_lines(traces):  # first: a run that did not end normally, and the loader's warnings
        print(line)
    for s in summaries:
        print(f"rank {s['rank']} of {s['world_size']}  {s['path']}")
        print(f"  device: {s['device'] or 'none recorded'}   span: {s['span_ms']:.1f} ms")
        print(f"  {traced_steps_line(s['steps'], s['steps_run'], s['schedule'])}")
        kinds = ", ".join(f"{k} {v}" for k, v in s["events_by_kind"].items())
        print(f"  events: {s['events']} ({kinds})")
        print(f"  counters: {s['counters']}   flows: {s['flows']}"
              + (f"   streams: {s['streams']}" if s["streams"] else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `info` subcommand."""
    p = subparsers.add_parser("info", help="summarise what a trace, folder of traces or run bundle contains")
    p.add_argument("path", help="trace file (.json/.json.gz), folder of per-rank traces, or run bundle")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--no-cache", action="store_true",
                   help="parse the trace files again; neither read nor write the columnar cache")
    p.set_defaults(func=_run)

