"""`torchscope info PATH`: what a trace or run bundle contains (ranks, devices, events, steps traced of the run).

A run that did not end normally says so first ("incomplete: <reason>"), with the loader's warnings.
Lines are wrapped as ``analyze``'s are (the terminal's width, 100 columns when piped), values in the
units of ``report.units``.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from torchscope.analyzers.info import describe
from torchscope.analyzers.io.loader import load_set
from torchscope.analyzers.report.text import output_width, pack_items, status_lines, traced_steps_line, wrap_line
from torchscope.analyzers.report.units import format_count, format_duration_ns

__all__ = ["register"]

#: describe() gives the span in ms; units formats ns
NS_PER_MS = 1_000_000


def _run(args: argparse.Namespace) -> int:
    traces = load_set(args.path, cache=False if args.no_cache else None)  # None: on unless $TORCHSCOPE_NO_CACHE
    summaries = [describe(t) for t in traces]
    if args.format == "json":
        sys.stdout.write(orjson.dumps({"schema_version": 1, "ranks": summaries}, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    width = output_width()
    out = [line for status in status_lines(traces) for line in wrap_line(status, width, "", "  ")]
    for s in summaries:  # first: a run that did not end normally, and the loader's warnings (above)
        out.extend(wrap_line(f"rank {s['rank']} of {s['world_size']}  {s['path']}", width, "", "  "))
        span_ns = int(round(s["span_ms"] * NS_PER_MS))
        out.extend(pack_items([("device", s["device"] or "none recorded"), ("span", format_duration_ns(span_ns))],
                              width, "  "))
        out.extend(wrap_line(traced_steps_line(s["steps"], s["steps_run"], s["schedule"]), width, "  ", "    "))
        kinds = ", ".join(f"{k} {format_count(v)}" for k, v in s["events_by_kind"].items())
        out.extend(wrap_line(f"events: {format_count(s['events'])} ({kinds})", width, "  ", "    "))
        items = [("counters", format_count(s["counters"])), ("flows", format_count(s["flows"]))]
        if s["streams"]:
            items.append(("streams", ", ".join(f"{k} {format_count(v)} lines" for k, v in s["streams"].items())))
        out.extend(pack_items(items, width, "  "))
    print("\n".join(out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `info` subcommand."""
    p = subparsers.add_parser("info", help="summarise what a trace, folder of traces or run bundle contains")
    p.add_argument("path", help="trace file (.json/.json.gz), folder of per-rank traces, or run bundle")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--no-cache", action="store_true",
                   help="parse the trace files again; neither read nor write the columnar cache")
    p.set_defaults(func=_run)

