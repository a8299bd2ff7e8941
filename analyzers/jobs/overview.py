"""The job overview: one row per rank (step time, exposed communication, GPU idle), built from each rank's results.

Each rank is reduced on its own (`overview_inputs`, from the ``training_loop``, ``communication`` and
``gpu_time`` results of that rank) to one `RankOverview` row; the overview is the table of those rows
and a few job-wide numbers. It never sees a full trace, so a job of any rank count costs one row per
rank here. Columns of the ``per_rank`` table (one row per rank, sorted by rank):

=============================  =======  ============================================================
column                         dtype    meaning
=============================  =======  ============================================================
rank                           int64    rank id
steps                          int64    traced steps of the rank (0 without ProfilerStep)
step_median_ns                 float64  median step time, ns (NaN without steps)
step_p90_ns                    float64  90th percentile of step time, ns (NaN without steps)
exposed_comm_median_ns         float64  median over steps of communication not overlapped by compute, ns
exposed_comm_pct               float64  median over steps of exposed communication / step time, %
comm_ns                        float64  communication time (union of collectives), ns (NaN: none)
overlap_pct                    float64  communication time overlapped by compute, % (NaN: none)
compute_median_ns              float64  median over steps of compute time (communication's compute union), ns
gpu_idle_pct                   float64  window time with nothing on any GPU stream, % (NaN: no GPU events)
step_vs_median_pct             float64  this rank's median step over the median of all ranks' medians, - 100, %
=============================  =======  ============================================================
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.trace import Trace

__all__ = ["RankOverview", "overview_inputs", "job_overview", "SUMMARY_KEYS", "OVERVIEW_COLUMNS"]

#: Keys of the ``job_overview`` summary -> what each is, with its unit.
SUMMARY_KEYS: dict[str, str] = {
    "ranks": "number of ranks in the overview",
    "ranks_with_steps": "ranks whose trace has ProfilerStep windows",
    "step_median_ns": "median over ranks of each rank's median step time, ns (None without steps)",
    "slowest_rank": "rank with the longest median step (None without steps)",
    "slowest_step_median_ns": "median step time of the slowest rank, ns",
    "step_spread_pct": "slowest rank's median step over the fastest's, - 100, % (None without steps)",
    "most_exposed_rank": "rank with the largest median exposed-communication share (None without collectives)",
    "most_exposed_comm_pct": "that rank's median exposed communication / step time, %",
}


@dataclass(frozen=True)
class RankOverview:
    """One rank's row of the job overview (times ns, shares %; NaN where the rank has no such data)."""

    rank: int
    steps: int = 0
    step_median_ns: float = math.nan
    step_p90_ns: float = math.nan
    exposed_comm_median_ns: float = math.nan
    exposed_comm_pct: float = math.nan
    comm_ns: float = math.nan
    overlap_pct: float = math.nan
    compute_median_ns: float = math.nan
    gpu_idle_pct: float = math.nan


#: Columns of the ``per_rank`` table, in order.
OVERVIEW_COLUMNS = tuple(f.name for f in fields(RankOverview)) + ("step_vs_median_pct",)


def _number(value: object) -> float:
    """``value`` as a float, NaN for None or anything not numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return math.nan
    return float(value)


def overview_inputs(trace: Trace, training_loop_result: Result | None = None,
                    communication_result: Result | None = None,
                    gpu_time_result: Result | None = None) -> RankOverview:
    """One rank's overview row from its own results (each may be None: skipped or failed)."""
    row: dict[str, float | int] = {}
    if training_loop_result is not None:
        loop = training_loop_result.summary
        row["steps"] = int(loop.get("steps") or 0)
        row["step_median_ns"] = _number(loop.get("step_median_ns"))
        row["step_p90_ns"] = _number(loop.get("step_p90_ns"))
    if communication_result is not None:
        comm = communication_result.summary
        per_step = communication_result.table("per_step")
        valid = per_step[per_step["step_ns"] > 0]
        if not valid.empty:
            row["exposed_comm_median_ns"] = float(valid["exposed_ns"].median())
            row["exposed_comm_pct"] = float(valid["exposed_pct"].median())
            row["compute_median_ns"] = float(valid["compute_ns"].median())
        row["comm_ns"] = _number(comm.get("comm_ns"))
        row["overlap_pct"] = _number(comm.get("overlap_pct"))
    if gpu_time_result is not None:
        row["gpu_idle_pct"] = _number(gpu_time_result.summary.get("idle_pct"))
    return RankOverview(rank=trace.rank, **row)


@register("job_overview", description="One row per rank: step time, exposed communication, GPU idle",
          scope="set", page="overview", summary_keys=SUMMARY_KEYS,
          needs=("training_loop", "communication", "gpu_time"), reduce=overview_inputs)
def job_overview(parts: dict[int, RankOverview]) -> Result:
    """The per-rank table of the job and which rank is slowest or most exposed to communication."""
    if len(parts) < 2:
        raise NotApplicable("single rank")
    table = pd.DataFrame([asdict(parts[rank]) for rank in sorted(parts)])
    table = table.astype({"rank": np.int64, "steps": np.int64})
    steps = table["step_median_ns"].dropna()
    median = float(steps.median()) if not steps.empty else math.nan
    table["step_vs_median_pct"] = 100.0 * table["step_median_ns"] / median - 100.0 if median > 0 else math.nan
    table = table[list(OVERVIEW_COLUMNS)]
    summary: dict[str, object] = {
        "ranks": int(len(table)), "ranks_with_steps": int((table["steps"] > 0).sum()),
        "step_median_ns": median if not steps.empty else None,
        "slowest_rank": None, "slowest_step_median_ns": None, "step_spread_pct": None,
        "most_exposed_rank": None, "most_exposed_comm_pct": None,
    }
    if not steps.empty:
        slow = int(table["step_median_ns"].idxmax())
        fastest = float(steps.min())
        summary["slowest_rank"] = int(table.loc[slow, "rank"])
        summary["slowest_step_median_ns"] = float(table.loc[slow, "step_median_ns"])
        summary["step_spread_pct"] = 100.0 * float(steps.max()) / fastest - 100.0 if fastest > 0 else None
    exposed = table["exposed_comm_pct"].dropna()
    if not exposed.empty:
        most = int(table["exposed_comm_pct"].idxmax())
        summary["most_exposed_rank"] = int(table.loc[most, "rank"])
        summary["most_exposed_comm_pct"] = float(table.loc[most, "exposed_comm_pct"])
    return Result(analyzer="job_overview", tables={"per_rank": table}, summary=summary)
