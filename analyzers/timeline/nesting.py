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

__all__ = ["outermost", "parents", "enclosing", "time_order", "THREAD"]

#: The default nesting group: one host thread of one process.
THREAD = ("pid", "tid")


def _group_codes(frame: pd.DataFrame, by: Sequence[str]) -> np.ndarray:
    """One int code per distinct combination of the ``by`` columns (0 for every row when ``by`` is empty)."""
    if not by or frame.empty:
        return np.zeros(len(frame), np.int64)
    code = np.zeros(len(frame), np.int64)
    for col in by:  # mixed-radix code over each column's distinct values: equal exactly when all columns are
        c, uniq = pd.factorize(frame[col], use_na_sentinel=False)
        code = code * len(uniq) + c
    return code


def _nesting_order(group: np.ndarray, start: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """Row order by group, start, longer first, frame position: every span after all that may contain it."""
    order = time_order(start, dur)
    return order[np.argsort(group[order], kind="stable")]


def time_order(start: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """Row order by start, longer first, frame position. Spans come mostly in time order (a trace's events by
    start, a step model's ops by start and length): then only the runs of equal starts are sorted."""
    n = start.size
    if n < 2:
        return np.arange(n)
    if not (start[1:] >= start[:-1]).all():
        return np.lexsort((-dur, start))
    order = np.arange(n)
    tie = np.concatenate([[False], start[1:] == start[:-1]])
    if not (tie[1:] & (dur[1:] > dur[:-1])).any():
        return order  # already longer first among equal starts
    tie[:-1] |= tie[1:]  # every member of a run of equal starts
    rows = np.flatnonzero(tie)
    order[rows] = rows[np.lexsort((-dur[rows], start[rows]))]
    return order


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
    first = np.concatenate(([True], g[1:] != g[:-1]))
    reach = _group_cummax(end, np.cumsum(first) - 1)
    nested = np.zeros(len(order), dtype=bool)
    nested[1:] = ~first[1:] & (end[1:] <= reach[:-1])
    out = np.empty(len(order), dtype=bool)
    out[order] = ~nested
    return out


def _group_cummax(v: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Running maxima of ``v`` restarting at each group (``run``: non-decreasing group number per element)."""
    lo = int(v.min())
    width = int(v.max()) - lo + 1
    if width * (int(run[-1]) + 1) < 2 ** 62:  # groups lifted apart by an offset: one accumulate
        lift = run.astype(np.int64) * width
        return np.maximum.accumulate((v - lo) + lift) - lift + lo
    return pd.Series(v).groupby(run).cummax().to_numpy(np.int64)


def parents(spans: pd.DataFrame, by: Sequence[str] = THREAD) -> np.ndarray:
    """Position (in ``spans``) of the innermost span of the same group containing each span, -1 if outermost."""
    out = np.full(len(spans), -1, dtype=np.int64)
    if spans.empty:
        return out
    group = _group_codes(spans, by)
    start = spans["ts_ns"].to_numpy(np.int64)
    end = start + spans["dur_ns"].to_numpy(np.int64)
    order = _nesting_order(group, start, end - start)
    g, s, e = group[order], start[order], end[order]
    parent, nested = _nearest_container(g, s, e)
    if not nested.all():
        # A span partly overlapping an earlier one (clock rounding): its groups take the call-stack walk.
        redo = np.isin(g, np.unique(g[~nested]))
        rows = np.flatnonzero(redo)
        sub = _stack_parents(g[rows], s[rows], e[rows])
        parent[rows] = np.where(sub >= 0, rows[np.maximum(sub, 0)], -1)
    found = parent >= 0
    out[order[found]] = order[parent[found]]
    return out


def _nearest_container(g: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per span in nesting order: the latest earlier span of its group ending at or after it ends (-1: none),
    and whether every span between the two ends by this span's start (the group nests properly there).

    Among earlier spans (each starts no later) those ending at or after a span's end contain it; on a
    properly nested thread the latest of them is its parent, which is what the call-stack walk finds.
    Both are answered for all spans at once by pointer jumping: each span keeps a candidate, starting at
    the span just before it, such that every span strictly between the two ends before it does (and the
    furthest end among those); while the candidate ends before it too, the span moves to the candidate's
    own candidate, all spans in step. The jumps follow the chain of containers up from the previous span,
    so they double along it: a few rounds over the spans still looking.
    """
    n = g.size
    pos = np.arange(n)
    first = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    lo = np.repeat(first, np.diff(np.concatenate((first, [n]))))  # first position of each span's group
    cand = pos - 1
    reach = np.full(n, np.iinfo(np.int64).min)  # furthest end strictly between the candidate and the span
    parent = np.full(n, -1, np.int64)
    todo = np.flatnonzero(cand >= lo)
    while todo.size:
        c = cand[todo]
        found = e[c] >= e[todo]
        parent[todo[found]] = c[found]
        todo, c = todo[~found], c[~found]
        # Jump: the candidate and everything between it and its own candidate end before this span does.
        reach[todo] = np.maximum(reach[todo], np.maximum(e[c], reach[c]))
        cand[todo] = cand[c]
        todo = todo[cand[todo] >= lo[todo]]
    nested = reach <= s
    return parent, nested


def _stack_parents(g: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Per span in nesting order: the position of its parent in that order (-1: none), by walking the call stack."""
    g_, s_, e_ = g.tolist(), s.tolist(), e.tolist()  # plain ints: this loop runs once per span
    parent = [-1] * len(g_)
    stack: list[int] = []
    current = None
    for j in range(len(g_)):
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
    return np.asarray(parent, dtype=np.int64)


def enclosing(points: pd.DataFrame, spans: pd.DataFrame, by: Sequence[str] = THREAD, *,
              span_parents: np.ndarray | None = None) -> np.ndarray:
    """Position (in ``spans``) of the innermost span of the point's ``by`` group containing each point's ts_ns, or -1.

    ``points`` has the ``by`` columns and ``ts_ns``; ``spans`` has the ``by`` columns, ``ts_ns`` and ``dur_ns``.
    ``span_parents``: ``parents(spans, by)`` when the caller already has it (it is found here otherwise).
    """
    by = list(by)
    out = np.full(len(points), -1, dtype=np.int64)
    if points.empty or spans.empty:
        return out
    at = points["ts_ns"].to_numpy(np.int64)
    span_start = spans["ts_ns"].to_numpy(np.int64)
    span_end = span_start + spans["dur_ns"].to_numpy(np.int64)
    cand = _latest_start(points, spans, by, at, span_start, span_end)
    # The latest-starting span at or before the point; when it ended before the point, its parents may not have.
    parent = span_parents
    while True:
        open_ = cand >= 0
        miss = open_ & (span_end[np.maximum(cand, 0)] < at)
        if not miss.any():
            break
        if parent is None:
            parent = parents(spans, by)
        cand = np.where(miss, parent[np.maximum(cand, 0)], cand)
    return cand


def _latest_start(points: pd.DataFrame, spans: pd.DataFrame, by: list[str], at: np.ndarray,
                  span_start: np.ndarray, span_end: np.ndarray) -> np.ndarray:
    """Per point: the span of its group starting last at or before it (of equal starts the shortest, then the
    last in the frame), -1 when none. One sorted search over (group, start) keys."""
    n = len(spans)
    group_p, group_s = np.zeros(len(points), np.int64), np.zeros(n, np.int64)
    for col in by:  # one code per distinct value of each column over points and spans together
        codes, uniq = pd.factorize(np.concatenate([points[col].to_numpy(np.int64), spans[col].to_numpy(np.int64)]))
        group_p = group_p * len(uniq) + codes[:len(points)]
        group_s = group_s * len(uniq) + codes[len(points):]
    lo = min(int(at.min()), int(span_start.min()))
    width = max(int(at.max()), int(span_start.max())) - lo + 1
    n_groups = int(max(group_p.max(), group_s.max())) + 1
    if n_groups * width >= 2 ** 62:  # keys would overflow int64: the merge does the same search
        return _latest_start_merge(points, spans, by, at, span_start, span_end)
    order = time_order(span_start, span_end - span_start)
    order = order[np.argsort(group_s[order], kind="stable")]
    key_s = group_s[order] * width + (span_start[order] - lo)
    key_p = group_p * width + (at - lo)
    pos = np.searchsorted(key_s, key_p, side="right") - 1
    hit = pos >= 0
    row = order[np.maximum(pos, 0)]
    hit &= group_s[row] == group_p
    return np.where(hit, row, -1).astype(np.int64)


def _latest_start_merge(points: pd.DataFrame, spans: pd.DataFrame, by: list[str], at: np.ndarray,
                        span_start: np.ndarray, span_end: np.ndarray) -> np.ndarray:
    """``_latest_start`` by ``pandas.merge_asof`` (for keys too wide to pack into one int64)."""
    out = np.full(len(points), -1, dtype=np.int64)
    left = pd.DataFrame({c: points[c].to_numpy(np.int64) for c in by})
    left["ts_ns"] = at
    left["_row"] = np.arange(len(points))
    right = pd.DataFrame({c: spans[c].to_numpy(np.int64) for c in by})
    right["ts_ns"] = span_start
    right["_span"] = np.arange(len(spans))
    # Among spans with the same start the shortest (innermost) must come last: merge_asof takes the last.
    right = right.iloc[np.lexsort((-(span_end - span_start), span_start))]
    merged = pd.merge_asof(left.sort_values("ts_ns", kind="stable"), right, on="ts_ns", by=by or None,
                           direction="backward")
    out[merged["_row"].to_numpy(np.int64)] = merged["_span"].fillna(-1).to_numpy(np.int64)
    return out
