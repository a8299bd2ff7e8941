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

* ``windows_or_span``: the step windows, or the whole trace span as a single window
  ``step = WHOLE_TRACE`` (-1) when the trace has no ``ProfilerStep`` (a trace of a few iterations,
  or of inference): analyses that report "per step" then report the whole trace. That window is
  not a step: ``step_count`` is 0 for it, and ``window_label`` names it ``WHOLE_TRACE_LABEL``.
* ``run_step_windows``: every step of the *run*, traced or not, from the bundle's ``steps`` JSONL
  stream (one ``{"step", "t_ns"}`` line per ``prof.step()``): the window of step N runs from the
  previous line's time (the manifest's ``started_at_ns`` for the first) to its own line's time.
  It exists for the samples streams (power, clocks), which cover untraced steps too; without such a
  stream it falls back to ``step_windows``.
* ``untraced_step_windows``: the run's steps that ran with the profiler off, from that stream: what a
  step costs without the profiler, measured on the job itself. Left out are the run's first step
  (start-up), the warm-up steps before each traced block (Kineto already records there, and its set-up
  runs in the first of them) and the step after each block (the trace is collected and written there).

How many steps, and what each one processed
--------------------------------------------
``step_count`` is the one count of traced steps (what ``torchscope info`` and ``training_loop``
report). ``user_counts`` gives, per step number, the ``tokens``/``samples`` the user passed to
``prof.step(tokens=, samples=)``: the ``steps`` stream line of step N is written by the
``prof.step()`` that ends ``ProfilerStep#N``; without a stream, the manifest's per-step means.

How many steps ran, and which were traced
-----------------------------------------
``steps_run`` counts the run's ``prof.step()`` calls, traced or not: the bundle's ``steps`` stream
(one line per call), else a final manifest's ``steps``; None for a plain Kineto trace, which cannot
know. ``schedule_words`` says which steps Kineto traced, from the manifest's ``options.schedule``
("wait 1, warmup 1, active 3"), None without a manifest. With ``step_count`` they make the sentence
the reports print (``report.text.traced_steps_line``): "3 of 20 steps traced (wait 1, warmup 1, active 3)".

Which step holds a time
-----------------------
``step_of`` gives the step number of the window holding each timestamp (``start <= t < end``), -1
outside every window; ``step_index`` gives the window's position instead, for indexing per-step arrays.
Windows must be sorted and disjoint, as every function here returns them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from torchscope.analyzers.core.trace import Trace, name_mask

__all__ = ["step_windows", "traced_steps", "run_step_windows", "untraced_step_windows", "windows_or_span", "step_of",
           "step_index", "step_count", "window_label", "user_counts", "steps_run", "schedule_words", "WINDOW_COLUMNS",
           "WHOLE_TRACE", "WHOLE_TRACE_LABEL", "CUSTOM_SCHEDULE", "KINETO_OFF"]

#: Columns of every step-window frame: step number, window start and end (half-open), int64 ns.
WINDOW_COLUMNS = ("step", "start_ns", "end_ns")
#: Every traced step's name holds this (``ProfilerStep#N``).
_STEP_NAME = "ProfilerStep"
#: Step number of the one window ``windows_or_span`` gives a trace without steps (the whole trace; not a step).
WHOLE_TRACE = -1
#: How that window is named in summaries and tables.
WHOLE_TRACE_LABEL = "whole trace"
#: ``schedule_words`` of a run whose schedule was a callable of the user's (its steps are not known).
CUSTOM_SCHEDULE = "a custom schedule"
#: ``schedule_words`` of a run recorded with ``kineto=False`` (samplers and annotations only).
KINETO_OFF = "Kineto off"


def _frame(step: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"step": np.asarray(step, np.int64), "start_ns": np.asarray(start_ns, np.int64),
                         "end_ns": np.asarray(end_ns, np.int64)})


def _empty() -> pd.DataFrame:
    return _frame(np.zeros(0), np.zeros(0), np.zeros(0))


def traced_steps(trace: Trace) -> pd.DataFrame:
    """``Trace.steps()`` (the ProfilerStep annotations, one per step, by start), found once per trace; a copy."""
    return trace.derived(("timeline.steps", "traced_steps"), lambda: _traced_steps(trace)).copy()


def _traced_steps(trace: Trace) -> pd.DataFrame:
    # Trace.steps() reads every event's name as a string; its definition is run on the few events whose
    # (categorical) name can be a step, picked by one test per distinct name.
    ev = trace.events
    maybe = name_mask(ev["name"], lambda names: names.str.contains(_STEP_NAME, regex=False))
    return replace(trace, events=ev[maybe]).steps()


def step_windows(trace: Trace) -> pd.DataFrame:
    """Traced step windows (step, start_ns, end_ns): each ProfilerStep until the next starts, the last to its end."""
    return trace.derived(("timeline.steps", "step_windows"), lambda: _step_windows(trace)).copy()


def _step_windows(trace: Trace) -> pd.DataFrame:
    steps = traced_steps(trace)
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


def untraced_step_windows(trace: Trace) -> pd.DataFrame:
    """The run's steps that ran with the profiler off (step, start_ns, end_ns), from the ``steps`` stream; empty
    without one. See the module docstring for the steps left out."""
    traced = step_windows(trace)
    run = run_step_windows(trace)
    stream = trace.streams.get("steps") if trace.streams else None
    if traced.empty or stream is None or stream.empty or run.empty:
        return _empty()
    steps = run["step"].to_numpy(np.int64)
    traced_set = traced["step"].to_numpy(np.int64)
    keep = ~np.isin(steps, traced_set) & (steps != steps.min())
    options = (trace.meta.manifest or {}).get("options") or {}
    schedule = options.get("schedule") if isinstance(options.get("schedule"), dict) else {}
    warmup = max(_schedule_int(schedule, "warmup", 1), 1)
    ordered = np.unique(traced_set)
    block_starts = ordered[np.concatenate([[True], np.diff(ordered) > 1])]
    block_ends = ordered[np.concatenate([np.diff(ordered) > 1, [True]])]
    for b in block_starts:
        keep &= ~((steps >= b - warmup) & (steps < b))
    keep &= ~np.isin(steps, block_ends + 1)
    return run[keep].reset_index(drop=True)


def windows_or_span(trace: Trace) -> pd.DataFrame:
    """Step windows, or the whole trace span as one window with step -1 when the trace has no steps (ns)."""
    windows = step_windows(trace)
    if windows.empty:
        lo, hi = trace.span_ns
        return _frame(np.array([WHOLE_TRACE]), np.array([lo]), np.array([hi]))
    return windows


def step_count(trace: Trace) -> int:
    """Number of traced steps (``ProfilerStep#N``); 0 for a trace without them (its whole-trace window is no step)."""
    return int(len(step_windows(trace)))


def window_label(step: int) -> str:
    """How a window of ``windows_or_span`` is named: ``step N``, or ``WHOLE_TRACE_LABEL`` for the whole trace."""
    return WHOLE_TRACE_LABEL if int(step) == WHOLE_TRACE else f"step {int(step)}"


def user_counts(trace: Trace, steps: np.ndarray) -> pd.DataFrame:
    """Per step number: the ``tokens`` and ``samples`` given to ``prof.step()`` (float, NaN when not given)."""
    steps = np.asarray(steps, np.int64)
    out = pd.DataFrame({"step": steps, "tokens": np.full(steps.size, np.nan), "samples": np.full(steps.size, np.nan)})
    means = (trace.meta.manifest or {}).get("user_counts") or {}
    if isinstance(means, dict):
        for col in ("tokens", "samples"):
            value = means.get(f"{col}_per_step")
            if isinstance(value, (int, float)) and value > 0:
                out[col] = float(value)
    stream = trace.streams.get("steps") if trace.streams else None
    if stream is None or stream.empty or "step" not in stream.columns:
        return out
    lines = stream.dropna(subset=["step"]).drop_duplicates("step", keep="last")
    pos = pd.Index(lines["step"].to_numpy(np.int64)).get_indexer(steps)
    for col in ("tokens", "samples"):
        if col not in lines.columns:
            continue
        values = pd.to_numeric(lines[col], errors="coerce").to_numpy(np.float64)
        got = np.where(pos >= 0, values[np.maximum(pos, 0)] if values.size else np.nan, np.nan)
        known = ~np.isnan(got)
        out.loc[known, col] = got[known]
    return out


def steps_run(trace: Trace) -> int | None:
    """Number of ``prof.step()`` calls of the run, traced or not (steps stream, else final manifest); None: unknown."""
    stream = trace.streams.get("steps") if trace.streams else None
    if stream is not None and "step" in stream.columns and not stream["step"].dropna().empty:
        return int(stream["step"].dropna().nunique())
    manifest = trace.meta.manifest or {}
    steps = manifest.get("steps")
    final = manifest.get("ended_at_ns") is not None  # the start-of-run manifest of a killed job says 0
    if final and isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0:
        return steps
    return None


def _schedule_int(schedule: dict, key: str, default: int) -> int:
    value = schedule.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def schedule_words(trace: Trace) -> str | None:
    """The run's Kineto schedule in words ("wait 1, warmup 1, active 3"), from the manifest; None without one."""
    manifest = trace.meta.manifest
    if not manifest:
        return None
    options = manifest.get("options") or {}
    if options.get("kineto") is False:
        return KINETO_OFF
    schedule = options.get("schedule")
    if not isinstance(schedule, dict):
        return CUSTOM_SCHEDULE if schedule is not None else None
    parts = []
    skip = _schedule_int(schedule, "skip_first", 0)
    if skip:
        parts.append(f"skip first {skip}")
    parts += [f"{key} {_schedule_int(schedule, key, 0)}" for key in ("wait", "warmup", "active")]
    repeat = _schedule_int(schedule, "repeat", 1)
    if repeat == 0:
        parts.append("repeated until the end")
    elif repeat > 1:
        parts.append(f"repeat {repeat}")
    return ", ".join(parts)


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
