"""Interval arithmetic: union, length and intersection against brute force over covered points."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from torchscope.analyzers.timeline import intervals

_intervals = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=25)


def _covered(ivs) -> set[int]:
    return {t for s, d in ivs for t in range(s, s + d)}


@settings(max_examples=60, deadline=None)
@given(_intervals, _intervals)
def test_union_and_overlap_match_brute_force(a, b):
    def arrays(ivs):
        s = np.array([x for x, _ in ivs], dtype=np.int64)
        return s, s + np.array([d for _, d in ivs], dtype=np.int64)

    ma, mb = intervals.merge_intervals(*arrays(a)), intervals.merge_intervals(*arrays(b))
    assert intervals.union_ns(*arrays(a)) == len(_covered(a))
    assert intervals.overlap_ns(ma, mb) == len(_covered(a) & _covered(b))
    assert np.all(ma[0][1:] > ma[1][:-1])  # disjoint and sorted


@settings(max_examples=60, deadline=None)
@given(_intervals, _intervals, st.lists(st.tuples(st.integers(0, 240), st.integers(0, 60)), max_size=10))
def test_covered_and_subtract_match_brute_force(a, b, windows):
    def arrays(ivs):
        s = np.array([x for x, _ in ivs], dtype=np.int64)
        return s, s + np.array([d for _, d in ivs], dtype=np.int64)

    ma, mb = intervals.merge_intervals(*arrays(a)), intervals.merge_intervals(*arrays(b))
    ws, we = arrays(windows)
    got = intervals.covered_ns(ws, we, ma)
    assert got.tolist() == [len(_covered(a) & set(range(s, e))) for s, e in zip(ws, we)]
    ds, de = intervals.subtract(ma, mb)
    assert {t for s, e in zip(ds, de) for t in range(s, e)} == _covered(a) - _covered(b)
    assert np.all(ds[1:] > de[:-1])
