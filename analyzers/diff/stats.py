"""The regression decision of `torchscope diff`: is NEW worse than BASE, beyond noise?

A sampled metric (per-step times, per-step energy, ...) regresses only when all three hold:

1. its relative change of the median exceeds ``threshold`` (default 5 %),
2. its absolute change of the median exceeds ``min_delta`` (in the metric's own unit), and
3. the change is statistically significant at ``alpha``: a one-sided Mann-Whitney U test when
   both sides have at least ``MIN_SAMPLES_MANN_WHITNEY`` samples, otherwise a percentile
   bootstrap interval of the difference of medians (``1 - 2*alpha`` two-sided, i.e. one-sided
   ``alpha``) that must exclude zero. With a single sample on a side nothing can be tested: the
   two thresholds decide alone (``method="single"``); that is the normal case for metrics measured
   once per run, such as peak memory.

Deterministic metrics (op and kernel counts, FLOPs, bytes, MoE expert counts) are compared
exactly, without a test: a difference is a change (with a direction, a regression or an
improvement) once it passes the same two thresholds, ``threshold`` and ``min_delta``, that a
sampled metric must pass. A list (tokens per expert) changes by its total absolute difference,
relative to the base's total. ``threshold=0`` and ``min_delta=0`` make any difference a change.

The p-value shown is that of the one-sided test in the direction the medians moved.

Verdicts: ``regression``, ``improvement``, ``changed`` (a deterministic change without a
direction), ``unchanged``, ``not_significant`` (over both thresholds but within noise), ``added``
/ ``removed`` (present on one side only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from torchscope.analyzers.report.json import to_jsonable

__all__ = [
    "Comparison",
    "compare_samples",
    "compare_samples_many",
    "compare_exact",
    "compare_presence",
    "adjust_p_values",
    "VERDICTS",
    "CHANGE_VERDICTS",
    "DEFAULT_THRESHOLD",
    "DEFAULT_ALPHA",
    "MIN_SAMPLES_MANN_WHITNEY",
    "BOOTSTRAP_RESAMPLES",
]

#: Relative change of the median below which a metric is "unchanged" (5 %).
DEFAULT_THRESHOLD = 0.05
#: Significance level of the one-sided tests.
DEFAULT_ALPHA = 0.05
#: Both sides need this many samples for the Mann-Whitney U test; fewer fall back to the bootstrap.
#: (With 5 vs 5 the smallest attainable one-sided p-value is 1/252 ≈ 0.004, well under alpha.)
MIN_SAMPLES_MANN_WHITNEY = 5
#: Resamples of the bootstrap interval; the generator is seeded so a diff is reproducible.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: Relative tolerance under which two deterministic values count as equal (float round-off only).
EXACT_RTOL = 1e-9

VERDICTS = ("regression", "improvement", "changed", "unchanged", "not_significant", "added", "removed")
#: Verdicts that count as a change for ``--fail-on change``.
CHANGE_VERDICTS = ("regression", "improvement", "changed", "added", "removed")


@dataclass(frozen=True)
class Comparison:
    """BASE vs NEW for one metric: medians (or exact values), change, uncertainty and verdict."""

    base: float | list | None
    new: float | list | None
    delta: float | None
    ratio: float | None
    interval: tuple[float, float] | None
    p_value: float | None
    method: str
    verdict: str
    n_base: int
    n_new: int

    def to_dict(self) -> dict:
        """Plain-JSON form (numbers, lists and None only; ``report.json.to_jsonable``: NaN/inf -> None)."""
        return to_jsonable({
            "base": self.base,
            "new": self.new,
            "delta": self.delta,
            "ratio": self.ratio,
            "interval": self.interval,
            "p_value": self.p_value,
            "method": self.method,
            "n_base": self.n_base,
            "n_new": self.n_new,
            "verdict": self.verdict,
        })


def compare_samples(
    base: Sequence[float] | np.ndarray,
    new: Sequence[float] | np.ndarray,
    *,
    direction: int = 1,
    threshold: float = DEFAULT_THRESHOLD,
    min_delta: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    with_interval: bool = True,
) -> Comparison:
    """Compare two samples of a noisy metric; ``direction`` +1: higher is worse, -1: lower is worse."""
    return compare_samples_many([base], [new], direction=[direction], threshold=threshold,
                                min_delta=[min_delta], alpha=alpha, with_interval=with_interval)[0]


def compare_samples_many(
    bases: Sequence[np.ndarray],
    news: Sequence[np.ndarray],
    *,
    direction: Sequence[int],
    threshold: float = DEFAULT_THRESHOLD,
    min_delta: Sequence[float],
    alpha: float = DEFAULT_ALPHA,
    with_interval: bool | Sequence[bool] = True,
) -> list[Comparison]:
    """`compare_samples` over many metrics at once (the Mann-Whitney tests run vectorised)."""
    count = len(bases)
    if isinstance(with_interval, bool):
        with_interval = [with_interval] * count
    bases = [np.asarray(b, dtype=np.float64) for b in bases]
    news = [np.asarray(n, dtype=np.float64) for n in news]
    p_values: list[float | None] = [None] * count
    methods = ["single"] * count
    # Mann-Whitney in one call per (n_base, n_new) shape: the per-kernel rows of a diff share a shape.
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, (b, n) in enumerate(zip(bases, news)):
        if min(b.size, n.size) >= MIN_SAMPLES_MANN_WHITNEY:
            shapes.setdefault((b.size, n.size), []).append(i)
    for idx in shapes.values():
        b_mat = np.vstack([bases[i] for i in idx])
        n_mat = np.vstack([news[i] for i in idx])
        sign = np.sign(np.median(n_mat, axis=1) - np.median(b_mat, axis=1))
        greater = stats.mannwhitneyu(n_mat, b_mat, alternative="greater", axis=1).pvalue
        less = stats.mannwhitneyu(n_mat, b_mat, alternative="less", axis=1).pvalue
        for j, i in enumerate(idx):
            # The p-value of the one-sided test in the direction the medians moved.
            p = greater[j] if sign[j] > 0 else less[j] if sign[j] < 0 else min(greater[j], less[j])
            p_values[i] = float(p) if np.isfinite(p) else 1.0
            methods[i] = "mann-whitney"
    out = []
    for i in range(count):
        b, n = bases[i], news[i]
        if b.size == 0 or n.size == 0:
            out.append(compare_presence(b.size > 0, n.size > 0, base=_median(b), new=_median(n),
                                        n_base=b.size, n_new=n.size))
            continue
        base_c, new_c = float(np.median(b)), float(np.median(n))
        delta = new_c - base_c
        ratio = new_c / base_c if base_c != 0 else (None if new_c == 0 else math.inf)
        interval = None
        if methods[i] != "mann-whitney" and min(b.size, n.size) >= 2:
            methods[i] = "bootstrap"
        if with_interval[i] and min(b.size, n.size) >= 2:
            interval = _bootstrap_interval(b, n, alpha)
        significant = _significant(methods[i], delta, p_values[i], interval, alpha)
        verdict = _verdict(base_c, new_c, delta, direction[i], threshold, min_delta[i], significant)
        out.append(Comparison(base_c, new_c, delta, ratio, interval, p_values[i], methods[i], verdict,
                              int(b.size), int(n.size)))
    return out


def compare_exact(base: float | list | None, new: float | list | None, *, direction: int = 0,
                  threshold: float = 0.0, min_delta: float = 0.0) -> Comparison:
    """Compare a deterministic value (a number, or a list such as per-expert counts); a change must pass both
    ``threshold`` (relative, a fraction) and ``min_delta`` (absolute, in the value's unit)."""
    if base is None or new is None:
        return compare_presence(base is not None, new is not None, base=base, new=new,
                                n_base=int(base is not None), n_new=int(new is not None))
    if isinstance(base, (list, tuple, np.ndarray)) or isinstance(new, (list, tuple, np.ndarray)):
        b = np.asarray(base, dtype=np.float64).ravel()
        n = np.asarray(new, dtype=np.float64).ravel()
        if b.shape != n.shape:
            return Comparison([float(x) for x in b], [float(x) for x in n], None, None, None, None, "exact",
                              "changed", 1, 1)
        # Delta of a distribution: the total absolute difference (for expert counts: tokens moved × 2).
        delta = float(np.abs(n - b).sum())
        same = bool(np.allclose(b, n, rtol=EXACT_RTOL, atol=0.0))
        total = float(np.abs(b).sum())
        verdict = "unchanged" if same else _verdict(total, total + delta, delta, 0, threshold, min_delta, True)
        return Comparison([float(x) for x in b], [float(x) for x in n], delta, None, None, None, "exact",
                          verdict, 1, 1)
    b, n = float(base), float(new)
    delta = n - b
    ratio = n / b if b != 0 else (None if n == 0 else math.inf)
    if math.isclose(b, n, rel_tol=EXACT_RTOL, abs_tol=0.0):
        verdict = "unchanged"
    else:  # the thresholds a sampled metric passes, with nothing to test: a deterministic value has no noise
        verdict = _verdict(b, n, delta, direction, threshold, min_delta, True)
    return Comparison(b, n, delta, ratio, None, None, "exact", verdict, 1, 1)


def compare_presence(in_base: bool, in_new: bool, *, base=None, new=None, n_base: int = 0,
                     n_new: int = 0) -> Comparison:
    """A metric found on one side only: ``added`` or ``removed`` (``unchanged`` when on neither)."""
    verdict = "added" if in_new and not in_base else "removed" if in_base and not in_new else "unchanged"
    return Comparison(_value(base), _value(new), None, None, None, None, "presence", verdict, n_base, n_new)


def adjust_p_values(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (None stays None): for gating many rows at once."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = list(p_values)
    if idx:
        adjusted = stats.false_discovery_control(np.array([p_values[i] for i in idx], dtype=np.float64))
        for i, p in zip(idx, adjusted):
            out[i] = float(p)
    return out


def decide(base_c: float, new_c: float, *, direction: int, threshold: float, min_delta: float,
           significant: bool) -> str:
    """The verdict from a change, the two thresholds and the outcome of the significance test."""
    return _verdict(base_c, new_c, new_c - base_c, direction, threshold, min_delta, significant)


def _verdict(base_c: float, new_c: float, delta: float, direction: int, threshold: float,
             min_delta: float, significant: bool) -> str:
    if delta == 0:
        return "unchanged"
    rel = abs(delta) / abs(base_c) if base_c != 0 else math.inf
    if rel <= threshold or abs(delta) <= min_delta:
        return "unchanged"
    if not significant:
        return "not_significant"
    if direction == 0:
        return "changed"
    return "regression" if delta * direction > 0 else "improvement"


def _significant(method: str, delta: float, p_value: float | None, interval: tuple[float, float] | None,
                 alpha: float) -> bool:
    if method == "mann-whitney":
        return p_value is not None and p_value < alpha
    if method == "bootstrap":
        if interval is None:
            return False
        return interval[0] > 0 if delta > 0 else interval[1] < 0
    return True  # a single measurement per side: the thresholds decide alone (documented above)


def _bootstrap_interval(base: np.ndarray, new: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile bootstrap interval (two-sided 1 - 2*alpha) of median(new) - median(base)."""
    if np.ptp(base) == 0 and np.ptp(new) == 0:  # no spread at all: the interval is the point
        d = float(new[0] - base[0])
        return (d, d)

    def stat(b: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(n, axis=axis) - np.median(b, axis=axis)

    res = stats.bootstrap((base, new), stat, vectorized=True, paired=False, n_resamples=BOOTSTRAP_RESAMPLES,
                          confidence_level=1.0 - 2.0 * alpha, method="percentile",
                          rng=np.random.default_rng(BOOTSTRAP_SEED))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def _value(value: object) -> float | list | None:
    """A side's value as Python numbers: a float, a list of floats, or None (missing or not finite)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(v) for v in value]
    v = float(value)
    return v if math.isfinite(v) else None
