"""Temporal locality of expert use: the access sequence, reuse distance, step-to-step load overlap.

A layer's *access sequence* is the order in which its experts are needed (``expert_cache`` says how
it is built: sampled tokens when recorded, else counts expanded by even interleaving). Reuse
distance is the number of distinct other experts between two uses of one expert; between
consecutive steps we measure the correlation of the loads and the overlap of the hot sets (the
busiest ``HOT_SET_FRACTION`` of the experts, at least ``top_k``); and the mean number of steps
between an expert's active steps.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from torchscope.analyzers.moe import expert_cache
from torchscope.analyzers.moe.routing import LayerRouting, Routing

__all__ = ["access_sequence", "locality_table", "ACCESS_SOURCES", "HOT_SET_FRACTION", "MAX_CACHE_ACCESSES"]

#: Where an access sequence may come from: ``auto`` picks tokens when they cover the steps.
ACCESS_SOURCES = ("auto", "tokens", "counts")
#: Accesses per layer replayed by the buffering what-if (the most recent ones; counts are scaled).
MAX_CACHE_ACCESSES = 20_000
#: Share of a layer's experts (rounded up, at least top_k) that make up a step's hot set.
HOT_SET_FRACTION = 0.25


def access_sequence(lr: LayerRouting, *, source: str = "auto", phase: str | None = None,
                    max_accesses: int = MAX_CACHE_ACCESSES) -> tuple[np.ndarray, str]:
    """(expert access sequence, source used: "tokens" | "counts") of one layer, optionally one phase.

    ``auto`` replays the sampled tokens when they cover every step that has counts (in ``phase``),
    else the counts expanded by even interleaving; at most the last ``max_accesses`` token accesses
    are kept, counts are scaled down to fit.
    """
    if source not in ACCESS_SOURCES:
        raise ValueError(f"source must be auto, tokens or counts, got {source!r}")
    mask = np.ones(len(lr.steps), bool) if phase is None else np.asarray(lr.phases) == phase
    if source != "counts" and lr.token_samples:
        keep = [i for i, p in enumerate(lr.token_sample_phases) if phase is None or p == phase]
        covered = set(lr.steps[mask].tolist()) <= {lr.token_sample_steps[i] for i in keep}
        if source == "tokens" or (keep and covered):
            seq = expert_cache.token_access_sequence([lr.token_samples[i] for i in keep])
            return (seq[-max_accesses:] if max_accesses else seq), "tokens"
    return expert_cache.step_access_sequence(lr.counts[mask], max_accesses=max_accesses), "counts"


def _step_overlap(per_step: np.ndarray, hot_n: int) -> tuple[list[float], list[float]]:
    """(load correlation, hot-set Jaccard overlap) of each pair of consecutive steps that allows one."""
    corr, overlap = [], []
    for a, b in zip(per_step[:-1], per_step[1:]):
        if a.std() > 0 and b.std() > 0:
            corr.append(float(np.corrcoef(a, b)[0, 1]))
        if a.sum() and b.sum():
            ha = set(np.argsort(-a, kind="stable")[:hot_n].tolist())
            hb = set(np.argsort(-b, kind="stable")[:hot_n].tolist())
            overlap.append(len(ha & hb) / len(ha | hb))
    return corr, overlap


def _step_gaps(per_step: np.ndarray) -> np.ndarray:
    """Steps between consecutive active steps of each expert, all experts together."""
    active = per_step > 0
    gaps = []
    for e in range(per_step.shape[1]):
        on = np.flatnonzero(active[:, e])
        if len(on) > 1:
            gaps.append(np.diff(on))
    return np.concatenate(gaps) if gaps else np.zeros(0)


def locality_table(routing: Routing, sequences: Mapping[str, np.ndarray],
                   reuse: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Per layer: reuse distance in the access sequence, step-to-step load correlation and hot-set overlap.

    ``reuse`` may hold each layer's reuse distances already computed (``CacheCurves.reuse_distances``).
    """
    rows = []
    for lr in routing.layers:
        seq = sequences.get(lr.layer, np.zeros(0, np.int64))
        dist = (reuse or {}).get(lr.layer)
        if dist is None:
            dist = expert_cache.reuse_distances(seq) if len(seq) else np.zeros(0, np.int64)
        reused = dist[dist >= 0]
        _, per_step = lr.step_counts()
        hot_n = max(lr.top_k or 1, math.ceil(lr.num_experts * HOT_SET_FRACTION))
        corr, overlap = _step_overlap(per_step, hot_n)
        gaps = _step_gaps(per_step)
        rows.append({
            "layer": lr.layer, "layer_index": lr.layer_index, "accesses": int(len(seq)),
            "reuse_distance_mean": float(reused.mean()) if len(reused) else float("nan"),
            "reuse_distance_median": float(np.median(reused)) if len(reused) else float("nan"),
            "reuse_distance_p90": float(np.percentile(reused, 90)) if len(reused) else float("nan"),
            # Uniform random routing gives (E - 1) / 2 on average; the smaller, the more locality.
            "reuse_distance_over_experts": float(reused.mean() / lr.num_experts) if len(reused) else float("nan"),
            "step_load_correlation": float(np.mean(corr)) if corr else float("nan"),
            "hot_set_size": int(hot_n),
            "hot_set_overlap": float(np.mean(overlap)) if overlap else float("nan"),
            "step_gap_mean": float(gaps.mean()) if len(gaps) else float("nan"),
        })
    return pd.DataFrame(rows)
