"""`torchscope export PATH -o OUT.json.gz`: an annotated trace with a findings track, for Perfetto."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.registry import run_all
from torchscope.analyzers.io.export import write_annotated_trace
from torchscope.analyzers.io.loader import load

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `torchscope export PATH -o OUT.json.gz`."""
    p = subparsers.add_parser("export", help="write an annotated trace (with findings) that opens in Perfetto")
    p.add_argument("path", help="trace file, folder of per-rank traces, or run bundle")
    p.add_argument("-o", "--output", required=True, help="output file (.json or .json.gz)")
    p.add_argument("--no-findings", action="store_true", help="do not run the analyzers; export events only")
    p.add_argument("--no-cache", action="store_true",
                   help="parse the trace files again; neither read nor write the columnar cache")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    src, out = Path(args.path), Path(args.output)
    if not out.name.endswith((".json", ".json.gz")):
        raise TraceError(out, "output must end in .json or .json.gz")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise TraceError(out, "output would overwrite the input")
    if not out.parent.is_dir():
        raise TraceError(out, "output folder does not exist")
    data = load(src, cache=False if args.no_cache else None)  # None: on unless $TORCHSCOPE_NO_CACHE
    report = None if args.no_findings else run_all(data)
    write_annotated_trace(data, report, out)
    n = len(report.findings) if report is not None else 0
    print(f"wrote {out} ({n} findings); open it at https://ui.perfetto.dev")
    return 0

