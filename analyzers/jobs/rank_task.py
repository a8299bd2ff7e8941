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

The task looks its summary up in the summary cache first (`summary_cache`, keyed by the rank's files,
the analyzers asked and their version): a hit loads no trace at all; a miss stores what it computed.
The check is in the task, so it holds wherever the task runs (a Dask worker reads and writes its own
cache folder); `cached_summary` is the same lookup for a caller that shares this machine's cache.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.registry import run_rank, select
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import Trace, name_mask
from torchscope.analyzers.io.loader import RankSource, load_rank
from torchscope.analyzers.jobs.summary import (ROWS_TOTAL_ATTR, SUMMARY_TABLE_ROWS, RankFailure, RankSummary,
                                               TaskSettings, rows_total)
from torchscope.analyzers.jobs.summary_cache import open_summary_cache

__all__ = ["RankSummary", "RankFailure", "TaskSettings", "analyze_rank", "cached_summary", "SUMMARY_TABLE_ROWS",
           "ROWS_TOTAL_ATTR", "rows_total", "peak_rss_bytes", "skeleton_of"]

def analyze_rank(source: RankSource, settings: TaskSettings) -> RankSummary | RankFailure:
    """The rank's summary from the summary cache, else load it and run its analyzers (and store the summary);
    a failure names the file and the problem."""
    cpu_start_ns = time.process_time_ns()
    store = open_summary_cache(settings.cache, settings.cache_dir)
    key = store.key(source, settings)
    hit = store.get(key, source) if key is not None else None
    if hit is not None:
        return _as_run_here(hit, cpu_start_ns)
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
    summary = RankSummary(label=source.label, skeleton=skeleton_of(trace), events=len(trace.events), run=run)
    stored = key is not None and store.put(key, source, settings, summary)
    return replace(summary, worker_peak_rss_bytes=peak_rss_bytes(), task_cpu_ns=time.process_time_ns() - cpu_start_ns,
                   cache_key=key if stored else None)


def cached_summary(source: RankSource, settings: TaskSettings) -> RankSummary | None:
    """The rank's summary if the summary cache has it (what `analyze_rank` would return), else None."""
    cpu_start_ns = time.process_time_ns()
    store = open_summary_cache(settings.cache, settings.cache_dir)
    key = store.key(source, settings)
    hit = store.get(key, source) if key is not None else None
    return _as_run_here(hit, cpu_start_ns) if hit is not None else None


def _as_run_here(hit: RankSummary, cpu_start_ns: int) -> RankSummary:
    """A cached summary with this task's own cost: the read's CPU time and this process's peak memory."""
    return replace(hit, worker_peak_rss_bytes=peak_rss_bytes(), task_cpu_ns=time.process_time_ns() - cpu_start_ns)


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
