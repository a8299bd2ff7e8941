"""`torchscope analyze PATH`: run every analyzer, print a summary and the findings ranked by gain.

Formats: ``text`` (a terminal), ``markdown`` (a PR comment or a wiki page) and ``json`` (machine
readable, with ``schema_version``); the renderers live in ``analyzers/report/``.

A job of several ranks (a bundle, a folder of per-rank traces) goes through
``torchscope.analyzers.jobs.analyze_job``: one task per rank (local processes, ``--scheduler
tcp://HOST:PORT`` or ``$TORCHSCOPE_SCHEDULER`` for a Dask cluster, ``--scheduler inline``), one
progress bar across ranks on stderr when it is a terminal. A rank that fails is named with its reason
on stderr and in the report ("failed ranks"; ``failed_ranks`` in JSON), the others are analyzed, and
the exit code is 2 unless ``--partial-ok``. A rank whose run did not end normally (killed, or ended
by an error) is said at the top of the text and markdown reports, and on stderr with ``--format json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Mapping, TextIO

import orjson

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.io.loader import job_sources
from torchscope.analyzers.jobs import PartialJobError, analyze_job
from torchscope.analyzers.jobs.rank_task import ROWS_TOTAL_ATTR, rows_total
from torchscope.analyzers.jobs.schedulers import ENV_SCHEDULER
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


#: Warnings of a rank's run status (``loader.run_status_warning``) start with this; they go to stderr.
_STATUS_PREFIX = "incomplete:"
#: Exit code of a job with failed ranks, without --partial-ok (bad input).
EXIT_PARTIAL = 2


def _run(args: argparse.Namespace) -> int:
    cache = False if args.no_cache else None
    if args.rank is None and len(job_sources(args.path).sources) > 1:
        return _run_job(args, cache)
    progress = _Progress(sys.stderr)
    progress("loading")
    try:
        traces, report = analyze_path(args.path, rank=args.rank, hta_compatible=args.hta_compatible,
                                      progress=progress, cache=cache)
    finally:
        progress.done()
    if args.format == "json":
        _warn_run_status({t.rank: tuple(t.meta.warnings) for t in traces})
    sys.stdout.write(_render(args.format, traces, report, {}))
    return 0


def _run_job(args: argparse.Namespace, cache: bool | None) -> int:
    options = {"gpu_time": {"hta_compatible": True}} if args.hta_compatible else None
    try:
        job = analyze_job(args.path, scheduler=args.scheduler, partial_ok=args.partial_ok, options=options,
                          cache=cache)
        code = 0
    except PartialJobError as exc:
        job, code = exc.job, EXIT_PARTIAL
    except ValueError as exc:  # a --scheduler that is none of the accepted kinds
        sys.stderr.write(f"torchscope analyze: error: {exc}\n")
        return EXIT_PARTIAL
    for key, reason in job.failed.items():
        sys.stderr.write(f"torchscope: error: {_rank_name(key)} failed: {reason}\n")
    if args.format == "json":
        _warn_run_status(job.warnings)
    sys.stdout.write(_render(args.format, job.header_traces(), job.report, job.failed))
    return code


def _rank_name(key: int | str) -> str:
    return f"rank {key}" if isinstance(key, int) else str(key)


def _warn_run_status(warnings: Mapping[int, tuple[str, ...]]) -> None:
    """One stderr line per distinct run-status warning, naming its ranks (text and markdown say it at the top)."""
    ranks: dict[str, list[int]] = {}
    for rank in sorted(warnings):
        for text in warnings[rank]:
            if text.startswith(_STATUS_PREFIX):
                ranks.setdefault(text, []).append(rank)
    for text, which in ranks.items():
        who = f"rank {which[0]}" if len(which) == 1 else f"ranks {', '.join(map(str, which))}"
        sys.stderr.write(f"torchscope: warning: {who}: {text}\n")


def _render(fmt: str, traces: TraceSet, report: Report, failed: Mapping[int | str, str]) -> str:
    """The report in ``fmt``, with the failed ranks of a partial job after it (a key of its own in JSON)."""
    render = {"text": render_text, "markdown": render_markdown, "json": render_json}[fmt]
    out = render(traces, report)
    cut = any(ROWS_TOTAL_ATTR in frame.attrs for res in report.results for frame in res.tables.values())
    if fmt == "json" and (failed or cut):
        doc = orjson.loads(out)
        for entry, res in zip(doc["results"], report.results):  # a job's per-rank tables are cut short
            for name, frame in res.tables.items():
                if name in entry["tables"]:
                    entry["tables"][name]["rows_total"] = rows_total(frame)
        if failed:
            doc["failed_ranks"] = {str(key): reason for key, reason in failed.items()}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if not failed:
        return out
    if fmt == "markdown":
        lines = ["", "## Failed ranks", ""] + [f"- **{_rank_name(k)}**: {r}" for k, r in failed.items()]
    else:
        lines = ["", "failed ranks (not analyzed):"] + [f"  {_rank_name(k)}: {r}" for k, r in failed.items()]
    return out.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


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
    p.add_argument("--scheduler", default=None, metavar="WHERE",
                   help="where a job's per-rank tasks run: 'processes' (local, the default for big jobs), "
                        f"'inline', or a Dask scheduler tcp://HOST:PORT (default: ${ENV_SCHEDULER})")
    p.add_argument("--partial-ok", action="store_true",
                   help="exit 0 when some ranks of a job failed to load (they are still named)")
    p.set_defaults(func=_run)

