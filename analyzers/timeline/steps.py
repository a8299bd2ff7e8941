"""Step windows: the one definition of when a training (or inference) step runs, and which step holds a time.

What a step is
--------------
A *traced step* is a ``ProfilerStep#N`` annotation (``Trace.steps()``: one per step number, sorted
by start). Its window is **half-open, from its own start to the start of the next traced step; the
last step runs to its own end** (start + duration)::

    ProfilerStep#3 |=========|    ProfilerStep#4 |=======|   ProfilerStep#5 |=====|
    window 3       [---------------------------)
    window 4                                    [--------------------------)
    window 5                                                               [-----)

So every ns of the traced loop belongs to exactly one step and none is counted twice: the host
work between two ``ProfilerStep`` annotations (``prof.step()`` itself, logging, the next batch's
data loading when it happens before the annotation opens) is charged to the step it follows, and a
step annotation that outlasts the next one's start is cut there. ``step_windows`` returns this.

Two variants exist, each for one reason:

* ``windows_or_span``: the step windows, or the whole trace span as a single window ``step = -1``
  when the trace has no ``ProfilerStep`` (a trace of a few iterations, or of inference): analyses
  that report "per step" then report the whole trace.
* ``run_step_windows``: every step of the *run*, traced or not, from the bundle's ``steps`` JSONL
  stream (one ``{"step", "t_ns"}`` line per ``prof.step()``): the window of step N runs from the
  previous line's time (the manifest's ``started_at_ns`` for the first) to its own line's time.
  It exists for the samples streams (power, clocks), which cover untraced steps too; without such a
  stream it falls back to ``step_windows``.

Which step holds a time
-----------------------
``step_of`` gives the step number of the window holding each timestamp (``start <= t < end``), -1
outside every window; ``step_index`` gives the window's position instead, for indexing per-step arrays.
Windows must be sorted and disjoint, as every function here returns them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers.core.trace import Trace

__all__ = ["step_windows", "run_step_windows", "windows_or_span", "step_of", "step_index", "WINDOW_COLUMNS"]

#: Columns of every step-window frame: step number, window start and end (half-open), int64 ns.
WINDOW_COLUMNS = ("step", "start_ns", "end_ns")


def _frame(step: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"step": np.asarray(step, np.int64), "start_ns": np.asarray(start_ns, np.int64),
                         "end_ns": np.asarray(end_ns, np.int64)})


def _empty() -> pd.DataFrame:
    return _frame(np.zeros(0), np.zeros(0), np.zeros(0))


def step_windows(trace: Trace) -> pd.DataFrame:
    """Traced step windows (step, start_ns, end_ns): each ProfilerStep until the next starts, the last to its end."""
    steps = trace.steps()
    if steps.empty:
        return _empty()
    starts = steps["ts_ns"].to_numpy(np.int64)
    ends = starts + steps["dur_ns"].to_numpy(np.int64)
    ends[:-1] = starts[1:]
    return _frame(steps["step"].to_numpy(np.int64), starts, ends)


def run_step_windows(trace: Trace) -> pd.DataFrame:
    """Every step of the run (step, start_ns, end_ns) from the bundle's ``steps`` stream; else ``step_windows``."""
    stream = trace.streams.get("steps") if trace.streams else None
    if stream is not None and not stream.empty and {"step", "t_ns"} <= set(stream.columns):
        rows = stream.dropna(subset=["step", "t_ns"]).sort_values("t_ns")
        t = rows["t_ns"].to_numpy(np.int64)
        steps = rows["step"].to_numpy(np.int64)
        started = (trace.meta.manifest or {}).get("started_at_ns")
        if isinstance(started, (int, float)) and t.size and started < t[0]:
            t = np.concatenate([[int(started)], t])  # the first step runs from the start of profiling
            steps = np.concatenate([[-1], steps])
        if t.size >= 2:
            return _frame(steps[1:], t[:-1], t[1:])
    return step_windows(trace)


def windows_or_span(trace: Trace) -> pd.DataFrame:
    """Step windows, or the whole trace span as one window with step -1 when the trace has no steps (ns)."""
    windows = step_windows(trace)
    if windows.empty:
        lo, hi = trace.span_ns
        return _frame(np.array([-1]), np.array([lo]), np.array([hi]))
    return windows


def step_index(ts_ns: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Position of the window ``[starts[i], ends[i])`` holding each time (ns), -1 outside; windows sorted, disjoint."""
    ts_ns = np.asarray(ts_ns, np.int64)
    starts = np.asarray(starts, np.int64)
    ends = np.asarray(ends, np.int64)
    if starts.size == 0:
        return np.full(ts_ns.shape, -1, np.int64)
    idx = np.searchsorted(starts, ts_ns, side="right") - 1
    ok = (idx >= 0) & (ts_ns < ends[np.maximum(idx, 0)])
    return np.where(ok, idx, -1).astype(np.int64)


def step_of(ts_ns: np.ndarray, windows: pd.DataFrame) -> np.ndarray:
    """Step number of the window (a ``step_windows`` frame) holding each time (ns), -1 outside every window."""
    idx = step_index(ts_ns, windows["start_ns"].to_numpy(np.int64), windows["end_ns"].to_numpy(np.int64))
    steps = windows["step"].to_numpy(np.int64)
    return np.where(idx >= 0, steps[np.maximum(idx, 0)] if steps.size else -1, -1).astype(np.int64)
