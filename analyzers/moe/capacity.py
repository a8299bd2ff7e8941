"""Static expert capacity: tokens dropped and buffer slots padded at a capacity factor.

With capacity factor ``cf`` every expert takes at most ``ceil(cf × assignments / E)`` tokens per
dispatch; the excess is dropped and unused slots are padding. The recorder sums a step's router
calls into one line and says how many (``calls``): such a line counts as ``calls`` dispatches of its
mean counts (exact for one-token decode calls and for alike calls; otherwise drops are
under-stated). Dynamic (dropless) gating has neither drops nor padding.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from torchscope.analyzers.moe.routing import Routing

__all__ = [
    "capacity_metrics",
    "capacity_for_drop_rate",
    "capacity_table",
    "pooled_capacity",
    "CAPACITY_FACTORS",
    "DEFAULT_CAPACITY_FACTOR",
    "DROP_RATE_TARGET",
]

#: Capacity factors the drop/padding table reports.
CAPACITY_FACTORS = (1.0, 1.25, 2.0)
#: Capacity factor assumed configured when the model's own is unknown (a common training default).
DEFAULT_CAPACITY_FACTOR = 1.25
#: Drop rate (share of top-k assignments) the recommended capacity factor must reach
#: (the table's ``cf_for_1pct_drops``).
DROP_RATE_TARGET = 0.01
#: Bisection steps of the search for the capacity factor that meets a drop-rate target.
_CF_SEARCH_ITERS = 40
#: Grid (in capacity factor) the search rounds its answer up to.
_CF_GRID = 100
#: Round-off allowance of the ceilings (a capacity of exactly n slots must not become n + 1).
_CEIL_EPS = 1e-9


def _dispatches(c: np.ndarray, calls: np.ndarray | None) -> np.ndarray:
    """Router calls summed into each row (at least 1)."""
    return np.ones(len(c)) if calls is None else np.maximum(np.asarray(calls, dtype=np.float64), 1.0)


def capacity_metrics(counts: np.ndarray, capacity_factor: float, calls: np.ndarray | None = None) -> dict[str, float]:
    """Static capacity ceil(cf × assignments / E) per expert per dispatch: drop rate, padding waste (0..1).

    A row that sums ``calls`` router calls is taken as that many dispatches of its mean counts
    (exact when the calls were alike, and for one-token calls, which can never overflow).
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    n = _dispatches(c, calls)
    num_experts = c.shape[-1]
    per_call = c / n[:, None]
    assignments = per_call.sum(axis=-1)
    capacity = np.ceil(capacity_factor * assignments / num_experts - _CEIL_EPS)
    dropped = (np.clip(per_call - capacity[:, None], 0, None).sum(axis=-1) * n).sum()
    padding = (np.clip(capacity[:, None] - per_call, 0, None).sum(axis=-1) * n).sum()
    slots = (capacity * num_experts * n).sum()
    total = c.sum()
    return {
        "capacity_mean": float(np.average(capacity, weights=n)) if len(capacity) else 0.0,
        "dropped": float(dropped),
        "slots": float(slots),
        "drop_rate": float(dropped / total) if total else 0.0,
        "padding_waste": float(padding / slots) if slots else 0.0,
    }


def capacity_for_drop_rate(counts: np.ndarray, target: float = DROP_RATE_TARGET,
                           calls: np.ndarray | None = None) -> float:
    """Smallest capacity factor (on a 0.01 grid) whose drop rate is at most ``target``."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    n = _dispatches(c, calls)
    assignments = c.sum(axis=-1)
    live = assignments > 0
    if not live.any():
        return 1.0
    hi = float((c[live].max(axis=-1) * c.shape[-1] / assignments[live]).max())  # no drops at all
    lo = 0.0
    for _ in range(_CF_SEARCH_ITERS):
        mid = (lo + hi) / 2
        if capacity_metrics(c, mid, n)["drop_rate"] <= target:
            hi = mid
        else:
            lo = mid
    return math.ceil(hi * _CF_GRID - _CEIL_EPS) / _CF_GRID


def capacity_table(routing: Routing, factors: Sequence[float] = CAPACITY_FACTORS) -> pd.DataFrame:
    """Per layer × gating (static at each capacity factor, and dynamic): drop rate and padding waste."""
    rows = []
    for lr in routing.layers:
        if not len(lr.counts):
            continue
        needed = capacity_for_drop_rate(lr.counts, DROP_RATE_TARGET, lr.calls)
        lossless = capacity_for_drop_rate(lr.counts, 0.0, lr.calls)
        for cf in factors:
            m = capacity_metrics(lr.counts, cf, lr.calls)
            rows.append({"layer": lr.layer, "layer_index": lr.layer_index, "gating": "static",
                         "capacity_factor": float(cf), "capacity_tokens_mean": m["capacity_mean"],
                         "drop_rate": m["drop_rate"], "dropped": m["dropped"], "padding_waste": m["padding_waste"],
                         "cf_for_1pct_drops": needed, "cf_for_no_drops": lossless})
        rows.append({"layer": lr.layer, "layer_index": lr.layer_index, "gating": "dynamic",
                     "capacity_factor": float("nan"), "capacity_tokens_mean": float("nan"),
                     "drop_rate": 0.0, "dropped": 0.0, "padding_waste": 0.0,
                     "cf_for_1pct_drops": needed, "cf_for_no_drops": lossless})
    return pd.DataFrame(rows)


def pooled_capacity(routing: Routing, cf: float) -> dict[str, float]:
    """Drop rate and padding waste (0..1) over all layers at one capacity factor (each layer its own capacity)."""
    dropped = padding_slots = slots = total = 0.0
    for lr in routing.layers:
        if not len(lr.counts):
            continue
        m = capacity_metrics(lr.counts, cf, lr.calls)
        dropped += m["dropped"]
        total += float(lr.counts.sum())
        slots += m["slots"]
        padding_slots += m["padding_waste"] * m["slots"]
    return {"drop_rate": dropped / total if total else 0.0,
            "padding_waste": padding_slots / slots if slots else 0.0}
