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
