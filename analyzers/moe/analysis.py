"""MoE expert activation: load per layer × expert, imbalance, capacity drops, locality, what-ifs.

Input is the run bundle's ``rank<N>.moe.jsonl`` stream (``trace.streams["moe"]``, written by
``profiler/moe.py``): ``router`` lines (layer, layer_index, num_experts, top_k), one ``counts`` line
per step × phase × router (``counts[e]`` = top-k assignments to expert ``e``) and optional sampled
``tokens`` lines (each sampled token's top-k expert ids).

What is computed (all pure functions on arrays / frames, times not involved):

- load table per layer × expert (the heatmap), imbalance per layer and per step: busiest expert over
  the mean (``max_over_mean``, 1 = even), coefficient of variation, entropy of the load shares
  normalised by ``log E`` (1 = even), idle experts in a step, dead experts (under 1% of the mean
  expert load over the run, judged once the layer routed enough tokens) and unused ones (zero);
- static capacity: with capacity factor ``cf`` every expert takes at most
  ``ceil(cf × assignments / E)`` tokens per dispatch; the excess is dropped and unused slots are
  padding. The recorder sums a step's router calls into one line and says how many (``calls``):
  such a line counts as ``calls`` dispatches of its mean counts (exact for one-token decode calls and
  for alike calls; otherwise drops are under-stated). Dynamic (dropless) gating has neither;
- temporal locality: reuse distance (distinct other experts between two uses of one expert) in the
  access sequence, load correlation and hot-set overlap between consecutive steps, mean steps
  between an expert's active steps;
- the expert buffering what-if (``analyzers.expert_cache``; its module docstring says how access
  sequences are built: sampled tokens when recorded, else counts expanded by even interleaving).
  When the run has decode steps only those are replayed (offloading pays off where tokens meet the
  experts one at a time); the finding is raised only for inference routing, since training needs
  every expert's weights each step;
- the placement plan (``analyzers.expert_placement``) over ``ep_ranks`` ranks (option; else the
  world size when > 1; else ``DEFAULT_EP_RANKS``) with ``redundant_experts`` extra slots (default:
  one per rank), judged per step on the recorded counts, and also planned on the first half of the
  steps and judged on the second (``holdout_step_max_over_mean_after``).

Findings: token drops at the configured capacity factor (option ``capacity_factor``; else
``DEFAULT_CAPACITY_FACTOR``, worded as a condition) or padding to trim; dead experts; load imbalance
with the replication plan; imbalance growing during training (aux loss); expert buffering.

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
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from torchscope.analyzers.moe import expert_cache, expert_placement
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.trace import Trace

__all__ = [
    "analyze",
    "Routing",
    "LayerRouting",
    "routing_from_stream",
    "imbalance_metrics",
    "load_table",
    "imbalance_table",
    "step_imbalance_table",
    "capacity_metrics",
    "capacity_for_drop_rate",
    "capacity_table",
    "locality_table",
    "access_sequence",
    "cache_tables",
    "placement_tables",
    "imbalance_trend",
    "CAPACITY_FACTORS",
    "DEFAULT_CAPACITY_FACTOR",
    "DROP_RATE_WARN",
    "DROP_RATE_CRITICAL",
    "DROP_RATE_TARGET",
    "MIN_CAPACITY_FACTOR",
    "PADDING_WASTE_WARN",
    "IMBALANCE_WARN",
    "IMBALANCE_CRITICAL",
    "DEAD_EXPERT_MIN_ASSIGNMENTS",
    "DEAD_EXPERT_LOAD_FRACTION",
    "TREND_RATIO_WARN",
    "TREND_MIN_STEPS",
    "TREND_MIN_FINAL",
    "BUFFER_MAX_RESIDENT_FRACTION",
    "PLACEMENT_MIN_GAIN",
    "DEFAULT_EP_RANKS",
    "MAX_CACHE_ACCESSES",
]

#: Capacity factors the drop/padding table reports.
CAPACITY_FACTORS = (1.0, 1.25, 2.0)
#: Capacity factor assumed configured when the model's own is unknown (a common training default).
DEFAULT_CAPACITY_FACTOR = 1.25
#: Share of top-k assignments dropped at the configured capacity above which a finding is raised ...
DROP_RATE_WARN = 0.01
#: ... and above which it is critical.
DROP_RATE_CRITICAL = 0.10
#: Drop rate the recommended capacity factor must reach.
DROP_RATE_TARGET = 0.01
#: Never recommend a capacity factor below this (under 1.0 drops tokens even at a perfectly even load).
MIN_CAPACITY_FACTOR = 1.0
#: Share of expert buffer slots that are padding above which lowering the capacity factor is advised.
PADDING_WASTE_WARN = 0.30
#: A layer whose busiest expert gets this many times the mean load (mean over steps) is imbalanced ...
IMBALANCE_WARN = 1.5
#: ... and this many times is critical.
IMBALANCE_CRITICAL = 3.0
#: An expert is dead when its load over the run is below this share of the layer's mean expert load ...
DEAD_EXPERT_LOAD_FRACTION = 0.01
#: ... judged only when the layer routed at least this many assignments per expert on average
#: (with fewer, a zero may be chance).
DEAD_EXPERT_MIN_ASSIGNMENTS = 20
#: Imbalance growing during training: mean max/mean of the last third of steps over the first third.
TREND_RATIO_WARN = 1.15
#: ... judged only with at least this many training steps ...
TREND_MIN_STEPS = 6
#: ... and only when the last third's mean max/mean is at least this (a drift from 1.0 to 1.1 is harmless).
TREND_MIN_FINAL = 1.2
#: Advise buffering only when the target hit rate needs at most this share of a layer's experts.
BUFFER_MAX_RESIDENT_FRACTION = 0.75
#: Advise a new placement only when it lowers the busiest rank's load by at least this share.
PLACEMENT_MIN_GAIN = 0.10
#: Expert-parallel ranks assumed for the placement plan when neither an option nor the world size says.
DEFAULT_EP_RANKS = 8
#: Accesses per layer replayed by the buffering what-if (the most recent ones; counts are scaled).
MAX_CACHE_ACCESSES = 20_000
#: Bisection steps of the search for the capacity factor that meets a drop-rate target.
_CF_SEARCH_ITERS = 40


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class LayerRouting:
    """One router's records: counts per dispatch (rows × E) and the sampled token routing."""

    layer: str
    layer_index: int
    num_experts: int
    top_k: int | None
    steps: np.ndarray  # int64 per counts row
    phases: tuple[str, ...]  # per counts row
    tokens: np.ndarray  # int64 tokens per counts row
    counts: np.ndarray  # int64 rows × E
    weights: np.ndarray | None  # float64 rows × E (None when not recorded)
    calls: np.ndarray  # int64 router calls summed into each counts row (1 when not recorded)
    token_samples: tuple[tuple[int, ...], ...]  # sampled tokens' expert ids, in step order
    token_sample_phases: tuple[str, ...]  # phase of each sampled token
    token_sample_steps: tuple[int, ...] = ()  # step of each sampled token
    expert_bytes: int | None = None

    def step_counts(self, phase: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, steps × E counts) summed over the rows of each step (of ``phase`` if given)."""
        mask = np.ones(len(self.steps), bool) if phase is None else np.asarray(self.phases) == phase
        if not mask.any():
            return np.zeros(0, np.int64), np.zeros((0, self.num_experts), np.int64)
        steps, inverse = np.unique(self.steps[mask], return_inverse=True)
        out = np.zeros((len(steps), self.num_experts), np.int64)
        np.add.at(out, inverse, self.counts[mask])
        return steps, out


@dataclass(frozen=True)
class Routing:
    """All routers of one rank, in layer order, plus rows that could not be used."""

    layers: tuple[LayerRouting, ...]
    skipped_rows: int = 0

    @property
    def phases(self) -> tuple[str, ...]:
        """Phases that occur in any counts row, sorted."""
        return tuple(sorted({p for lr in self.layers for p in lr.phases}))


def _as_list(value: object) -> list | None:
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return None


def _numbers(value: object) -> list[float] | None:
    """A list of finite numbers, or None when ``value`` is not one."""
    items = _as_list(value)
    if items is None:
        return None
    try:
        out = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _expert_ids(value: object, num_experts: int | None = None) -> tuple[int, ...]:
    """The expert ids of one sampled token (ids outside 0..E-1 or not integers are left out)."""
    ids = []
    for v in _as_list(value) or ():
        try:
            i = int(v)
        except (TypeError, ValueError):
            continue
        if i >= 0 and (num_experts is None or i < num_experts):
            ids.append(i)
    return tuple(ids)


def _int_or_none(value: object) -> int | None:
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return int(value)
    except (TypeError, ValueError):
        return None


def routing_from_stream(frame: pd.DataFrame, *, manifest: Mapping | None = None) -> Routing:
    """Parse a moe JSONL frame (one row per line) into per-layer count matrices and samples."""
    if frame is None or frame.empty or "type" not in frame.columns or "layer" not in frame.columns:
        return Routing(())
    types = frame["type"].astype(str).to_numpy()
    layers = frame["layer"].astype(str).to_numpy()
    records = frame.to_dict("records")
    manifest_bytes = None
    if manifest:
        manifest_bytes = _int_or_none((manifest.get("options") or {}).get("moe_expert_bytes"))

    info: dict[str, dict] = {}
    for rec, typ, layer in zip(records, types, layers):
        if typ == "router":
            entry = info.setdefault(layer, {})
            entry.update({k: rec.get(k) for k in ("layer_index", "num_experts", "top_k")})
            size = _int_or_none(rec.get("expert_bytes"))
            if size is None:
                params, per = _int_or_none(rec.get("expert_params")), _int_or_none(rec.get("param_bytes"))
                size = params * per if params is not None and per is not None else None
            entry["expert_bytes"] = size

    rows: dict[str, list] = {}
    samples: dict[str, list] = {}
    skipped = 0
    for order, (rec, typ, layer) in enumerate(zip(records, types, layers)):
        if typ == "counts":
            counts = _numbers(rec.get("counts"))
            step = _int_or_none(rec.get("step"))
            if counts is None or step is None or not counts:
                skipped += 1
                continue
            entry = info.setdefault(layer, {})
            num_experts = _int_or_none(entry.get("num_experts")) or len(counts)
            entry.setdefault("num_experts", num_experts)
            if len(counts) != num_experts:
                skipped += 1
                continue
            weights = _numbers(rec.get("weights"))
            if weights is not None and len(weights) != num_experts:
                weights = None
            phase = rec.get("phase")
            phase = str(phase) if isinstance(phase, str) else "all"
            tokens = _int_or_none(rec.get("tokens"))
            calls = _int_or_none(rec.get("calls"))
            rows.setdefault(layer, []).append((step, order, phase, tokens, counts, weights,
                                               calls if calls and calls > 0 else 1))
        elif typ == "tokens":
            experts = _as_list(rec.get("experts"))
            step = _int_or_none(rec.get("step"))
            if experts is None or step is None:
                skipped += 1
                continue
            phase = rec.get("phase")
            phase = str(phase) if isinstance(phase, str) else "all"
            samples.setdefault(layer, []).append((step, order, phase, experts))

    out = []
    for layer in set(rows) | set(samples):
        entry = info.get(layer, {})
        layer_rows = sorted(rows.get(layer, []), key=lambda r: (r[0], r[1]))
        layer_samples = sorted(samples.get(layer, []), key=lambda r: (r[0], r[1]))
        num_experts = _int_or_none(entry.get("num_experts"))
        if num_experts is None:  # tokens only, no router line: the largest id seen bounds E
            ids = [i for _, _, _, ex in layer_samples for tok in ex for i in _expert_ids(tok)]
            num_experts = int(max(ids)) + 1 if ids else 0
        if num_experts <= 0:
            continue
        top_k = _int_or_none(entry.get("top_k"))
        token_ids: list[tuple[int, ...]] = []
        token_phases: list[str] = []
        token_steps: list[int] = []
        for step, _, phase, experts in layer_samples:
            for tok in experts:
                ids = _expert_ids(tok, num_experts)
                if ids:
                    token_ids.append(ids)
                    token_phases.append(phase)
                    token_steps.append(step)
        if layer_rows:
            counts = np.clip(np.asarray([r[4] for r in layer_rows], dtype=np.float64), 0, None).astype(np.int64)
            has_weights = all(r[5] is not None for r in layer_rows)
            weights = np.asarray([r[5] for r in layer_rows], dtype=np.float64) if has_weights else None
            tokens = np.asarray([r[3] if r[3] is not None else -1 for r in layer_rows], dtype=np.int64)
            if top_k is None:
                known = tokens > 0
                if known.any():
                    top_k = max(1, int(round(counts[known].sum() / tokens[known].sum())))
            if top_k is not None:
                tokens = np.where(tokens >= 0, tokens, counts.sum(axis=1) // top_k)
            steps = np.asarray([r[0] for r in layer_rows], dtype=np.int64)
            phases = tuple(r[2] for r in layer_rows)
            calls = np.asarray([r[6] for r in layer_rows], dtype=np.int64)
        else:  # only sampled tokens: counts rebuilt from the samples, one row per step × phase
            keys = sorted({(step, phase) for step, _, phase, _ in layer_samples})
            where = {key: i for i, key in enumerate(keys)}
            counts = np.zeros((len(keys), num_experts), np.int64)
            tokens = np.zeros(len(keys), np.int64)
            for step, _, phase, experts in layer_samples:
                i = where[(step, phase)]
                for tok in experts:
                    ids = _expert_ids(tok, num_experts)
                    np.add.at(counts[i], list(ids), 1)
                    tokens[i] += 1 if ids else 0
            weights = None
            steps = np.asarray([k[0] for k in keys], dtype=np.int64)
            phases = tuple(k[1] for k in keys)
            calls = np.ones(len(keys), np.int64)
            if top_k is None and token_ids:
                top_k = len(token_ids[0])
        index = _int_or_none(entry.get("layer_index"))
        out.append(LayerRouting(
            layer=layer, layer_index=index if index is not None else -1, num_experts=num_experts, top_k=top_k,
            steps=steps, phases=phases, tokens=tokens, counts=counts, weights=weights, calls=calls,
            token_samples=tuple(token_ids), token_sample_phases=tuple(token_phases),
            token_sample_steps=tuple(token_steps),
            expert_bytes=entry.get("expert_bytes") or manifest_bytes,
        ))
    out.sort(key=lambda lr: (lr.layer_index if lr.layer_index >= 0 else 1 << 30, lr.layer))
    return Routing(tuple(out), skipped)


# ---------------------------------------------------------------------------------------- imbalance
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


def imbalance_table(routing: Routing) -> pd.DataFrame:
    """One row per layer: imbalance of the run's total load and the mean/max of per-step imbalance."""
    rows = []
    for lr in routing.layers:
        total = lr.counts.sum(axis=0)
        whole = imbalance_metrics(total)
        _, per_step_counts = lr.step_counts()
        per_step = imbalance_metrics(per_step_counts) if len(per_step_counts) else None
        assignments = int(total.sum())
        judged = assignments >= DEAD_EXPERT_MIN_ASSIGNMENTS * lr.num_experts
        mean_load = assignments / lr.num_experts
        dead = np.flatnonzero(total < DEAD_EXPERT_LOAD_FRACTION * mean_load) if judged else np.zeros(0, np.int64)
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
            "step_max_over_mean_mean": _finite_stat(np.mean, per_step["max_over_mean"] if per_step else ()),
            "step_max_over_mean_max": _finite_stat(np.max, per_step["max_over_mean"] if per_step else ()),
            "step_idle_experts_mean": float(np.mean(per_step["idle_experts"])) if per_step else float("nan"),
            "unused_experts": int((total == 0).sum()) if judged else 0,
            "dead_experts": int(len(dead)),
            "dead_expert_ids": ",".join(str(int(e)) for e in dead),
            "hottest_expert": int(np.argmax(total)) if assignments else -1,
        })
    return pd.DataFrame(rows)


def _finite_stat(func, values) -> float:
    """``func`` over the finite values (NaN when there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(func(arr)) if arr.size else float("nan")


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


# ----------------------------------------------------------------------------------------- capacity
def capacity_metrics(counts: np.ndarray, capacity_factor: float, calls: np.ndarray | None = None) -> dict[str, float]:
    """Static capacity ceil(cf × assignments / E) per expert per dispatch: drop rate, padding waste (0..1).

    A row that sums ``calls`` router calls is taken as that many dispatches of its mean counts
    (exact when the calls were alike, and for one-token calls, which can never overflow).
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    n = np.ones(len(c)) if calls is None else np.maximum(np.asarray(calls, dtype=np.float64), 1.0)
    num_experts = c.shape[-1]
    per_call = c / n[:, None]
    assignments = per_call.sum(axis=-1)
    capacity = np.ceil(capacity_factor * assignments / num_experts - 1e-9)
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
    n = np.ones(len(c)) if calls is None else np.maximum(np.asarray(calls, dtype=np.float64), 1.0)
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
    return math.ceil(hi * 100 - 1e-9) / 100


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


# ----------------------------------------------------------------------------------------- locality
def access_sequence(lr: LayerRouting, *, source: str = "auto", phase: str | None = None,
                    max_accesses: int = MAX_CACHE_ACCESSES) -> tuple[np.ndarray, str]:
    """(expert access sequence, source used: "tokens" | "counts") of one layer, optionally one phase.

    ``auto`` replays the sampled tokens when they cover every step that has counts (in ``phase``),
    else the counts expanded by even interleaving; at most the last ``max_accesses`` token accesses
    are kept, counts are scaled down to fit.
    """
    if source not in ("auto", "tokens", "counts"):
        raise ValueError(f"source must be auto, tokens or counts, got {source!r}")
    mask = np.ones(len(lr.steps), bool) if phase is None else np.asarray(lr.phases) == phase
    if source != "counts" and lr.token_samples:
        keep = [i for i, p in enumerate(lr.token_sample_phases) if phase is None or p == phase]
        covered = set(lr.steps[mask].tolist()) <= {lr.token_sample_steps[i] for i in keep}
        if source == "tokens" or (keep and covered):
            seq = expert_cache.token_access_sequence([lr.token_samples[i] for i in keep])
            return (seq[-max_accesses:] if max_accesses else seq), "tokens"
    return expert_cache.step_access_sequence(lr.counts[mask], max_accesses=max_accesses), "counts"


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
        corr, overlap = [], []
        hot_n = max(lr.top_k or 1, math.ceil(lr.num_experts / 4))
        for a, b in zip(per_step[:-1], per_step[1:]):
            if a.std() > 0 and b.std() > 0:
                corr.append(float(np.corrcoef(a, b)[0, 1]))
            if a.sum() and b.sum():
                ha = set(np.argsort(-a, kind="stable")[:hot_n].tolist())
                hb = set(np.argsort(-b, kind="stable")[:hot_n].tolist())
                overlap.append(len(ha & hb) / len(ha | hb))
        active = per_step > 0
        gaps = []
        for e in range(lr.num_experts):
            on = np.flatnonzero(active[:, e])
            if len(on) > 1:
                gaps.append(np.diff(on))
        gaps_all = np.concatenate(gaps) if gaps else np.zeros(0)
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
            "step_gap_mean": float(gaps_all.mean()) if len(gaps_all) else float("nan"),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------- what-ifs
def cache_tables(routing: Routing, sequences: Mapping[str, np.ndarray], *,
                 target: float = expert_cache.DEFAULT_TARGET_HIT_RATE,
                 expert_bytes: int | None = None,
                 replayed: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hit-rate curves per layer × policy × resident experts, sizing per layer × policy at ``target``).

    Each layer's ``CacheCurves`` is also stored in ``replayed`` (layer -> curves) when a dict is given.
    """
    curve_parts, sizing = [], []
    for lr in routing.layers:
        seq = sequences.get(lr.layer)
        if seq is None or not len(seq):
            continue
        curves = expert_cache.hit_counts(seq, lr.num_experts)
        if replayed is not None:
            replayed[lr.layer] = curves
        size = expert_bytes if expert_bytes is not None else lr.expert_bytes
        for policy in expert_cache.POLICIES:
            rate = curves.hit_rate(policy)
            curve_parts.append(pd.DataFrame({
                "layer": lr.layer, "layer_index": lr.layer_index, "policy": policy,
                "resident_experts": np.arange(1, lr.num_experts + 1, dtype=np.int64), "hit_rate": rate,
            }))
            needed = curves.experts_needed(policy, target)
            offloaded = lr.num_experts - needed if needed is not None else 0
            sizing.append({
                "layer": lr.layer, "layer_index": lr.layer_index, "policy": policy,
                "num_experts": lr.num_experts, "accesses": curves.accesses, "target_hit_rate": target,
                "experts_needed": needed if needed is not None else -1,
                "reachable": needed is not None,
                "hit_rate_at_needed": float(rate[needed - 1]) if needed is not None else float(rate[-1]),
                "best_possible_hit_rate": float(rate[-1]),
                "offloaded_experts": offloaded,
                "expert_bytes": float(size) if size else float("nan"),
                "memory_freed_bytes": float(offloaded * size) if size else float("nan"),
            })
    curves_df = pd.concat(curve_parts, ignore_index=True) if curve_parts else pd.DataFrame(
        columns=["layer", "layer_index", "policy", "resident_experts", "hit_rate"])
    return curves_df, pd.DataFrame(sizing)


def placement_tables(routing: Routing, num_ranks: int, redundant: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per layer × rank experts and tokens before/after, per layer summary) of the placement plan."""
    per_rank, summary = [], []
    for lr in routing.layers:
        ranks = min(num_ranks, lr.num_experts)
        if ranks < 2 or not len(lr.counts):
            continue
        total = lr.counts.sum(axis=0).astype(np.float64)
        plan = expert_placement.plan_placement(total, ranks, redundant)
        _, steps = lr.step_counts()
        step_before = expert_placement.rank_loads(plan.before, steps)
        step_after = expert_placement.rank_loads(plan.after, steps)
        holdout = float("nan")
        if len(steps) >= 4:  # plan on the first half of the steps, judge on the second half
            half = len(steps) // 2
            early = expert_placement.plan_placement(steps[:half].sum(axis=0).astype(np.float64), ranks, redundant)
            holdout = _mean_step_max_over_mean(expert_placement.rank_loads(early.after, steps[half:]))
        for r in range(ranks):
            per_rank.append({
                "layer": lr.layer, "layer_index": lr.layer_index, "rank": r,
                "experts_before": ",".join(map(str, plan.before.rank_experts[r])),
                "experts_after": ",".join(map(str, plan.after.rank_experts[r])),
                "tokens_before": float(plan.load_before[r]), "tokens_after": float(plan.load_after[r]),
            })
        summary.append({
            "layer": lr.layer, "layer_index": lr.layer_index, "ranks": ranks, "redundant": redundant,
            "replicated_experts": ",".join(map(str, plan.replicated)),
            "max_over_mean_before": plan.max_over_mean_before,
            "max_over_mean_after": plan.max_over_mean_after,
            "step_max_over_mean_before": _mean_step_max_over_mean(step_before),
            "step_max_over_mean_after": _mean_step_max_over_mean(step_after),
            "holdout_step_max_over_mean_after": holdout,
        })
    return pd.DataFrame(per_rank), pd.DataFrame(summary)


def _mean_step_max_over_mean(rank_load: np.ndarray) -> float:
    """Mean over steps of (busiest rank / mean rank) for a steps × R load matrix."""
    if not len(rank_load):
        return float("nan")
    mean = rank_load.mean(axis=1)
    live = mean > 0
    return float(np.mean(rank_load[live].max(axis=1) / mean[live])) if live.any() else float("nan")


# ------------------------------------------------------------------------------------------- analyze
@register("moe", description="MoE expert load, imbalance, capacity drops, expert buffering and placement what-ifs",
          page="moe")
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
    if not 0.0 < target_hit_rate <= 1.0:
        raise ValueError(f"target_hit_rate must lie in (0, 1], got {target_hit_rate!r}")
    if ep_ranks is not None and ep_ranks < 1:
        raise ValueError(f"ep_ranks must be >= 1, got {ep_ranks!r}")
    if redundant_experts is not None and redundant_experts < 0:
        raise ValueError(f"redundant_experts must be >= 0, got {redundant_experts!r}")
    if capacity_factor is not None and capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be > 0, got {capacity_factor!r}")
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
    num_ranks = int(ep_ranks or world or DEFAULT_EP_RANKS)
    redundant = int(redundant_experts if redundant_experts is not None else num_ranks)

    loads = load_table(routing)
    imbalance = imbalance_table(routing)
    per_step = step_imbalance_table(routing)
    capacity = capacity_table(routing, capacity_factors)
    replayed: dict[str, expert_cache.CacheCurves] = {}
    curves, sizing = cache_tables(routing, sequences, target=target_hit_rate, expert_bytes=expert_bytes,
                                  replayed=replayed)
    locality = locality_table(routing, sequences, {k: c.reuse_distances for k, c in replayed.items()})
    locality["access_source"] = locality["layer"].map(sources)
    placement, placement_summary = placement_tables(routing, num_ranks, redundant)

    configured = capacity_factor if capacity_factor is not None else DEFAULT_CAPACITY_FACTOR
    findings = [f for f in (
        _capacity_finding(routing, configured, capacity_factor is not None),
        _dead_expert_finding(imbalance),
        _imbalance_finding(imbalance, placement_summary, training="train" in phases),
        _trend_finding(routing),
        _buffering_finding(sizing, target_hit_rate, cache_phase) if _inference_cache(routing, cache_phase) else None,
    ) if f is not None]
    findings = [_with_rank(f, trace.rank) for f in findings]

    summary = _summary(routing, imbalance, capacity, sizing, placement_summary, configured, cache_phase,
                       num_ranks, redundant, sources)
    tables = {
        "expert_load": loads, "imbalance": imbalance, "step_imbalance": per_step, "capacity": capacity,
        "locality": locality, "cache_curves": curves, "cache_sizing": sizing,
        "placement": placement, "placement_summary": placement_summary,
    }
    return Result(analyzer="moe", rank=trace.rank, tables=tables, summary=summary, findings=tuple(findings))


def _with_rank(finding: Finding, rank: int) -> Finding:
    return dataclasses.replace(finding, rank=rank)


def _summary(routing: Routing, imbalance: pd.DataFrame, capacity: pd.DataFrame, sizing: pd.DataFrame,
             placement_summary: pd.DataFrame, configured: float, cache_phase: str | None, num_ranks: int,
             redundant: int, sources: Mapping[str, str]) -> dict:
    """Headline numbers; the tables hold the detail per layer."""
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
        pooled = _pooled_capacity(routing, configured)
        out[f"drop_rate_at_cf{configured:g}"] = pooled["drop_rate"]
        out[f"padding_waste_at_cf{configured:g}"] = pooled["padding_waste"]
        out["cf_for_1pct_drops"] = float(capacity["cf_for_1pct_drops"].max())
    if len(sizing):
        online = sizing[sizing["policy"].isin(("lru", "lfu"))]
        best = online.sort_values(["reachable", "experts_needed"], ascending=[False, True]).groupby("layer").head(1)
        reachable = best[best["reachable"]]
        out["cache_phase"] = cache_phase or "all"
        out["access_source"] = sorted(set(sources.values()))
        out["resident_experts_for_target"] = f"{int(reachable['experts_needed'].sum())} of {int(reachable['num_experts'].sum())}"
        out["memory_freed_bytes"] = float(reachable["memory_freed_bytes"].sum(min_count=1))
    if len(placement_summary):
        out["ep_ranks"] = num_ranks
        out["redundant_experts"] = redundant
        out["rank_max_over_mean_before"] = float(placement_summary["step_max_over_mean_before"].mean())
        out["rank_max_over_mean_after"] = float(placement_summary["step_max_over_mean_after"].mean())
    return out


def _pooled_capacity(routing: Routing, cf: float) -> dict[str, float]:
    """Drop rate and padding waste over all layers at one capacity factor (each layer its own capacity)."""
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


# ------------------------------------------------------------------------------------------ findings
def _capacity_finding(routing: Routing, configured: float, known: bool) -> Finding | None:
    pooled = _pooled_capacity(routing, configured)
    per_layer = []
    for lr in routing.layers:
        if len(lr.counts):
            per_layer.append((capacity_metrics(lr.counts, configured, lr.calls)["drop_rate"], lr))
    if not per_layer:
        return None
    needed = max(MIN_CAPACITY_FACTOR, *(capacity_for_drop_rate(lr.counts, DROP_RATE_TARGET, lr.calls) for _, lr in per_layer))
    worst_rate, worst = max(per_layer, key=lambda t: t[0])
    condition = "" if known else f"If the model uses a static expert capacity (factor {configured:g} assumed): "
    if pooled["drop_rate"] > DROP_RATE_WARN:
        at_needed = _pooled_capacity(routing, needed)
        severity = "critical" if pooled["drop_rate"] > DROP_RATE_CRITICAL and known else "warning" if known else "info"
        return Finding(
            id="moe_token_drops", analyzer="moe", severity=severity, page="moe",
            title=(f"{100 * pooled['drop_rate']:.1f}% of expert assignments would be dropped at capacity factor "
                   f"{configured:g} (worst layer {worst.layer}: {100 * worst_rate:.1f}%)"),
            evidence={"capacity_factor": configured, "drop_rate": round(pooled["drop_rate"], 4),
                      "worst_layer": worst.layer, "worst_layer_drop_rate": round(worst_rate, 4),
                      "cf_for_1pct_drops": needed, "padding_waste_at_that_cf": round(at_needed["padding_waste"], 4),
                      "drop_rate_target": DROP_RATE_TARGET},
            recommendation=(f"{condition}raise the capacity factor from {configured:g} to {needed:g} (drops "
                            f"≤ {100 * DROP_RATE_TARGET:.0f}%, padding then {100 * at_needed['padding_waste']:.0f}% of "
                            "expert slots), or switch to dynamic (dropless) gating with grouped GEMMs so that no "
                            "token is dropped and no slot is padded."),
            estimated_gain=(f"{100 * pooled['drop_rate']:.1f}% of token-expert assignments stop being dropped "
                            "(model quality, not speed; measured from the recorded per-step routing counts)"),
        )
    if pooled["padding_waste"] > PADDING_WASTE_WARN and needed < configured:
        at_needed = _pooled_capacity(routing, needed)
        return Finding(
            id="moe_capacity_padding", analyzer="moe", severity="info", page="moe",
            title=(f"{100 * pooled['padding_waste']:.0f}% of expert buffer slots are padding at capacity factor "
                   f"{configured:g}"),
            evidence={"capacity_factor": configured, "padding_waste": round(pooled["padding_waste"], 4),
                      "drop_rate": round(pooled["drop_rate"], 4), "cf_for_1pct_drops": needed,
                      "padding_waste_at_that_cf": round(at_needed["padding_waste"], 4)},
            recommendation=(f"{condition}lower the capacity factor from {configured:g} to {needed:g}: drops stay "
                            f"≤ {100 * DROP_RATE_TARGET:.0f}% and padding falls to {100 * at_needed['padding_waste']:.0f}%; "
                            "or use dynamic gating (no padding at all)."),
            estimated_gain=(f"expert FFN work on padding falls from {100 * pooled['padding_waste']:.0f}% to "
                            f"{100 * at_needed['padding_waste']:.0f}% of slots (compute ∝ slots)"),
        )
    return None


def _dead_expert_finding(imbalance: pd.DataFrame) -> Finding | None:
    dead = imbalance[imbalance["dead_experts"] > 0] if len(imbalance) else imbalance
    if not len(dead):
        return None
    total_dead = int(dead["dead_experts"].sum())
    examples = {str(r.layer): str(r.dead_expert_ids) for r in dead.head(5).itertuples()}
    return Finding(
        id="moe_dead_experts", analyzer="moe", severity="warning", page="moe",
        title=(f"{total_dead} experts in {len(dead)} MoE layers received (almost) no tokens during the recorded "
               "steps"),
        evidence={"dead_experts": total_dead, "unused_experts": int(dead["unused_experts"].sum()),
                  "layers": int(len(dead)), "examples": examples,
                  "dead_below_share_of_mean_load": DEAD_EXPERT_LOAD_FRACTION,
                  "min_assignments_per_expert": DEAD_EXPERT_MIN_ASSIGNMENTS},
        recommendation=("Dead experts hold parameters that never train or serve: raise the auxiliary "
                        "load-balancing loss (or add a router z-loss), or re-initialise / prune these experts."),
        estimated_gain=(f"{total_dead} experts' parameters put back to use (measured: under "
                        f"{100 * DEAD_EXPERT_LOAD_FRACTION:g}% of the mean expert load over the run)"),
    )


def _imbalance_finding(imbalance: pd.DataFrame, placement_summary: pd.DataFrame, *,
                       training: bool) -> Finding | None:
    # Judged on the run's total load per expert: a router preference that the balancing loss and the
    # placement can act on. Per-step max/mean (in the evidence) also carries the sampling noise of
    # small steps (a decode step of one token is always "imbalanced").
    if not len(imbalance):
        return None
    worst = imbalance.sort_values("max_over_mean", ascending=False).iloc[0]
    value = float(worst["max_over_mean"])
    if not (value > IMBALANCE_WARN):
        return None
    plan = placement_summary[placement_summary["layer"] == worst["layer"]] if len(placement_summary) else placement_summary
    evidence = {"layer": str(worst["layer"]), "max_over_mean": round(value, 3),
                "step_max_over_mean": round(float(worst["step_max_over_mean_mean"]), 3),
                "cv": round(float(worst["cv"]), 3), "entropy_norm": round(float(worst["entropy_norm"]), 3),
                "hottest_expert": int(worst["hottest_expert"]),
                "imbalanced_layers": int((imbalance["max_over_mean"] > IMBALANCE_WARN).sum())}
    severity = "critical" if value > IMBALANCE_CRITICAL else "warning"
    aux = ("Raise the auxiliary load-balancing loss coefficient (Hugging Face MoE models add it only "
           "with output_router_logits=True; router_aux_loss_coef) to even out expert load.") if training else ""
    recommendation = aux or ("The placement planner found no placement that helps with the redundant slots given; "
                             "allow more redundant expert slots (option redundant_experts) to replicate the hot experts.")
    gain = f"busiest expert {value:.2f}× the mean load over the run; even load = 1.0×"
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
                              f"goes from {before:.2f}× to {after:.2f}× the mean load." + (" " + aux if aux else ""))
            gain = (f"expert-parallel critical path of {worst['layer']} −{100 * (1 - after / before):.0f}% "
                    f"(busiest rank {before:.2f}× → {after:.2f}× mean, per step, from the recorded counts)")
    return Finding(
        id="moe_load_imbalance", analyzer="moe", severity=severity, page="moe",
        title=f"MoE layer {worst['layer']}: busiest expert gets {value:.2f}× the mean load",
        evidence=evidence, recommendation=recommendation, estimated_gain=gain,
    )


def _trend_finding(routing: Routing) -> Finding | None:
    worst = None
    for lr in routing.layers:
        if "train" not in lr.phases:  # only training moves the router
            continue
        _, per_step = lr.step_counts("train")
        if len(per_step) < TREND_MIN_STEPS:
            continue
        series = imbalance_metrics(per_step)["max_over_mean"]
        ratio, slope = imbalance_trend(series)
        final = _finite_stat(np.mean, series[-max(1, len(series) // 3):])
        if np.isfinite(ratio) and final >= TREND_MIN_FINAL and (worst is None or ratio > worst[0]):
            worst = (ratio, slope, lr, len(per_step), final)
    if worst is None or not worst[0] >= TREND_RATIO_WARN:
        return None
    ratio, slope, lr, n, final = worst
    return Finding(
        id="moe_imbalance_growing", analyzer="moe", severity="warning", page="moe",
        title=f"Expert imbalance grows during training: {lr.layer} ×{ratio:.2f} from the first to the last third",
        evidence={"layer": lr.layer, "trend_ratio": round(ratio, 3), "slope_per_step": round(slope, 5),
                  "last_third_max_over_mean": round(final, 3), "steps": n, "threshold": TREND_RATIO_WARN},
        recommendation=("Increase the auxiliary load-balancing loss coefficient (e.g. ×10: 0.001 → 0.01; Hugging "
                        "Face models add it only with output_router_logits=True) and watch max/mean load per step."),
        estimated_gain="keeps expert load from drifting further; the placement and drop numbers above get worse as it grows",
    )


def _inference_cache(routing: Routing, cache_phase: str | None) -> bool:
    """True when the buffering what-if replayed inference routing (training needs every expert's weights)."""
    if cache_phase is not None:
        return cache_phase != "train"
    return any(p != "train" for p in routing.phases)


def _format_bytes(n: float) -> str:
    """Human-readable size (binary units)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _buffering_finding(sizing: pd.DataFrame, target: float, phase: str | None) -> Finding | None:
    if not len(sizing):
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
    memory = f", freeing {_format_bytes(freed)} of GPU memory" if np.isfinite(freed) else ""
    where = f" in {phase}" if phase else ""
    return Finding(
        id="moe_expert_buffering", analyzer="moe", severity="info", page="moe",
        title=(f"{resident} of {total} experts resident on the GPU would serve {100 * target:.0f}% of expert uses"
               f"{where} ({len(best)} layers)"),
        evidence={"layers": int(len(best)), "resident_experts": resident, "experts": total,
                  "target_hit_rate": target, "policy": policy, "memory_freed_bytes": freed,
                  "example_layer": str(example["layer"]), "example_needed": int(example["experts_needed"]),
                  "example_num_experts": int(example["num_experts"])},
        recommendation=(f"Keep the {int(example['experts_needed'])} hottest of {int(example['num_experts'])} experts "
                        f"of {example['layer']} (and per layer as in the cache_sizing table) on the GPU with an "
                        f"{policy.upper()} expert cache and offload the rest to host memory{memory}."),
        estimated_gain=(f"{total - resident} experts' weights off the GPU at a {100 * target:.0f}% hit rate "
                        "(replayed from the recorded routing; misses cost a host→GPU copy each)"),
    )
