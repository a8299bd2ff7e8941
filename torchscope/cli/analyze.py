"""`torchscope analyze PATH`: run every analyzer, print a summary and the findings ranked by gain.

Formats: ``text`` (a terminal), ``markdown`` (a PR comment or a wiki page) and ``json`` (machine
readable, with ``schema_version``); the renderers live in ``analyzers/report/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.report.json_report import render_json
from torchscope.analyzers.report.markdown import render_markdown
from torchscope.analyzers.report.text import render_text

__all__ = ["register"]


class _Progress:
    """One self-overwriting status line on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.t0 = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.enabled:
            self.stream.write(f"\r\033[Kanalyzing: {name} ({time.perf_counter() - self.t0:.1f} s)")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _run(args: argparse.Namespace) -> int:
    progress = _Progress(sys.stderr)
    progress("loading")
    try:
        traces, report = analyze_path(args.path, rank=args.rank, hta_compatible=args.hta_compatible,
                                      progress=progress, cache=False if args.no_cache else None)
    finally:
        progress.done()
    render = {"text": render_text, "markdown": render_markdown, "json": render_json}[args.format]
    sys.stdout.write(render(traces, report))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `analyze` subcommand."""
    p = subparsers.add_parser("analyze", help="run every analyzer; print a summary and findings ranked by gain")
    p.add_argument("path", help="trace file (.json/.json.gz), folder of per-rank traces, or run bundle")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.add_argument("--rank", type=int, default=None, help="analyze only this rank")
    p.add_argument("--hta-compatible", action="store_true",
                   help="GPU time by Holistic Trace Analysis's definitions (temporal breakdown, idle per stream)")
    p.add_argument("--no-cache", action="store_true",
                   help="parse the trace files again; neither read nor write the columnar cache")
    p.set_defaults(func=_run)

