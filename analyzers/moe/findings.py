"""The MoE findings, one function per rule, each id and threshold beside its rule.

- ``moe.token_drops``       static capacity drops tokens at the configured capacity factor;
- ``moe.capacity_padding``  no drops to speak of, but many expert slots are padding: lower the factor;
- ``moe.dead_experts``      experts that (almost) never get a token;
- ``moe.load_imbalance``    the busiest expert gets far more than the mean load, with the replication plan;
- ``moe.imbalance_growing`` imbalance grows during training (aux loss too weak);
- ``moe.expert_buffering``  a few GPU-resident experts would serve most uses (inference routing only).

A rule whose condition is not met returns None.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.moe.capacity import (
    DROP_RATE_TARGET, capacity_for_drop_rate, capacity_metrics, pooled_capacity,
)
from torchscope.analyzers.moe.load import (
    DEAD_EXPERT_LOAD_FRACTION, DEAD_EXPERT_MIN_ASSIGNMENTS, finite_stat, imbalance_metrics, imbalance_trend,
)
from torchscope.analyzers.moe.routing import LayerRouting, Routing
from torchscope.analyzers.report.units import format_bytes, format_ratio, format_share

__all__ = [
    "token_drops", "capacity_padding", "dead_experts", "load_imbalance", "imbalance_growing", "expert_buffering",
    "TOKEN_DROPS", "CAPACITY_PADDING", "DEAD_EXPERTS", "LOAD_IMBALANCE", "IMBALANCE_GROWING", "EXPERT_BUFFERING",
    "DROP_RATE_WARN", "DROP_RATE_CRITICAL", "MIN_CAPACITY_FACTOR", "PADDING_WASTE_WARN", "IMBALANCE_WARN",
    "IMBALANCE_CRITICAL", "PLACEMENT_MIN_GAIN", "TREND_RATIO_WARN", "TREND_MIN_STEPS", "TREND_MIN_FINAL",
    "BUFFER_MAX_RESIDENT_FRACTION",
]

_ANALYZER = "moe"
_PAGE = "moe"


# ------------------------------------------------------------------------------------------ capacity
TOKEN_DROPS = "moe.token_drops"
CAPACITY_PADDING = "moe.capacity_padding"
#: Share (0..1) of top-k assignments dropped at the configured capacity above which a finding is raised ...
DROP_RATE_WARN = 0.01
#: ... and above which it is critical (when the capacity factor is known, not assumed).
DROP_RATE_CRITICAL = 0.10
#: Never recommend a capacity factor below this (under 1.0 drops tokens even at a perfectly even load).
MIN_CAPACITY_FACTOR = 1.0
#: Share (0..1) of expert buffer slots that are padding above which lowering the capacity factor is advised.
PADDING_WASTE_WARN = 0.30


def _recommended_capacity(routing: Routing) -> float | None:
    """The smallest capacity factor meeting DROP_RATE_TARGET in every layer (None without counts)."""
    layers = [lr for lr in routing.layers if len(lr.counts)]
    if not layers:
        return None
    return max(MIN_CAPACITY_FACTOR, *(capacity_for_drop_rate(lr.counts, DROP_RATE_TARGET, lr.calls) for lr in layers))


def _worst_drop_layer(routing: Routing, cf: float) -> tuple[float, LayerRouting]:
    """(drop rate, layer) of the layer that drops the largest share at capacity factor ``cf``."""
    per_layer = [(capacity_metrics(lr.counts, cf, lr.calls)["drop_rate"], lr) for lr in routing.layers
                 if len(lr.counts)]
    return max(per_layer, key=lambda t: t[0])


def _condition(configured: float, known: bool) -> str:
    return "" if known else f"If the model uses a static expert capacity (factor {configured:g} assumed): "


def token_drops(routing: Routing, configured: float, known: bool) -> Finding | None:
    """Tokens dropped at the configured (or assumed) capacity factor: raise it or go dropless."""
    needed = _recommended_capacity(routing)
    pooled = pooled_capacity(routing, configured)
    if needed is None or not pooled["drop_rate"] > DROP_RATE_WARN:
        return None
    worst_rate, worst = _worst_drop_layer(routing, configured)
    at_needed = pooled_capacity(routing, needed)
    severity = "critical" if pooled["drop_rate"] > DROP_RATE_CRITICAL and known else "warning" if known else "info"
    return Finding(
        id=TOKEN_DROPS, analyzer=_ANALYZER, severity=severity, page=_PAGE,
        title=(f"{format_share(pooled['drop_rate'])} of expert assignments would be dropped at capacity factor "
               f"{configured:g} (worst layer {worst.layer}: {format_share(worst_rate)})"),
        evidence={"capacity_factor": configured, "drop_rate": round(pooled["drop_rate"], 4),
                  "worst_layer": worst.layer, "worst_layer_drop_rate": round(worst_rate, 4),
                  "cf_for_1pct_drops": needed, "padding_waste_at_that_cf": round(at_needed["padding_waste"], 4),
                  "drop_rate_target": DROP_RATE_TARGET},
        recommendation=(f"{_condition(configured, known)}raise the capacity factor from {configured:g} to {needed:g} "
                        f"(drops ≤ {format_share(DROP_RATE_TARGET)}, padding then "
                        f"{format_share(at_needed['padding_waste'])} of expert slots), or switch to dynamic (dropless) "
                        "gating with grouped GEMMs so that no token is dropped and no slot is padded."),
        estimated_gain=(f"{format_share(pooled['drop_rate'])} of token-expert assignments stop being dropped "
                        "(model quality, not speed; measured from the recorded per-step routing counts)"),
    )


def capacity_padding(routing: Routing, configured: float, known: bool) -> Finding | None:
    """Expert slots mostly padding while drops stay low: lower the capacity factor (token drops win)."""
    needed = _recommended_capacity(routing)
    pooled = pooled_capacity(routing, configured)
    if needed is None or pooled["drop_rate"] > DROP_RATE_WARN:
        return None
    if not (pooled["padding_waste"] > PADDING_WASTE_WARN and needed < configured):
        return None
    at_needed = pooled_capacity(routing, needed)
    return Finding(
        id=CAPACITY_PADDING, analyzer=_ANALYZER, severity="info", page=_PAGE,
        title=(f"{format_share(pooled['padding_waste'])} of expert buffer slots are padding at capacity factor "
               f"{configured:g}"),
        evidence={"capacity_factor": configured, "padding_waste": round(pooled["padding_waste"], 4),
                  "drop_rate": round(pooled["drop_rate"], 4), "cf_for_1pct_drops": needed,
                  "padding_waste_at_that_cf": round(at_needed["padding_waste"], 4)},
        recommendation=(f"{_condition(configured, known)}lower the capacity factor from {configured:g} to "
                        f"{needed:g}: drops stay ≤ {format_share(DROP_RATE_TARGET)} and padding falls to "
                        f"{format_share(at_needed['padding_waste'])}; or use dynamic gating (no padding at all)."),
        estimated_gain=(f"expert FFN work on padding falls from {format_share(pooled['padding_waste'])} to "
                        f"{format_share(at_needed['padding_waste'])} of slots (compute ∝ slots)"),
    )


# -------------------------------------------------------------------------------------- dead experts
DEAD_EXPERTS = "moe.dead_experts"
#: Layers listed by name in the finding's evidence.
_DEAD_EXAMPLE_LAYERS = 5


def dead_experts(imbalance: pd.DataFrame) -> Finding | None:
    """Experts under DEAD_EXPERT_LOAD_FRACTION of the mean load over the run (load.py's definition)."""
    dead = imbalance[imbalance["dead_experts"] > 0] if len(imbalance) else imbalance
    if not len(dead):
        return None
    total_dead = int(dead["dead_experts"].sum())
    examples = {str(r.layer): str(r.dead_expert_ids) for r in dead.head(_DEAD_EXAMPLE_LAYERS).itertuples()}
    return Finding(
        id=DEAD_EXPERTS, analyzer=_ANALYZER, severity="warning", page=_PAGE,
        title=(f"{total_dead} experts in {len(dead)} MoE layers received (almost) no tokens during the recorded "
               "steps"),
        evidence={"dead_experts": total_dead, "unused_experts": int(dead["unused_experts"].sum()),
                  "layers": int(len(dead)), "examples": examples,
                  "dead_below_share_of_mean_load": DEAD_EXPERT_LOAD_FRACTION,
                  "min_assignments_per_expert": DEAD_EXPERT_MIN_ASSIGNMENTS},
        recommendation=("Dead experts hold parameters that never train or serve: raise the auxiliary "
                        "load-balancing loss (or add a router z-loss), or re-initialise / prune these experts."),
        estimated_gain=(f"{total_dead} experts' parameters put back to use (measured: under "
                        f"{format_share(DEAD_EXPERT_LOAD_FRACTION)} of the mean expert load over the run)"),
    )


# ------------------------------------------------------------------------------------ load imbalance
LOAD_IMBALANCE = "moe.load_imbalance"
#: A layer whose busiest expert gets this many times the mean load (over the run) is imbalanced ...
IMBALANCE_WARN = 1.5
#: ... and this many times is critical.
IMBALANCE_CRITICAL = 3.0
#: Advise a new placement only when it lowers the busiest rank's load by at least this share (0..1).
PLACEMENT_MIN_GAIN = 0.10

_AUX_LOSS_ADVICE = ("Raise the auxiliary load-balancing loss coefficient (Hugging Face MoE models add it only "
                    "with output_router_logits=True; router_aux_loss_coef) to even out expert load.")


def load_imbalance(imbalance: pd.DataFrame, placement_summary: pd.DataFrame, *, training: bool) -> Finding | None:
    """The most imbalanced layer over IMBALANCE_WARN, with the placement plan when it helps enough."""
    # Judged on the run's total load per expert: a router preference that the balancing loss and the
    # placement can act on. Per-step max/mean (in the evidence) also carries the sampling noise of
    # small steps (a decode step of one token is always "imbalanced").
    if not len(imbalance):
        return None
    worst = imbalance.sort_values("max_over_mean", ascending=False).iloc[0]
    value = float(worst["max_over_mean"])
    if not (value > IMBALANCE_WARN):
        return None
    plan = placement_summary[placement_summary["layer"] == worst["layer"]] if len(placement_summary) \
        else placement_summary
    evidence = {"layer": str(worst["layer"]), "max_over_mean": round(value, 3),
                "step_max_over_mean": round(float(worst["step_max_over_mean_mean"]), 3),
                "cv": round(float(worst["cv"]), 3), "entropy_norm": round(float(worst["entropy_norm"]), 3),
                "hottest_expert": int(worst["hottest_expert"]),
                "imbalanced_layers": int((imbalance["max_over_mean"] > IMBALANCE_WARN).sum())}
    severity = "critical" if value > IMBALANCE_CRITICAL else "warning"
    aux = _AUX_LOSS_ADVICE if training else ""
    recommendation = aux or ("The placement planner found no placement that helps with the redundant slots given; "
                             "allow more redundant expert slots (option redundant_experts) to replicate the hot "
                             "experts.")
    gain = f"busiest expert {format_ratio(value)} the mean load over the run; even load = {format_ratio(1.0)}"
    if len(plan):
        p = plan.iloc[0]
        before, after = float(p["step_max_over_mean_before"]), float(p["step_max_over_mean_after"])
        evidence.update({"ep_ranks": int(p["ranks"]), "redundant_slots": int(p["redundant"]),
                         "rank_max_over_mean_before": round(before, 3), "rank_max_over_mean_after": round(after, 3),
                         "replicated_experts": str(p["replicated_experts"])})
        if before > 0 and (before - after) / before >= PLACEMENT_MIN_GAIN:
            reps = str(p["replicated_experts"]) or "none"
            recommendation = (f"With {int(p['ranks'])}-way expert parallelism, replicate experts {reps} of "
                              f"{worst['layer']} and place replicas largest-first on the least-loaded rank "
                              f"({int(p['redundant'])} redundant slots; see the placement table): the busiest rank "
                              f"goes from {format_ratio(before)} to {format_ratio(after)} the mean load."
                              + (" " + aux if aux else ""))
            gain = (f"expert-parallel critical path of {worst['layer']} −{format_share(1 - after / before)} "
                    f"(busiest rank {format_ratio(before)} → {format_ratio(after)} mean, per step, "
                    "from the recorded counts)")
    return Finding(
        id=LOAD_IMBALANCE, analyzer=_ANALYZER, severity=severity, page=_PAGE,
        title=f"MoE layer {worst['layer']}: busiest expert gets {format_ratio(value)} the mean load",
        evidence=evidence, recommendation=recommendation, estimated_gain=gain,
    )


# ------------------------------------------------------------------------------ imbalance growing
IMBALANCE_GROWING = "moe.imbalance_growing"
#: Imbalance growing during training: mean max/mean of the last third of steps over the first third.
TREND_RATIO_WARN = 1.15
#: ... judged only with at least this many training steps ...
TREND_MIN_STEPS = 6
#: ... and only when the last third's mean max/mean is at least this (a drift from 1.0 to 1.1 is harmless).
TREND_MIN_FINAL = 1.2


def imbalance_growing(routing: Routing) -> Finding | None:
    """The training layer whose per-step imbalance grows most from the first to the last third of steps."""
    worst = None
    for lr in routing.layers:
        if "train" not in lr.phases:  # only training moves the router
            continue
        _, per_step = lr.step_counts("train")
        if len(per_step) < TREND_MIN_STEPS:
            continue
        series = imbalance_metrics(per_step)["max_over_mean"]
        ratio, slope = imbalance_trend(series)
        final = finite_stat(np.mean, series[-max(1, len(series) // 3):])
        if np.isfinite(ratio) and final >= TREND_MIN_FINAL and (worst is None or ratio > worst[0]):
            worst = (ratio, slope, lr, len(per_step), final)
    if worst is None or not worst[0] >= TREND_RATIO_WARN:
        return None
    ratio, slope, lr, n, final = worst
    return Finding(
        id=IMBALANCE_GROWING, analyzer=_ANALYZER, severity="warning", page=_PAGE,
        title=(f"Expert imbalance grows during training: {lr.layer} {format_ratio(ratio)} "
               "from the first to the last third"),
        evidence={"layer": lr.layer, "trend_ratio": round(ratio, 3), "slope_per_step": round(slope, 5),
                  "last_third_max_over_mean": round(final, 3), "steps": n, "threshold": TREND_RATIO_WARN},
        recommendation=("Increase the auxiliary load-balancing loss coefficient (e.g. ×10: 0.001 → 0.01; Hugging "
                        "Face models add it only with output_router_logits=True) and watch max/mean load per step."),
        estimated_gain=("keeps expert load from drifting further; the placement and drop numbers above get worse "
                        "as it grows"),
    )


# ------------------------------------------------------------------------------------ expert buffering
EXPERT_BUFFERING = "moe.expert_buffering"
#: Advise buffering only when the target hit rate needs at most this share (0..1) of a layer's experts.
BUFFER_MAX_RESIDENT_FRACTION = 0.75


def _inference_cache(routing: Routing, cache_phase: str | None) -> bool:
    """True when the buffering what-if replayed inference routing (training needs every expert's weights)."""
    if cache_phase is not None:
        return cache_phase != "train"
    return any(p != "train" for p in routing.phases)


def expert_buffering(routing: Routing, sizing: pd.DataFrame, target: float, phase: str | None) -> Finding | None:
    """Inference routing that a few GPU-resident experts serve at the ``target`` hit rate (0..1)."""
    if not len(sizing) or not _inference_cache(routing, phase):
        return None
    online = sizing[sizing["policy"].isin(("lru", "lfu")) & sizing["reachable"]]
    if not len(online):
        return None
    best = online.sort_values(["experts_needed", "policy"]).groupby("layer", sort=False).head(1)
    best = best[best["experts_needed"] <= BUFFER_MAX_RESIDENT_FRACTION * best["num_experts"]]
    if not len(best):
        return None
    resident = int(best["experts_needed"].sum())
    total = int(best["num_experts"].sum())
    freed = float(best["memory_freed_bytes"].sum(min_count=1))
    policy_counts = best["policy"].value_counts()
    policy = str(policy_counts.index[0])
    example = best.iloc[0]
    memory = f", freeing {format_bytes(freed)} of GPU memory" if np.isfinite(freed) else ""
    where = f" in {phase}" if phase else ""
    return Finding(
        id=EXPERT_BUFFERING, analyzer=_ANALYZER, severity="info", page=_PAGE,
        title=(f"{resident} of {total} experts resident on the GPU would serve {format_share(target)} of expert uses"
               f"{where} ({len(best)} layers)"),
        evidence={"layers": int(len(best)), "resident_experts": resident, "experts": total,
                  "target_hit_rate": target, "policy": policy, "memory_freed_bytes": freed,
                  "example_layer": str(example["layer"]), "example_needed": int(example["experts_needed"]),
                  "example_num_experts": int(example["num_experts"])},
        recommendation=(f"Keep the {int(example['experts_needed'])} hottest of {int(example['num_experts'])} experts "
                        f"of {example['layer']} (and per layer as in the cache_sizing table) on the GPU with an "
                        f"{policy.upper()} expert cache and offload the rest to host memory{memory}."),
        estimated_gain=(f"{total - resident} experts' weights off the GPU at a {format_share(target)} hit rate "
                        "(replayed from the recorded routing; misses cost a host→GPU copy each)"),
    )
