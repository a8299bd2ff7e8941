"""What one rank's task is asked (`TaskSettings`) and what it returns (`RankSummary`, `RankFailure`).

Plain records, apart from the task that makes them (`rank_task`) and the cache that keeps them
(`summary_cache`), so that both can use them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

from torchscope.analyzers.core.registry import RankRun
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import Trace, TraceMeta

__all__ = ["RankSummary", "RankFailure", "TaskSettings", "SUMMARY_TABLE_ROWS", "ROWS_TOTAL_ATTR", "rows_total"]

#: Rows kept of each per-rank table in a summary (what the JSON report shows of a table, too).
SUMMARY_TABLE_ROWS = 200
#: ``DataFrame.attrs`` key holding a cut table's whole row count.
ROWS_TOTAL_ATTR = "rows_total"


@dataclass(frozen=True)
class TaskSettings:
    """What every rank's task is asked to do: which analyzers, their options, the caches."""

    only: tuple[str, ...] | None = None
    options: Mapping[str, Mapping] = field(default_factory=dict)
    #: As ``load(..., cache=)``, for the trace cache and the summary cache: None follows $TORCHSCOPE_NO_CACHE.
    cache: bool | None = None
    #: The cache folder for the summaries (None: where the process running the task keeps its cache). A local
    #: job names this process's: a worker's environment is the one its pool's fork server started with.
    cache_dir: str | None = None


@dataclass(frozen=True)
class RankSummary:
    """What one rank's task returns: its metadata, its span, its analyzers' pass with tables cut short."""

    label: str
    #: Metadata, steps stream, step annotations and span-bounding events of the rank (see `rank_task`).
    skeleton: Trace
    #: Events in the rank's full trace.
    events: int
    run: RankRun
    #: Peak resident memory of the process that ran the task, up to the task's end, bytes (None: unknown).
    worker_peak_rss_bytes: int | None = None
    #: CPU time the task took (load and analyze, or read the cached summary; this process's user + system), ns.
    task_cpu_ns: int = 0
    #: True when the summary was read from the summary cache (the trace was not loaded).
    cached: bool = False
    #: The summary cache's key of this summary when it was read from or stored in the cache, else None.
    cache_key: str | None = None

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


def rows_total(frame: pd.DataFrame) -> int:
    """The whole row count of a (possibly cut) summary table."""
    return int(frame.attrs.get(ROWS_TOTAL_ATTR, len(frame)))
