"""Expert placement planner: spread an MoE layer's experts over expert-parallel ranks evenly.

With expert parallelism each of ``R`` ranks holds some of the ``E`` experts and computes every token
routed to them; a step waits for the busiest rank, so the cost of imbalance is the ratio of the
largest rank load to the mean one (``max/mean``, 1.0 = perfectly even).

The default placement is contiguous: rank ``r`` holds experts ``r·E/R .. (r+1)·E/R - 1``. The plan
here follows the idea of DeepSeek's expert-parallel load balancer (EPLB), written from its
description:

1. *Replicate*: with a budget of ``B`` redundant slots, give one more replica, ``B`` times, to the
   expert whose load per replica is currently the largest (tokens are split evenly over replicas;
   an expert never gets more replicas than there are ranks).
2. *Pack*: every rank has ``ceil((E + B) / R)`` slots; take replicas from the heaviest to the
   lightest and put each on the least-loaded rank that has a free slot and does not hold that
   expert yet.
3. *Refine*: while swapping one replica of the busiest rank with one of another rank lowers the
   larger of the two ranks' loads, make the best such swap (equal slot counts make the greedy
   packing miss the optimum by several percent; a few swaps close most of that gap).

The planner returns the contiguous placement instead whenever its own would not lower the
predicted max/mean, so a plan is never worse than the default.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from torchscope.analyzers.moe.routing import Routing

__all__ = ["Placement", "PlacementPlan", "contiguous_placement", "balanced_placement", "plan_placement", "rank_loads",
           "placement_tables", "DEFAULT_EP_RANKS", "HOLDOUT_MIN_STEPS"]

#: Expert-parallel ranks assumed for the placement plan when neither an option nor the world size says.
DEFAULT_EP_RANKS = 8
#: Steps a layer needs for the holdout judgement (plan on the first half, judge on the second).
HOLDOUT_MIN_STEPS = 4


@dataclass(frozen=True)
class Placement:
    """Which experts each rank holds; a replicated expert's tokens are split evenly over its copies."""

    num_experts: int
    rank_experts: tuple[tuple[int, ...], ...]

    @property
    def num_ranks(self) -> int:
        """Number of expert-parallel ranks."""
        return len(self.rank_experts)

    @property
    def replicas(self) -> np.ndarray:
        """Copies of each expert across all ranks (int array of length E)."""
        out = np.zeros(self.num_experts, dtype=np.int64)
        for experts in self.rank_experts:
            np.add.at(out, np.asarray(experts, dtype=np.int64), 1)
        return out

    def share_matrix(self) -> np.ndarray:
        """E × R matrix: the share (0..1) of expert e's tokens that rank r computes."""
        reps = self.replicas
        mat = np.zeros((self.num_experts, self.num_ranks))
        for r, experts in enumerate(self.rank_experts):
            for e in experts:
                mat[e, r] += 1.0 / reps[e]
        return mat


@dataclass(frozen=True)
class PlacementPlan:
    """Default and balanced placement of one layer with the predicted rank loads of both."""

    before: Placement
    after: Placement
    load_before: np.ndarray  # tokens per rank, contiguous placement
    load_after: np.ndarray  # tokens per rank, planned placement
    replicated: tuple[int, ...]  # experts given extra copies, heaviest first

    @property
    def max_over_mean_before(self) -> float:
        """Busiest rank's load over the mean rank load, default placement."""
        return _max_over_mean(self.load_before)

    @property
    def max_over_mean_after(self) -> float:
        """Busiest rank's load over the mean rank load, planned placement."""
        return _max_over_mean(self.load_after)


def _max_over_mean(rank_load: np.ndarray) -> float:
    mean = float(np.mean(rank_load)) if len(rank_load) else 0.0
    return float(np.max(rank_load)) / mean if mean > 0 else 1.0


def rank_loads(placement: Placement, load: np.ndarray) -> np.ndarray:
    """Tokens per rank (…× R) for expert loads (…× E), e.g. a steps × E count matrix."""
    return np.asarray(load, dtype=np.float64) @ placement.share_matrix()


def contiguous_placement(num_experts: int, num_ranks: int) -> Placement:
    """Default placement: consecutive blocks of experts per rank (sizes differ by at most one)."""
    _check(num_experts, num_ranks)
    owner = (np.arange(num_experts) * num_ranks) // num_experts
    return Placement(num_experts, tuple(tuple(np.flatnonzero(owner == r).tolist()) for r in range(num_ranks)))


def balanced_placement(load: np.ndarray, num_ranks: int, redundant: int = 0) -> Placement:
    """Greedy EPLB-style placement of experts with ``redundant`` extra replica slots over ``num_ranks``."""
    load = np.asarray(load, dtype=np.float64)
    num_experts = len(load)
    _check(num_experts, num_ranks)
    if redundant < 0:
        raise ValueError(f"redundant must be >= 0, got {redundant}")
    replicas = np.ones(num_experts, dtype=np.int64)
    # 1. Replicate: a max-heap on load per replica.
    heap = [(-load[e], e) for e in range(num_experts)]
    heapq.heapify(heap)
    given = 0
    while given < redundant and heap:
        neg, e = heapq.heappop(heap)
        if replicas[e] >= num_ranks or -neg <= 0:
            continue  # cannot (or need not) replicate this one further; it leaves the heap
        replicas[e] += 1
        given += 1
        heapq.heappush(heap, (-load[e] / replicas[e], e))
    # 2. Pack: heaviest replicas first onto the least-loaded rank with a free slot.
    slots = math.ceil(int(replicas.sum()) / num_ranks)
    per_replica = load / replicas
    items = sorted(((per_replica[e], e) for e in range(num_experts) for _ in range(replicas[e])),
                   key=lambda item: (-item[0], item[1]))
    rank_load = np.zeros(num_ranks)
    held: list[list[int]] = [[] for _ in range(num_ranks)]
    for weight, e in items:
        best = -1
        for r in range(num_ranks):
            if len(held[r]) >= slots or e in held[r]:
                continue
            if best < 0 or rank_load[r] < rank_load[best]:
                best = r
        if best < 0:  # only ranks that already hold e have room: share that rank
            best = min((r for r in range(num_ranks) if len(held[r]) < slots), key=lambda r: rank_load[r])
        held[best].append(e)
        rank_load[best] += weight
    _refine_by_swaps(held, per_replica, rank_load)
    return Placement(num_experts, tuple(tuple(sorted(h)) for h in held))


def _refine_by_swaps(held: list[list[int]], per_replica: np.ndarray, rank_load: np.ndarray,
                     max_swaps: int | None = None) -> None:
    """Swap replicas between the busiest rank and another while that lowers the pair's larger load (in place)."""
    num_ranks = len(held)
    slots = max(len(h) for h in held)
    tolerance = 1e-9 * max(float(rank_load.sum()), 1.0)
    limit = max_swaps if max_swaps is not None else 4 * sum(len(h) for h in held)
    for _ in range(limit):
        ids = np.full((num_ranks, slots), -1, dtype=np.int64)
        for r, h in enumerate(held):
            ids[r, :len(h)] = h
        weight = np.where(ids >= 0, per_replica[np.maximum(ids, 0)], np.nan)
        top = int(np.argmax(rank_load))
        mine = ids[top][ids[top] >= 0]
        wa = per_replica[mine]
        # delta[i, r, j]: load leaving the busiest rank when its item i swaps with item j of rank r.
        delta = wa[:, None, None] - weight[None, :, :]
        pair_max = np.maximum(rank_load[top] - delta, rank_load[None, :, None] + delta)
        invalid = np.isnan(delta)
        invalid[:, top, :] = True
        # A swap must not leave two copies of one expert on a rank.
        invalid |= np.isin(ids, mine)[None, :, :]  # rank r's item already on the busiest rank
        on_rank = (ids[:, :, None] == mine[None, None, :]).any(axis=1)  # (R, i): busiest's item i already on r
        invalid |= on_rank.T[:, :, None]
        pair_max = np.where(invalid, np.inf, pair_max)
        i, r, j = np.unravel_index(int(np.argmin(pair_max)), pair_max.shape)
        if not pair_max[i, r, j] < rank_load[top] - tolerance:
            return
        a, b = held[top][i], held[r][j]
        held[top][i], held[r][j] = b, a
        moved = per_replica[a] - per_replica[b]
        rank_load[top] -= moved
        rank_load[r] += moved


def plan_placement(load: np.ndarray, num_ranks: int, redundant: int = 0) -> PlacementPlan:
    """Balanced placement for per-expert ``load`` (tokens) vs the contiguous default, never worse."""
    load = np.asarray(load, dtype=np.float64)
    before = contiguous_placement(len(load), num_ranks)
    after = balanced_placement(load, num_ranks, redundant)
    load_before = rank_loads(before, load)
    load_after = rank_loads(after, load)
    if np.max(load_after) >= np.max(load_before):
        after, load_after = before, load_before
    reps = after.replicas
    replicated = tuple(int(e) for e in sorted(np.flatnonzero(reps > 1), key=lambda e: (-load[e], e)))
    return PlacementPlan(before, after, load_before, load_after, replicated)


def _check(num_experts: int, num_ranks: int) -> None:
    if num_ranks < 1:
        raise ValueError(f"num_ranks must be >= 1, got {num_ranks}")
    if num_experts < num_ranks:
        raise ValueError(f"need at least one expert per rank: {num_experts} experts over {num_ranks} ranks")


def placement_tables(routing: Routing, num_ranks: int, redundant: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per layer × rank experts and tokens before/after, per layer summary) of the placement plan."""
    per_rank, summary = [], []
    for lr in routing.layers:
        ranks = min(num_ranks, lr.num_experts)
        if ranks < 2 or not len(lr.counts):
            continue
        total = lr.counts.sum(axis=0).astype(np.float64)
        plan = plan_placement(total, ranks, redundant)
        _, steps = lr.step_counts()
        step_before = rank_loads(plan.before, steps)
        step_after = rank_loads(plan.after, steps)
        holdout = float("nan")
        if len(steps) >= HOLDOUT_MIN_STEPS:  # plan on the first half of the steps, judge on the second half
            half = len(steps) // 2
            early = plan_placement(steps[:half].sum(axis=0).astype(np.float64), ranks, redundant)
            holdout = _mean_step_max_over_mean(rank_loads(early.after, steps[half:]))
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
