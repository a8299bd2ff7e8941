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


# Moved from test_communication.py with the interval arithmetic it tested.
_comm_intervals = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(_comm_intervals, _comm_intervals)
def test_interval_union_and_coverage_match_brute_force(a: list, b: list) -> None:
    def cells(ivs):  # unit cells [t, t+1) covered by any interval
        return {t for s, d in ivs for t in range(s, s + d)}

    starts = np.array([s for s, _ in a], np.int64)
    ends = np.array([s + d for s, d in a], np.int64)
    us, ue = intervals.merge_intervals(starts, ends)
    assert int((ue - us).sum()) == len(cells(a))
    assert (us[1:] > ue[:-1]).all()  # disjoint and sorted
    qs = np.array([s for s, _ in b], np.int64)
    qe = np.array([s + d for s, d in b], np.int64)
    covered = intervals.covered_ns(qs, qe, (us, ue))
    assert covered.tolist() == [len(cells([(s, d)]) & cells(a)) for s, d in b]


@settings(max_examples=100, deadline=None)
@given(_comm_intervals, _comm_intervals)
def test_interval_subtraction_matches_brute_force(a: list, b: list) -> None:
    def as_union(ivs):
        return intervals.merge_intervals(np.array([s for s, _ in ivs], np.int64),
                                         np.array([s + d for s, d in ivs], np.int64))

    def cells(us, ue):
        return {t for s, e in zip(us, ue) for t in range(s, e)}

    (ua, ea), (ub, eb) = as_union(a), as_union(b)
    rs, re_ = intervals.subtract((ua, ea), (ub, eb))
    assert cells(rs, re_) == cells(ua, ea) - cells(ub, eb)
