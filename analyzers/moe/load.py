"""Expert load of an MoE layer: assignments per expert, imbalance per layer and per step, dead experts.

Imbalance of a load vector (one layer, over the run or one step): the busiest expert over the mean
(``max_over_mean``, 1 = even), the coefficient of variation (``cv``), and the entropy of the load
shares normalised by ``log E`` (``entropy_norm``, 1 = even); ``idle_experts`` got nothing. An expert
is *dead* when its load over the run is under ``DEAD_EXPERT_LOAD_FRACTION`` of the layer's mean
expert load, judged only once the layer routed ``DEAD_EXPERT_MIN_ASSIGNMENTS`` per expert; *unused*
ones got exactly zero.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from torchscope.analyzers.moe.routing import Routing

__all__ = [
    "imbalance_metrics",
    "load_table",
    "imbalance_table",
    "step_imbalance_table",
    "imbalance_trend",
    "finite_stat",
    "DEAD_EXPERT_LOAD_FRACTION",
    "DEAD_EXPERT_MIN_ASSIGNMENTS",
]

#: An expert is dead when its load over the run is below this share of the layer's mean expert load ...
DEAD_EXPERT_LOAD_FRACTION = 0.01
#: ... judged only when the layer routed at least this many assignments per expert on average
#: (with fewer, a zero may be chance).
DEAD_EXPERT_MIN_ASSIGNMENTS = 20


def imbalance_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of loads (…× E): max_over_mean, cv, entropy_norm (0..1), idle_experts; empty rows → NaN."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    num_experts = c.shape[-1]
    total = c.sum(axis=-1)
    mean = total / num_experts
    with np.errstate(invalid="ignore", divide="ignore"):
        max_over_mean = np.where(total > 0, c.max(axis=-1) / mean, np.nan)
        cv = np.where(total > 0, c.std(axis=-1) / mean, np.nan)
        p = c / total[..., None]
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        entropy = -plogp.sum(axis=-1)
        entropy_norm = np.where(total > 0, entropy / math.log(num_experts) if num_experts > 1 else 1.0, np.nan)
    return {
        "max_over_mean": max_over_mean,
        "cv": cv,
        "entropy_norm": entropy_norm,
        "idle_experts": (c == 0).sum(axis=-1),
    }


def finite_stat(func: Callable[[np.ndarray], float], values: Iterable[float]) -> float:
    """``func`` over the finite values (NaN when there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(func(arr)) if arr.size else float("nan")


def load_table(routing: Routing) -> pd.DataFrame:
    """One row per layer × expert: assignments over the run, share of the layer, routing weight."""
    parts = []
    for lr in routing.layers:
        total = lr.counts.sum(axis=0)
        layer_total = total.sum()
        part = pd.DataFrame({
            "layer": lr.layer,
            "layer_index": lr.layer_index,
            "expert": np.arange(lr.num_experts, dtype=np.int64),
            "assignments": total.astype(np.int64),
            "share": total / layer_total if layer_total else np.zeros(lr.num_experts),
            "load_over_mean": total / (layer_total / lr.num_experts) if layer_total else np.zeros(lr.num_experts),
        })
        if lr.weights is not None:
            wsum = lr.weights.sum(axis=0)
            part["weight_sum"] = wsum
            with np.errstate(invalid="ignore", divide="ignore"):
                part["mean_weight"] = np.where(total > 0, wsum / np.maximum(total, 1), np.nan)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["layer", "layer_index", "expert", "assignments", "share", "load_over_mean"])


def _dead_experts(total: np.ndarray, num_experts: int) -> tuple[np.ndarray, bool]:
    """(ids of the dead experts, whether the layer routed enough to judge) from the run's load per expert."""
    assignments = int(total.sum())
    judged = assignments >= DEAD_EXPERT_MIN_ASSIGNMENTS * num_experts
    if not judged:
        return np.zeros(0, np.int64), False
    return np.flatnonzero(total < DEAD_EXPERT_LOAD_FRACTION * (assignments / num_experts)), True


def imbalance_table(routing: Routing) -> pd.DataFrame:
    """One row per layer: imbalance of the run's total load and the mean/max of per-step imbalance."""
    rows = []
    for lr in routing.layers:
        total = lr.counts.sum(axis=0)
        whole = imbalance_metrics(total)
        _, per_step_counts = lr.step_counts()
        per_step = imbalance_metrics(per_step_counts) if len(per_step_counts) else None
        assignments = int(total.sum())
        dead, judged = _dead_experts(total, lr.num_experts)
        rows.append({
            "layer": lr.layer,
            "layer_index": lr.layer_index,
            "num_experts": lr.num_experts,
            "top_k": lr.top_k if lr.top_k is not None else -1,
            "steps": int(len(np.unique(lr.steps))),
            "tokens": int(lr.tokens[lr.tokens > 0].sum()),
            "assignments": assignments,
            "max_over_mean": float(whole["max_over_mean"][0]),
            "cv": float(whole["cv"][0]),
            "entropy_norm": float(whole["entropy_norm"][0]),
            "step_max_over_mean_mean": finite_stat(np.mean, per_step["max_over_mean"] if per_step else ()),
            "step_max_over_mean_max": finite_stat(np.max, per_step["max_over_mean"] if per_step else ()),
            "step_idle_experts_mean": float(np.mean(per_step["idle_experts"])) if per_step else float("nan"),
            "unused_experts": int((total == 0).sum()) if judged else 0,
            "dead_experts": int(len(dead)),
            "dead_expert_ids": ",".join(str(int(e)) for e in dead),
            "hottest_expert": int(np.argmax(total)) if assignments else -1,
        })
    return pd.DataFrame(rows)


def step_imbalance_table(routing: Routing) -> pd.DataFrame:
    """One row per layer × step × phase: tokens and imbalance of that step's load."""
    parts = []
    for lr in routing.layers:
        if not len(lr.counts):
            continue
        m = imbalance_metrics(lr.counts)
        parts.append(pd.DataFrame({
            "layer": lr.layer, "layer_index": lr.layer_index, "step": lr.steps, "phase": list(lr.phases),
            "tokens": lr.tokens, "assignments": lr.counts.sum(axis=1),
            "max_over_mean": m["max_over_mean"], "cv": m["cv"], "entropy_norm": m["entropy_norm"],
            "idle_experts": m["idle_experts"],
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def imbalance_trend(max_over_mean: np.ndarray) -> tuple[float, float]:
    """(last third mean / first third mean, least-squares slope per step) of a per-step imbalance series."""
    y = np.asarray(max_over_mean, dtype=np.float64)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return float("nan"), float("nan")
    third = max(1, len(y) // 3)
    first, last = float(np.mean(y[:third])), float(np.mean(y[-third:]))
    slope = float(np.polyfit(np.arange(len(y)), y, 1)[0])
    return (last / first if first > 0 else float("nan")), slope
