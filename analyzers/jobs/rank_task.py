"""One rank's task: load it, run the per-rank analyzers, return a small picklable `RankSummary`.

The task is a plain module-level function of picklable arguments, so the same call runs in this
process, in a local worker process or on a Dask worker (which reads the rank's files from the
shared path in the `RankSource`). Nothing of the full trace leaves the task: the summary keeps each
result's summary and findings, each table cut to ``SUMMARY_TABLE_ROWS`` rows (the whole row count in
``frame.attrs["rows_total"]``), the parts the job-level analyzers reduced the rank to, and a
*skeleton* of the trace: its metadata, its ``steps`` stream, and of its events only the step
annotations (``ProfilerStep#N``) and the two that bound its span, which is what report headers and a
job overview read (rank, device, world size, steps traced and run, the time origin, run status).
A rank that cannot be loaded, or whose task fails outright, comes back as a `RankFailure`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np
import pandas as pd

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.registry import RankRun, run_rank, select
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import Trace, TraceMeta, name_mask
from torchscope.analyzers.io.loader import RankSource, load_rank

__all__ = ["RankSummary", "RankFailure", "TaskSettings", "analyze_rank", "SUMMARY_TABLE_ROWS", "ROWS_TOTAL_ATTR",
           "rows_total", "peak_rss_bytes", "skeleton_of"]

#: Rows kept of each per-rank table in a summary (what the JSON report shows of a table, too).
SUMMARY_TABLE_ROWS = 200
#: ``DataFrame.attrs`` key holding a cut table's whole row count.
ROWS_TOTAL_ATTR = "rows_total"


@dataclass(frozen=True)
class TaskSettings:
    """What every rank's task is asked to do: which analyzers, their options, the cache."""

    only: tuple[str, ...] | None = None
    options: Mapping[str, Mapping] = field(default_factory=dict)
    #: As ``load(..., cache=)``: None follows $TORCHSCOPE_NO_CACHE.
    cache: bool | None = None


@dataclass(frozen=True)
class RankSummary:
    """What one rank's task returns: its metadata, its span, its analyzers' pass with tables cut short."""

    label: str
    #: Metadata, steps stream, step annotations and span-bounding events of the rank (see the module doc).
    skeleton: Trace
    #: Events in the rank's full trace.
    events: int
    run: RankRun
    #: Peak resident memory of the process that ran the task, up to the task's end, bytes (None: unknown).
    worker_peak_rss_bytes: int | None = None
    #: CPU time the task took (load and analyze, this process's user + system), ns.
    task_cpu_ns: int = 0

    @property
    def meta(self) -> TraceMeta:
        """The rank's TraceMeta (manifest, warnings, devices, ...)."""
        return self.skeleton.meta

    @property
    def span_ns(self) -> tuple[int, int]:
        """(first event start, last event end) of the rank's full trace, ns; (0, 0) without events."""
        return self.skeleton.span_ns

    @property
    def rank(self) -> int:
        """Rank id (as the trace file or the bundle says)."""
        return self.meta.rank

    @property
    def results(self) -> tuple[Result, ...]:
        """The rank's per-rank results, in run order."""
        return tuple(self.run.results.values())


@dataclass(frozen=True)
class RankFailure:
    """A rank whose task could not produce a summary, and why (one line)."""

    label: str
    rank: int | None
    reason: str


def analyze_rank(source: RankSource, settings: TaskSettings) -> RankSummary | RankFailure:
    """Load one rank and run its analyzers; a summary, or a failure naming the file and the problem."""
    cpu_start_ns = time.process_time_ns()
    try:
        trace = load_rank(source, cache=settings.cache)
    except TraceError as exc:
        return RankFailure(source.label, source.rank, str(exc))
    except MemoryError:
        return RankFailure(source.label, source.rank, f"{source.label}: out of memory while loading")
    specs, _ = select(settings.only)
    try:
        run = run_rank(trace, specs, options=settings.options)
    except MemoryError:
        return RankFailure(source.label, trace.rank, f"{source.label}: out of memory while analyzing")
    run = replace(run, results={name: _cut(result) for name, result in run.results.items()})
    return RankSummary(label=source.label, skeleton=skeleton_of(trace), events=len(trace.events), run=run,
                       worker_peak_rss_bytes=peak_rss_bytes(), task_cpu_ns=time.process_time_ns() - cpu_start_ns)


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process so far, bytes; None where the platform does not say."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS says bytes, Linux KiB


#: Name prefix of the step annotations a skeleton keeps.
_STEP_PREFIX = "ProfilerStep#"
#: JSONL streams a skeleton keeps (one line per step: small).
_SKELETON_STREAMS = ("steps",)


def skeleton_of(trace: Trace) -> Trace:
    """``trace`` reduced to its metadata, steps stream, step annotations and the two events bounding its span."""
    ev = trace.events
    keep = np.flatnonzero(name_mask(ev["name"], lambda names: names.str.startswith(_STEP_PREFIX))) \
        if not ev.empty else np.zeros(0, dtype=np.int64)
    if not ev.empty:
        ends = ev["ts_ns"].to_numpy(np.int64) + ev["dur_ns"].to_numpy(np.int64)
        keep = np.union1d(keep, [int(ev["ts_ns"].to_numpy(np.int64).argmin()), int(ends.argmax())])
    streams = {name: frame for name, frame in trace.streams.items() if name in _SKELETON_STREAMS}
    return Trace(events=_compact(ev.iloc[keep]), counters=_compact(trace.counters.iloc[0:0]),
                 flows=_compact(trace.flows.iloc[0:0]), meta=trace.meta, streams=streams)


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose categoricals hold only the categories used (a trace has thousands of names)."""
    frame = frame.copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].cat.remove_unused_categories()
    return frame.reset_index(drop=True)


def _cut(result: Result) -> Result:
    """``result`` with each table cut to SUMMARY_TABLE_ROWS rows (the whole count in its attrs)."""
    tables = {}
    for name, frame in result.tables.items():
        if len(frame) > SUMMARY_TABLE_ROWS:
            total = len(frame)
            frame = frame.head(SUMMARY_TABLE_ROWS).copy()
            frame.attrs[ROWS_TOTAL_ATTR] = total
        tables[name] = frame
    return replace(result, tables=tables)


def rows_total(frame: pd.DataFrame) -> int:
    """The whole row count of a (possibly cut) summary table."""
    return int(frame.attrs.get(ROWS_TOTAL_ATTR, len(frame)))
