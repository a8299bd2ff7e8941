"""`torchscope info PATH`: what a trace or run bundle contains (ranks, devices, events, steps)."""

from __future__ import annotations

import argparse
import sys

import orjson

from .loader import load_set
from .trace import Trace

__all__ = ["describe", "register"]


def describe(trace: Trace) -> dict:
    """Plain-JSON summary of one rank: source, device, span, event counts by kind, steps, streams."""
    start_ns, end_ns = trace.span_ns
    kinds = trace.events["kind"].value_counts()
    return {
        "path": trace.meta.path,
        "rank": trace.rank,
        "world_size": trace.meta.world_size,
        "device": trace.meta.device_name,
        "events": int(len(trace.events)),
        "events_by_kind": {str(k): int(v) for k, v in kinds.items() if v},
        "steps": int(len(trace.steps())),
        "span_ms": round((end_ns - start_ns) / 1e6, 3),
        "counters": int(len(trace.counters)),
        "flows": int(len(trace.flows)),
        "streams": {name: int(len(frame)) for name, frame in trace.streams.items()},
        "dropped_events": trace.meta.dropped_events,
        "warnings": list(trace.meta.warnings),
    }


def _run(args: argparse.Namespace) -> int:
    traces = load_set(args.path)
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
    p.set_defaults(func=_run)
