"""MoE expert activation: load per layer × expert, imbalance, capacity drops, locality, what-ifs.

The analyzer ``moe``: reads the routing (``routing.py``: the run bundle's ``rank<N>.moe.jsonl``),
computes the tables below with the modules of this package and raises the findings of
``findings.py``:

- ``load.py``               load table per layer × expert (the heatmap), imbalance per layer and per
                            step, dead and unused experts;
- ``capacity.py``           static capacity drops and padding per capacity factor;
- ``locality.py``           access sequences, reuse distance, step-to-step load overlap;
- ``expert_cache.py``       the expert buffering what-if (hit rate per resident experts). When the run
                            has decode steps only those are replayed (offloading pays off where tokens
                            meet the experts one at a time); the finding is raised only for inference
                            routing, since training needs every expert's weights each step;
- ``expert_placement.py``   the placement plan over ``ep_ranks`` ranks (option; else the world size
                            when > 1; else ``DEFAULT_EP_RANKS``) with ``redundant_experts`` extra slots
                            (default: one per rank), judged per step on the recorded counts, and also
                            planned on the first half of the steps and judged on the second
                            (``holdout_step_max_over_mean_after``).

Findings (``findings.py``): token drops at the configured capacity factor (option ``capacity_factor``;
else ``DEFAULT_CAPACITY_FACTOR``, worded as a condition) or padding to trim; dead experts; load
imbalance with the replication plan; imbalance growing during training (aux loss); expert buffering.

Tables of the Result (one row per ...):

- ``expert_load``        layer × expert: assignments, share, load_over_mean, weight_sum/mean_weight
                         (when weights were recorded) — pivot layer × expert for the heatmap;
- ``imbalance``          layer: max_over_mean, cv, entropy_norm, step_max_over_mean_mean/_max,
                         step_idle_experts_mean, dead_experts, unused_experts, dead_expert_ids, ...;
- ``step_imbalance``     layer × counts line (step, phase): tokens, assignments, max_over_mean, cv,
                         entropy_norm, idle_experts;
- ``capacity``           layer × gating ("static" per capacity factor, "dynamic"): capacity_tokens_mean,
                         drop_rate, dropped, padding_waste, cf_for_1pct_drops, cf_for_no_drops;
- ``locality``           layer: accesses, reuse_distance_mean/_median/_p90, reuse_distance_over_experts,
                         step_load_correlation, hot_set_size, hot_set_overlap, step_gap_mean, access_source;
- ``cache_curves``       layer × policy × resident_experts (1..E): hit_rate;
- ``cache_sizing``       layer × policy: experts_needed (-1 when unreachable), reachable,
                         hit_rate_at_needed, best_possible_hit_rate, offloaded_experts, expert_bytes,
                         memory_freed_bytes;
- ``placement``          layer × rank: experts_before/_after (comma-separated ids), tokens_before/_after;
- ``placement_summary``  layer: ranks, redundant, replicated_experts, max_over_mean_before/_after (run
                         totals), step_max_over_mean_before/_after, holdout_step_max_over_mean_after.

Expert size for the memory numbers: option ``expert_bytes``; else a router line's
``expert_bytes`` (or ``expert_params`` × ``param_bytes``); else the manifest's
``options.moe_expert_bytes``. Unknown → memory columns are NaN and findings speak in experts.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.moe import expert_cache, expert_placement, findings
from torchscope.analyzers.moe.capacity import CAPACITY_FACTORS, DEFAULT_CAPACITY_FACTOR, capacity_table, pooled_capacity
from torchscope.analyzers.moe.load import imbalance_table, load_table, step_imbalance_table
from torchscope.analyzers.moe.locality import MAX_CACHE_ACCESSES, access_sequence, locality_table
from torchscope.analyzers.moe.routing import Routing, routing_from_stream

__all__ = ["analyze", "SUMMARY_KEYS"]

#: Every key the moe summary may hold -> what it is, with its unit.
SUMMARY_KEYS: dict[str, str] = {
    "moe_layers": "MoE layers (routers) with usable routing, count",
    "num_experts": "distinct expert counts of the layers, sorted list of counts",
    "top_k": "distinct top-k of the layers (where known), sorted list of counts",
    "phases": "phases of the counts lines (train, prefill, decode, all), sorted list of names",
    "steps": "distinct steps with routing over all layers, count",
    "skipped_rows": "moe stream lines that could not be used, count (only when some were)",
    "worst_layer": "layer with the highest max_over_mean over the run, name",
    "worst_max_over_mean": "that layer's busiest expert load over the mean expert load, ratio (1 = even)",
    "mean_entropy_norm": "mean over layers of the load entropy over log E, 0..1 (1 = even)",
    "dead_experts": "experts under DEAD_EXPERT_LOAD_FRACTION of their layer's mean load, count over layers",
    "capacity_factor": "capacity factor the drop and padding numbers assume (option, else DEFAULT_CAPACITY_FACTOR)",
    "drop_fraction_at_cf": "share of assignments dropped at capacity_factor, all layers pooled, 0..1",
    "padding_fraction_at_cf": "share of expert slots that are padding at capacity_factor, all layers pooled, 0..1",
    "cf_for_1pct_drops": "largest over layers of the capacity factor that drops <= 1% of assignments, factor",
    "cache_phase": "phase whose routing the buffering what-if replayed (all = every phase), name",
    "access_source": "where the replayed access sequences came from (tokens, counts), sorted list of names",
    "resident_experts_for_target": "GPU-resident experts needed for the target hit rate, text 'N of M'",
    "memory_freed_bytes": "GPU memory freed by offloading the other experts, bytes (NaN when expert size unknown)",
    "ep_ranks": "expert-parallel ranks of the placement plan, count",
    "redundant_experts": "redundant expert slots of the placement plan, count",
    "rank_max_over_mean_before": "busiest rank over the mean rank load per step, contiguous placement, ratio",
    "rank_max_over_mean_after": "busiest rank over the mean rank load per step, planned placement, ratio",
}


@register("moe", description="MoE expert load, imbalance, capacity drops, expert buffering and placement what-ifs",
          page="moe", summary_keys=SUMMARY_KEYS)
def analyze(
    trace: Trace,
    *,
    capacity_factor: float | None = None,
    capacity_factors: Sequence[float] = CAPACITY_FACTORS,
    target_hit_rate: float = expert_cache.DEFAULT_TARGET_HIT_RATE,
    expert_bytes: int | None = None,
    ep_ranks: int | None = None,
    redundant_experts: int | None = None,
    access_source: str = "auto",
    cache_phase: str | None = None,
    max_cache_accesses: int = MAX_CACHE_ACCESSES,
) -> Result:
    """Expert load, imbalance, capacity drop/padding, locality, buffering and placement what-ifs."""
    _check_options(target_hit_rate, ep_ranks, redundant_experts, capacity_factor)
    frame = trace.streams.get("moe") if trace.streams else None
    if frame is None or frame.empty:
        raise NotApplicable("no MoE routing recorded")
    routing = routing_from_stream(frame, manifest=trace.meta.manifest)
    if not routing.layers:
        raise NotApplicable("no MoE routing recorded (the moe stream has no usable counts or tokens lines)")

    phases = routing.phases
    if cache_phase is None and "decode" in phases:
        cache_phase = "decode"  # offloading matters where one token at a time meets the experts
    sequences: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for lr in routing.layers:
        seq, src = access_sequence(lr, source=access_source, phase=cache_phase, max_accesses=max_cache_accesses)
        sequences[lr.layer], sources[lr.layer] = seq, src

    world = trace.meta.world_size if trace.meta.world_size and trace.meta.world_size > 1 else None
    num_ranks = int(ep_ranks or world or expert_placement.DEFAULT_EP_RANKS)
    redundant = int(redundant_experts if redundant_experts is not None else num_ranks)

    imbalance = imbalance_table(routing)
    capacity = capacity_table(routing, capacity_factors)
    replayed: dict[str, expert_cache.CacheCurves] = {}
    curves, sizing = expert_cache.cache_tables(routing, sequences, target=target_hit_rate,
                                               expert_bytes=expert_bytes, replayed=replayed)
    locality = locality_table(routing, sequences, {k: c.reuse_distances for k, c in replayed.items()})
    locality["access_source"] = locality["layer"].map(sources)
    placement, placement_summary = expert_placement.placement_tables(routing, num_ranks, redundant)

    configured = capacity_factor if capacity_factor is not None else DEFAULT_CAPACITY_FACTOR
    known = capacity_factor is not None
    raised = [f for f in (
        findings.token_drops(routing, configured, known),
        findings.capacity_padding(routing, configured, known),
        findings.dead_experts(imbalance),
        findings.load_imbalance(imbalance, placement_summary, training="train" in phases),
        findings.imbalance_growing(routing),
        findings.expert_buffering(routing, sizing, target_hit_rate, cache_phase),
    ) if f is not None]

    summary = _summary(routing, imbalance, capacity, sizing, placement_summary, configured, cache_phase,
                       num_ranks, redundant, sources)
    tables = {
        "expert_load": load_table(routing), "imbalance": imbalance, "step_imbalance": step_imbalance_table(routing),
        "capacity": capacity, "locality": locality, "cache_curves": curves, "cache_sizing": sizing,
        "placement": placement, "placement_summary": placement_summary,
    }
    return Result(analyzer="moe", rank=trace.rank, tables=tables, summary=summary,
                  findings=tuple(_with_rank(f, trace.rank) for f in raised))


def _check_options(target_hit_rate: float, ep_ranks: int | None, redundant_experts: int | None,
                   capacity_factor: float | None) -> None:
    """ValueError naming the first option out of its range."""
    if not 0.0 < target_hit_rate <= 1.0:
        raise ValueError(f"target_hit_rate must lie in (0, 1], got {target_hit_rate!r}")
    if ep_ranks is not None and ep_ranks < 1:
        raise ValueError(f"ep_ranks must be >= 1, got {ep_ranks!r}")
    if redundant_experts is not None and redundant_experts < 0:
        raise ValueError(f"redundant_experts must be >= 0, got {redundant_experts!r}")
    if capacity_factor is not None and capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be > 0, got {capacity_factor!r}")


def _with_rank(finding: Finding, rank: int | None) -> Finding:
    return dataclasses.replace(finding, rank=rank)


def _summary(routing: Routing, imbalance: pd.DataFrame, capacity: pd.DataFrame, sizing: pd.DataFrame,
             placement_summary: pd.DataFrame, configured: float, cache_phase: str | None, num_ranks: int,
             redundant: int, sources: Mapping[str, str]) -> dict:
    """Headline numbers (keys in SUMMARY_KEYS); the tables hold the detail per layer."""
    out: dict[str, object] = {
        "moe_layers": len(routing.layers),
        "num_experts": sorted({lr.num_experts for lr in routing.layers}),
        "top_k": sorted({lr.top_k for lr in routing.layers if lr.top_k is not None}),
        "phases": list(routing.phases),
        "steps": int(len(np.unique(np.concatenate([lr.steps for lr in routing.layers])))),
    }
    if routing.skipped_rows:
        out["skipped_rows"] = routing.skipped_rows
    if len(imbalance):
        worst = imbalance.sort_values("max_over_mean", ascending=False).iloc[0]
        out["worst_layer"] = str(worst["layer"])
        out["worst_max_over_mean"] = float(worst["max_over_mean"])
        out["mean_entropy_norm"] = float(imbalance["entropy_norm"].mean())
        out["dead_experts"] = int(imbalance["dead_experts"].sum())
    if len(capacity):
        pooled = pooled_capacity(routing, configured)
        out["capacity_factor"] = float(configured)
        out["drop_fraction_at_cf"] = pooled["drop_rate"]
        out["padding_fraction_at_cf"] = pooled["padding_waste"]
        out["cf_for_1pct_drops"] = float(capacity["cf_for_1pct_drops"].max())
    if len(sizing):
        online = sizing[sizing["policy"].isin(("lru", "lfu"))]
        best = (online.sort_values(["reachable", "experts_needed"], ascending=[False, True])
                .groupby("layer").head(1))
        reachable = best[best["reachable"]]
        out["cache_phase"] = cache_phase or "all"
        out["access_source"] = sorted(set(sources.values()))
        needed, experts = int(reachable["experts_needed"].sum()), int(reachable["num_experts"].sum())
        out["resident_experts_for_target"] = f"{needed} of {experts}"
        out["memory_freed_bytes"] = float(reachable["memory_freed_bytes"].sum(min_count=1))
    if len(placement_summary):
        out["ep_ranks"] = num_ranks
        out["redundant_experts"] = redundant
        out["rank_max_over_mean_before"] = float(placement_summary["step_max_over_mean_before"].mean())
        out["rank_max_over_mean_after"] = float(placement_summary["step_max_over_mean_after"].mean())
    return out
