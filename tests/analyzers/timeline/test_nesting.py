"""Nesting: outermost spans per (pid, tid), parents and the innermost span enclosing a point, vs brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from torchscope.analyzers.timeline import nesting


def _spans(rows) -> pd.DataFrame:
    return pd.DataFrame({"pid": np.array([r[0] for r in rows], np.int64),
                         "tid": np.array([r[1] for r in rows], np.int64),
                         "ts_ns": np.array([r[2] for r in rows], np.int64),
                         "dur_ns": np.array([r[3] for r in rows], np.int64)})


def test_outermost_and_parents_are_decided_per_pid_and_tid():
    spans = _spans([(1, 1, 0, 100), (1, 1, 10, 20), (1, 1, 12, 5), (2, 1, 10, 20), (1, 2, 50, 10),
                    (1, 1, 100, 10)])
    assert nesting.outermost(spans).tolist() == [True, False, False, True, True, True]
    assert nesting.parents(spans).tolist() == [-1, 0, 1, -1, -1, -1]
    # Grouped by tid only, the pid-2 span would nest in the first one.
    assert nesting.outermost(spans, by=("tid",)).tolist() == [True, False, False, False, True, True]


def test_equal_starts_the_longer_is_outer_whatever_the_frame_order():
    spans = _spans([(0, 0, 0, 10), (0, 0, 0, 30)])
    assert nesting.outermost(spans).tolist() == [False, True]
    assert nesting.parents(spans).tolist() == [1, -1]


def test_enclosing_finds_the_innermost_even_after_a_finished_child():
    spans = _spans([(0, 0, 0, 100), (0, 0, 10, 20), (0, 0, 40, 10), (0, 1, 0, 1000)])
    points = _spans([(0, 0, 15, 0), (0, 0, 60, 0), (0, 0, 100, 0), (0, 0, 101, 0), (0, 1, 500, 0),
                     (0, 2, 5, 0)])
    assert nesting.enclosing(points, spans).tolist() == [1, 0, 0, -1, 3, -1]
    assert nesting.enclosing(points, spans, by=()).tolist() == [1, 0, 0, 3, 3, 0]


_nested = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60), st.integers(0, 25)), max_size=20)


def _contains(a, b) -> bool:
    return a[0] == b[0] and a[1] <= b[1] and b[1] + b[2] <= a[1] + a[2]


@settings(max_examples=80, deadline=None)
@given(_nested, st.lists(st.tuples(st.integers(0, 2), st.integers(0, 90)), max_size=15))
def test_matches_brute_force_on_properly_nested_spans(raw, raw_points):
    # Keep a properly nested subset per thread (each span inside or disjoint from the kept ones).
    kept: list[tuple[int, int, int]] = []
    for s in raw:
        if all(_contains(k, s) or _contains(s, k) or k[0] != s[0] or k[1] + k[2] <= s[1] or s[1] + s[2] <= k[1]
               for k in kept):
            kept.append(s)
    spans = _spans([(0, tid, ts, dur) for tid, ts, dur in kept])
    contained_by = [[j for j, a in enumerate(kept) if j != i and _contains(a, b) and (a != b or j < i)]
                    for i, b in enumerate(kept)]
    assert nesting.outermost(spans).tolist() == [not c for c in contained_by]

    def innermost(cands):
        return min(cands, key=lambda j: (-kept[j][1], kept[j][2], -j)) if cands else -1

    assert nesting.parents(spans).tolist() == [innermost(c) for c in contained_by]
    points = _spans([(0, tid, t, 0) for tid, t in raw_points])
    expected = [innermost([j for j, a in enumerate(kept) if a[0] == tid and a[1] <= t <= a[1] + a[2]])
                for tid, t in raw_points]
    assert nesting.enclosing(points, spans).tolist() == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 40), st.integers(0, 15)), max_size=30))
def test_parents_match_the_call_stack_walk_on_any_spans(raw):
    # Partial overlaps included: the vectorised search and the stack walk agree span for span.
    spans = _spans(raw)
    if spans.empty:
        return
    group = nesting._group_codes(spans, nesting.THREAD)
    start = spans["ts_ns"].to_numpy(np.int64)
    end = start + spans["dur_ns"].to_numpy(np.int64)
    order = nesting._nesting_order(group, start, end - start)
    walk = nesting._stack_parents(group[order], start[order], end[order])
    expected = np.full(len(spans), -1, np.int64)
    expected[order[walk >= 0]] = order[walk[walk >= 0]]
    assert nesting.parents(spans).tolist() == expected.tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 40), st.integers(0, 15)), min_size=1,
                max_size=25),
       st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 60), st.just(0)), min_size=1, max_size=15))
def test_the_packed_key_search_matches_merge_asof(raw_spans, raw_points):
    spans, points = _spans(raw_spans), _spans(raw_points)
    at = points["ts_ns"].to_numpy(np.int64)
    start = spans["ts_ns"].to_numpy(np.int64)
    end = start + spans["dur_ns"].to_numpy(np.int64)
    for by in (["pid", "tid"], ["tid"], []):
        assert nesting._latest_start(points, spans, by, at, start, end).tolist() \
            == nesting._latest_start_merge(points, spans, by, at, start, end).tolist()
