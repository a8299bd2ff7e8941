"""Nesting of duration events: which span encloses a point, each span's parent, the outermost spans.

Spans are rows with ``ts_ns`` and ``dur_ns`` (int64 ns) plus grouping columns, by default
``pid`` and ``tid``: nesting is decided **within each (pid, tid)** (one host thread's call stack), never
across threads, unless a caller passes other ``by`` columns (``by=()``: one group, e.g. phases
recorded on any thread).

* **Contains**: span A contains span B when ``A.start <= B.start`` and ``B.end <= A.end``. Of two
  spans with the same start the longer is the outer one; of two identical spans the first in
  the frame. A span contains a *point* t when ``start <= t <= end`` (closed at the end: an instant
  or a launch at the very end of an op still belongs to it).
* **Outermost** (``outermost``): a span contained by no other span of its group, e.g. the top-level
  CPU ops of a thread, or the outermost ``nn.Module`` events.
* **Parent** (``parents``): the innermost span of the group that contains a span; -1 for outermost ones.
* **Enclosing** (``enclosing``): the innermost span of the point's group that contains a point (the
  latest-starting one that does), -1 when none does.

Traces written by Kineto nest properly on each thread; a span that only partly overlaps an
earlier one (clock rounding) is not contained by it and so counts as outermost.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["outermost", "parents", "enclosing", "THREAD"]

#: The default nesting group: one host thread of one process.
THREAD = ("pid", "tid")


def _group_codes(frame: pd.DataFrame, by: Sequence[str]) -> np.ndarray:
    """One int code per distinct combination of the ``by`` columns (0 for every row when ``by`` is empty)."""
    if not by or frame.empty:
        return np.zeros(len(frame), np.int64)
    return frame.groupby(list(by), sort=False, observed=True).ngroup().to_numpy(np.int64)


def _nesting_order(group: np.ndarray, start: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """Row order by group, start, longer first, frame position: every span after all that may contain it."""
    return np.lexsort((np.arange(start.size), -dur, start, group))


def outermost(spans: pd.DataFrame, by: Sequence[str] = THREAD) -> np.ndarray:
    """True for the spans that no other span of the same ``by`` group (default pid, tid) contains."""
    if spans.empty:
        return np.zeros(0, dtype=bool)
    group = _group_codes(spans, by)
    start = spans["ts_ns"].to_numpy(np.int64)
    dur = spans["dur_ns"].to_numpy(np.int64)
    order = _nesting_order(group, start, dur)
    g, end = group[order], (start + dur)[order]
    # Every earlier span of the group starts at or before this one: it is contained by one of them
    # exactly when it ends no later than the furthest end among them.
    reach = pd.Series(end).groupby(g).cummax().groupby(g).shift(1).to_numpy()
    nested = ~np.isnan(reach) & (end <= np.nan_to_num(reach, nan=0))
    out = np.empty(len(order), dtype=bool)
    out[order] = ~nested
    return out


def parents(spans: pd.DataFrame, by: Sequence[str] = THREAD) -> np.ndarray:
    """Position (in ``spans``) of the innermost span of the same group containing each span, -1 if outermost."""
    out = np.full(len(spans), -1, dtype=np.int64)
    if spans.empty:
        return out
    group = _group_codes(spans, by)
    start = spans["ts_ns"].to_numpy(np.int64)
    end = start + spans["dur_ns"].to_numpy(np.int64)
    order = _nesting_order(group, start, end - start)
    g_, s_, e_ = group.tolist(), start.tolist(), end.tolist()  # plain ints: this loop runs once per span
    parent = [-1] * len(g_)
    stack: list[int] = []
    current = None
    for j in order.tolist():
        if g_[j] != current:
            stack, current = [], g_[j]
        sj, ej = s_[j], e_[j]
        while stack and e_[stack[-1]] <= sj and not (e_[stack[-1]] == sj == ej):
            stack.pop()
        # On a properly nested thread the top of the stack is the parent; past a partial overlap, go deeper.
        for k in reversed(stack):
            if e_[k] >= ej:
                parent[j] = k
                break
        stack.append(j)
    out[:] = parent
    return out


def enclosing(points: pd.DataFrame, spans: pd.DataFrame, by: Sequence[str] = THREAD) -> np.ndarray:
    """Position (in ``spans``) of the innermost span of the point's ``by`` group containing each point's ts_ns, or -1.

    ``points`` has the ``by`` columns and ``ts_ns``; ``spans`` has the ``by`` columns, ``ts_ns`` and ``dur_ns``.
    """
    by = list(by)
    out = np.full(len(points), -1, dtype=np.int64)
    if points.empty or spans.empty:
        return out
    left = pd.DataFrame({c: points[c].to_numpy(np.int64) for c in by})
    left["ts_ns"] = points["ts_ns"].to_numpy(np.int64)
    left["_row"] = np.arange(len(points))
    span_start = spans["ts_ns"].to_numpy(np.int64)
    span_end = span_start + spans["dur_ns"].to_numpy(np.int64)
    right = pd.DataFrame({c: spans[c].to_numpy(np.int64) for c in by})
    right["ts_ns"] = span_start
    right["_span"] = np.arange(len(spans))
    # Among spans with the same start the shortest (innermost) must come last: merge_asof takes the last.
    right = right.iloc[np.lexsort((-(span_end - span_start), span_start))]
    merged = pd.merge_asof(left.sort_values("ts_ns", kind="stable"), right, on="ts_ns", by=by or None,
                           direction="backward")
    rows = merged["_row"].to_numpy(np.int64)
    cand = merged["_span"].fillna(-1).to_numpy(np.int64)
    at = merged["ts_ns"].to_numpy(np.int64)
    # The latest-starting span at or before the point; when it ended before the point, its parents may not have.
    parent = None
    while True:
        open_ = cand >= 0
        miss = open_ & (span_end[np.maximum(cand, 0)] < at)
        if not miss.any():
            break
        if parent is None:
            parent = parents(spans, by)
        cand = np.where(miss, parent[np.maximum(cand, 0)], cand)
    out[rows] = cand
    return out
