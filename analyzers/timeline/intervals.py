"""Interval arithmetic on int64 ns arrays: union, total length, intersection, clipping.

An interval set is a pair of arrays ``(starts, ends)``, half-open ``[start, end)``. Functions that
say so return it sorted and disjoint ("merged"), which the others may require of their inputs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["merge_intervals", "union_ns", "overlap_ns", "clip", "covered_ns", "subtract"]


def merge_intervals(start_ns: np.ndarray, end_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals [start, end) as sorted, disjoint (starts, ends), ns."""
    start_ns = np.asarray(start_ns, dtype=np.int64)
    end_ns = np.asarray(end_ns, dtype=np.int64)
    if start_ns.size == 0:
        return start_ns[:0], end_ns[:0]
    order = np.argsort(start_ns, kind="stable")
    s, e = start_ns[order], end_ns[order]
    reach = np.maximum.accumulate(e)
    new = np.empty(s.size, dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    return s[new], np.maximum.reduceat(e, np.flatnonzero(new))


def union_ns(start_ns: np.ndarray, end_ns: np.ndarray) -> int:
    """Total length of the union of intervals, ns."""
    s, e = merge_intervals(start_ns, end_ns)
    return int((e - s).sum())


def overlap_ns(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> int:
    """Length of the intersection of two sets of disjoint sorted intervals, ns."""
    a_s, a_e = a
    b_s, b_e = b
    if a_s.size == 0 or b_s.size == 0:
        return 0
    # For each interval of a, the b intervals that can overlap it form a contiguous run.
    lo = np.searchsorted(b_e, a_s, side="right")
    hi = np.searchsorted(b_s, a_e, side="left")
    counts = np.maximum(hi - lo, 0)
    if counts.sum() == 0:
        return 0
    ia = np.repeat(np.arange(a_s.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ib = np.repeat(lo, counts) + offsets
    inter = np.minimum(a_e[ia], b_e[ib]) - np.maximum(a_s[ia], b_s[ib])
    return int(np.clip(inter, 0, None).sum())


def clip(s: np.ndarray, e: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts of intervals (starts, ends) inside [lo, hi), empty ones dropped, ns."""
    s = np.clip(s, lo, hi)
    e = np.clip(e, lo, hi)
    keep = e > s
    return s[keep], e[keep]



def covered_ns(starts: np.ndarray, ends: np.ndarray, merged: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Length of each window [start, end) covered by a merged interval set, ns (vectorised over windows)."""
    starts = np.asarray(starts, np.int64)
    ends = np.asarray(ends, np.int64)
    us, ue = merged
    if us.size == 0:
        return np.zeros(starts.shape, np.int64)
    prefix = np.concatenate(([0], np.cumsum(ue - us)))

    def before(t: np.ndarray) -> np.ndarray:
        """Covered length before each time t."""
        i = np.searchsorted(us, t, side="right")
        last = np.maximum(i - 1, 0)
        inside = np.where(i > 0, np.clip(t - us[last], 0, ue[last] - us[last]), 0)
        return np.where(i > 0, prefix[last], 0) + inside

    return np.maximum(before(ends) - before(starts), 0).astype(np.int64)


def subtract(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Merged interval set ``a`` minus merged interval set ``b``, merged, ns."""
    (a_s, a_e), (b_s, b_e) = a, b
    if a_s.size == 0 or b_s.size == 0:
        return a_s, a_e
    points = np.unique(np.concatenate([a_s, a_e, b_s, b_e]))
    lo, hi = points[:-1], points[1:]
    keep = (covered_ns(lo, hi, a) == hi - lo) & (covered_ns(lo, hi, b) == 0)
    return merge_intervals(lo[keep], hi[keep])
