"""The profiler's own cost in a trace, and the host timeline of the same run without it.

A profiled operator costs more than an unprofiled one. On entering an op the profiler opens a record
(and copies its input shapes with ``record_shapes``); on leaving it closes the record. Kineto takes
the op's start time *after* the entry bookkeeping and its end time *before* the exit bookkeeping, so
an op's recorded duration holds little of it: the cost lies in the gaps around each op, where the
analysis otherwise sees Python. Measured on this project's machine (torch 2.x, CPU, record_shapes,
CPU time of the same loop profiled and unprofiled): 1.3-2.0 µs per ``aten::add`` in a Python loop,
1.7 µs per op of a C++ loop (``_foreach_add_``'s slow path), 1.3-3.6 µs per op of small training
steps; the loops themselves cost 1.2-3.5 µs per op unprofiled. A change that removes dispatches
(foreach, fusion, vectorising a loop, CUDA graphs) removes their bookkeeping too, which the run
without the profiler never paid: counted as removable work it inflates the predicted gain.

The per-op cost ``h`` is measured from the trace itself. Between two consecutive children of one
operator no Python runs (their parent is C++): the gap between them is the profiler's exit
bookkeeping of the first and entry bookkeeping of the second, plus a few ns of C++. ``h`` is the
median of those gaps (``SIBLING_GAP_QUANTILE``): robust to the few children with real work between them.

That median misses most of the cost where ops take Python scalars (``t.add_(1.0)``: 3.2 µs unprofiled,
7.7 µs in the trace, most of it inside the op) and the machine's state in the recording. A bundle whose
run had untraced steps measures the whole cost instead: ``fit_overhead`` raises ``h`` (bisection, at most
``MAX_FITTED_PER_OP_NS``) until the replay without it takes the run's own untraced step, and every
what-if then uses the fitted ``h``. A plain trace has no untraced step and keeps the measured one.

The unprofiled host timeline: on each host thread, every gap between two consecutive boundaries
(an op's start or end) loses ``h / 2`` for each recorded op that starts at its right end (the
entry bookkeeping) and each that ends at its left end (the exit), at most the whole gap. Recorded
ops are operators and user annotations (what ``RecordFunction`` records); runtime calls are CUPTI's
and keep their time. Those shortened gaps are ``ProfilerOverhead.cuts``, the ``replay.Change`` cuts of
the run without the profiler, against which every what-if is replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torchscope.analyzers.bottleneck.model import StepModel, op_parents

__all__ = ["MAX_FITTED_PER_OP_NS", "RECORDED_KINDS", "SIBLING_GAP_QUANTILE", "ProfilerOverhead", "fit_overhead",
           "profiler_overhead"]

#: Host events the profiler records through RecordFunction (each pays the entry and exit bookkeeping).
RECORDED_KINDS = ("cpu_op", "annotation")
#: The quantile of the gaps between consecutive sibling operators taken as the per-op overhead.
SIBLING_GAP_QUANTILE = 0.5
#: Fewest sibling gaps that measure the overhead; with fewer it is taken as 0 (nothing deprofiled).
MIN_SIBLING_GAPS = 20
#: Most per-op cost a fit to the untraced steps may give, ns: twice the largest cost of one op's bookkeeping
#: measured here (``t.add_(1.0)`` with record_shapes, 4.5 µs more than unprofiled). Past it the untraced steps
#: were faster for another reason (the machine's state), which no profiler cost explains.
MAX_FITTED_PER_OP_NS = 10_000
#: Bisection steps of the fit (the per-op cost to within (MAX - measured) / 2**steps).
FIT_STEPS = 10
MEASURED = "measured between sibling ops"
FITTED = "fitted so that the replay without it takes this run's untraced step"

_EMPTY = np.zeros(0, np.int64)


@dataclass(frozen=True)
class ProfilerOverhead:
    """The profiler's per-op cost (ns) and the host cuts that remove it: (starts, ends, new lengths), disjoint."""

    per_op_ns: int
    cuts: tuple[np.ndarray, np.ndarray, np.ndarray]
    #: Number of sibling gaps the per-op cost was measured on.
    gaps: int = 0
    #: How the per-op cost was found: ``MEASURED`` (between sibling ops) or ``FITTED`` (``fit_overhead``).
    source: str = MEASURED

    def removed_before(self, t: np.ndarray) -> np.ndarray:
        """Overhead removed from the host timeline before each time t, ns (inside a cut, proportionally)."""
        t = np.asarray(t, np.int64)
        cs, ce, cl = self.cuts
        if cs.size == 0:
            return np.zeros(t.shape, np.int64)
        removed = (ce - cs) - cl
        before = np.concatenate([[0], np.cumsum(removed)])
        pos = np.searchsorted(cs, t, side="right") - 1
        at = np.maximum(pos, 0)
        inside = (pos >= 0) & (t < ce[at])
        partial = np.where(inside, ((t - cs[at]) * (removed[at] / np.maximum(ce[at] - cs[at], 1))).astype(np.int64), 0)
        return np.where(pos >= 0, before[at] + np.where(inside, partial, removed[at]), 0)

    def removed(self, start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
        """Overhead inside each interval [start, end), ns."""
        return np.maximum(self.removed_before(end_ns) - self.removed_before(start_ns), 0)


def profiler_overhead(model: StepModel) -> ProfilerOverhead:
    """The profiler's overhead of a step model (module docstring), computed once per model."""
    cached = model.cache.get("profiler_overhead")
    if cached is None:
        cached = model.cache["profiler_overhead"] = _measure(model)
    return cached


def fit_overhead(model: StepModel, untraced_step_ns: float, measured_step_ns: float,
                 replayed_step_ns: Callable[[tuple[np.ndarray, np.ndarray, np.ndarray]], float]) -> ProfilerOverhead:
    """The per-op cost that makes ``replayed_step_ns(cuts)`` (the median step replayed with those cuts) take the
    run's own untraced step, by bisection between the measured cost and ``MAX_FITTED_PER_OP_NS``; it replaces the
    measured one in the model's cache, so every what-if uses it. ``measured_step_ns`` is that replay with the
    measured cost's cuts, which the caller has already made. The measured cost is kept when that replay already
    takes no longer than the untraced step, or the trace measured none (too few sibling gaps)."""
    measured = profiler_overhead(model)
    lo, hi = measured.per_op_ns, MAX_FITTED_PER_OP_NS
    if measured.gaps < MIN_SIBLING_GAPS or hi <= lo or measured_step_ns <= untraced_step_ns:
        return measured
    lo_cuts = measured.cuts
    hi_cuts = _cuts(model, hi)
    if replayed_step_ns(hi_cuts) > untraced_step_ns:
        lo, lo_cuts = hi, hi_cuts
    else:
        for _ in range(FIT_STEPS):
            mid = (lo + hi) // 2
            mid_cuts = _cuts(model, mid)
            if replayed_step_ns(mid_cuts) > untraced_step_ns:
                lo, lo_cuts = mid, mid_cuts
            else:
                hi = mid
    fitted = ProfilerOverhead(int(lo), lo_cuts, measured.gaps, FITTED)
    model.cache["profiler_overhead"] = fitted
    return fitted


def _measure(model: StepModel) -> ProfilerOverhead:
    ops = model.ops
    if ops.empty:
        return ProfilerOverhead(0, (_EMPTY, _EMPTY, _EMPTY))
    gaps = _sibling_gaps(model)
    if gaps.size < MIN_SIBLING_GAPS:
        return ProfilerOverhead(0, (_EMPTY, _EMPTY, _EMPTY), int(gaps.size))
    h = int(np.quantile(gaps, SIBLING_GAP_QUANTILE))
    return ProfilerOverhead(h, _cuts(model, h), int(gaps.size))


def _sibling_gaps(model: StepModel) -> np.ndarray:
    """Gaps (ns) between consecutive operators with the same parent operator and nothing recorded between them."""
    ops = model.ops
    parent = op_parents(model)
    kind = ops["kind"].to_numpy(object)
    is_op = kind == "cpu_op"
    child = np.flatnonzero(parent >= 0)
    if child.size < 2:
        return _EMPTY
    # The parent itself must be an operator (C++), not an annotation around Python code.
    child = child[is_op[parent[child]]]
    p = parent[child]
    ts = ops["ts_ns"].to_numpy(np.int64)
    end = ops["end_ns"].to_numpy(np.int64)
    order = np.lexsort((ts[child], p))
    child, p = child[order], p[order]
    # Consecutive children of one parent, over every host event kind: a runtime call between two
    # operators is a sibling of theirs and splits the pair.
    same = p[1:] == p[:-1]
    a, b = child[:-1][same], child[1:][same]
    both = is_op[a] & is_op[b]
    gap = ts[b[both]] - end[a[both]]
    return gap[gap >= 0]


def _cuts(model: StepModel, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per host thread, the gaps between op boundaries shortened by h/2 per adjacent entry or exit; merged over threads."""
    ops = model.ops
    half = h / 2
    recorded = ops["kind"].isin(RECORDED_KINDS).to_numpy()
    pid, tid = ops["pid"].to_numpy(np.int64), ops["tid"].to_numpy(np.int64)
    ts, end = ops["ts_ns"].to_numpy(np.int64), ops["end_ns"].to_numpy(np.int64)
    starts, ends, removed = [], [], []
    for p, t in model.host_threads:
        on = (pid == p) & (tid == t)
        if not (on & recorded).any():
            continue
        points, at = _distinct_sorted(np.concatenate([ts[on], end[on]]))
        # Gap k runs from points[k] to points[k + 1]; one more gap before the first point and after the last.
        lo = np.concatenate([[points[0] - h], points])
        hi = np.concatenate([points, [points[-1] + h]])
        n, rec = int(on.sum()), recorded[on]
        # An op's entry lies in the gap that ends at its start, its exit in the gap that starts at its end.
        entries = np.bincount(at[:n][rec], minlength=lo.size)
        exits = np.bincount(at[n:][rec] + 1, minlength=lo.size)
        weight = (entries + exits) * half
        length = hi - lo
        cut = np.minimum(weight, length).astype(np.int64)
        keep = cut > 0
        starts.append(lo[keep])
        ends.append(hi[keep])
        removed.append(cut[keep])
    if not starts:
        return _EMPTY, _EMPTY, _EMPTY
    s, e, r = np.concatenate(starts), np.concatenate(ends), np.concatenate(removed)
    if len(starts) > 1:
        s, e, r = _merge_threads(s, e, r)
    return s, e, (e - s) - r


def _distinct_sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values in order, and each value's index among them (``np.unique`` with its inverse, one sort)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    at = np.empty(values.size, np.int64)
    at[order] = np.cumsum(first) - 1
    return ordered[first], at


def _merge_threads(s: np.ndarray, e: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cuts of several threads as one disjoint set: overlapping ones united, their removals summed (at most the union)."""
    if not s.size:  # no cut at all: h is 0 when sibling ops abut (timestamps in whole microseconds)
        return s, e, r
    order = np.argsort(s, kind="stable")
    s, e, r = s[order], e[order], r[order]
    reach = np.maximum.accumulate(e)
    new = np.concatenate([[True], s[1:] >= reach[:-1]])
    first = np.flatnonzero(new)
    us, ue = s[first], np.maximum.reduceat(e, first)
    ur = np.minimum(np.add.reduceat(r, first), ue - us)
    return us, ue, ur
