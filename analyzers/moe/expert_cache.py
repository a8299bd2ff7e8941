"""Expert buffering what-if: how many experts of an MoE layer must stay on the GPU.

A layer's *access sequence* is the order in which its experts are needed. Replaying it through a
cache of ``c`` GPU-resident experts (the rest offloaded to host memory) gives the hit rate: the
share of expert uses served without a transfer. We replay every size ``c = 1..E`` under three
policies:

- ``lru``     evict the expert used least recently;
- ``lfu``     evict the expert with the fewest uses so far (counts persist across evictions, ties go
              to the least recently used one);
- ``belady``  evict the expert whose next use is farthest in the future (the offline optimum, an
              upper bound no online policy beats).

All three are *stack algorithms* (Mattson et al., 1970): at every instant they rank all experts by a
priority that does not depend on the cache size, and a cache of size ``c`` holds the top ``c`` of
one shared stack. One pass over the sequence therefore yields the depth at which each access is
found, and the hit count of every size at once (a hit at size ``c`` is an access found at depth
``< c``). The brute-force per-size simulators below (``simulate``) exist to check that in tests.

Access sequences are built from the recorded routing (see ``token_access_sequence`` and
``step_access_sequence``):

- sampled token routing, when recorded: each token's top-k experts in token order;
- otherwise the per-step counts are expanded *deterministically*: expert ``e`` with ``n_e`` tokens in
  a step gets accesses at the evenly spaced positions ``(j + 0.5) / n_e`` of the step (``j < n_e``),
  merged in position order (ties by expert id). This keeps every step's counts exact and spreads an
  expert's tokens evenly over its step, i.e. it assumes no ordering within a batch, without random
  numbers, so the same run always gives the same curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from torchscope.analyzers.moe.routing import Routing

__all__ = [
    "POLICIES",
    "DEFAULT_TARGET_HIT_RATE",
    "CacheCurves",
    "hit_counts",
    "hit_rate_curves",
    "experts_needed",
    "simulate",
    "token_access_sequence",
    "step_access_sequence",
    "next_use_indices",
    "reuse_distances",
    "cache_tables",
]

#: Replacement policies replayed, online ones first.
POLICIES = ("lru", "lfu", "belady")
#: Hit rate the GPU-resident expert set must reach by default.
DEFAULT_TARGET_HIT_RATE = 0.95


@dataclass(frozen=True)
class CacheCurves:
    """Hits of a cache of every size 1..E under each policy, for one access sequence."""

    num_experts: int
    accesses: int
    distinct: int
    #: policy -> int64 array of length E: ``hits[policy][c - 1]`` = hits with ``c`` resident experts.
    hits: dict
    #: LRU stack depth of every access = its reuse distance (-1: first use); None unless LRU ran.
    reuse_distances: np.ndarray | None = None

    def hit_rate(self, policy: str) -> np.ndarray:
        """Hit rate (0..1) per cache size 1..E under ``policy``."""
        if self.accesses == 0:
            return np.zeros(self.num_experts)
        return self.hits[policy] / self.accesses

    def experts_needed(self, policy: str, target: float = DEFAULT_TARGET_HIT_RATE) -> int | None:
        """Smallest resident expert count whose hit rate reaches ``target``; None if none does."""
        return experts_needed(self.hit_rate(policy), target)


def next_use_indices(seq: np.ndarray) -> np.ndarray:
    """For each access, the index of the next access to the same expert (``len(seq)`` if none)."""
    seq = np.asarray(seq, dtype=np.int64)
    n = len(seq)
    nxt = np.full(n, n, dtype=np.int64)
    if n == 0:
        return nxt
    order = np.argsort(seq, kind="stable")  # grouped by expert, in time order within a group
    same = seq[order[1:]] == seq[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def _lru_depths(seq: Sequence[int]) -> np.ndarray:
    """Stack depth of every access under LRU (E = compulsory miss)."""
    stack: list[int] = []
    depths = np.empty(len(seq), dtype=np.int64)
    index = stack.index
    for t, x in enumerate(seq):
        try:
            d = index(x)
        except ValueError:
            depths[t] = -1
            stack.insert(0, x)
            continue
        depths[t] = d
        if d:
            del stack[d]
            stack.insert(0, x)
    return depths


def reuse_distances(seq: Iterable[int]) -> np.ndarray:
    """Per access, how many distinct other experts were used since the same expert's last use (-1: first use)."""
    return _lru_depths(np.asarray(seq, dtype=np.int64).ravel().tolist())


def _priority_depths(seq: Sequence[int], priority_after: Sequence[int], num_experts: int) -> np.ndarray:
    """Stack depth of every access for a priority stack algorithm.

    ``priority_after[t]`` is the priority the accessed expert holds from access ``t`` on (higher =
    kept longer). Other experts keep their priority until their own next access. The update is
    Mattson's: the accessed expert goes on top; down to its old depth, each position keeps the
    higher-priority of (what was there, what is carried down) and carries the other one on.
    """
    stack: list[int] = []
    prio = [0] * num_experts
    depths = np.empty(len(seq), dtype=np.int64)
    index = stack.index
    for t, x in enumerate(seq):
        try:
            d = index(x)
            depths[t] = d
        except ValueError:
            d = len(stack)
            depths[t] = -1
            stack.append(x)
        if d:
            carry = stack[0]
            stack[0] = x
            pc = prio[carry]
            for i in range(1, d):
                y = stack[i]
                py = prio[y]
                if py < pc:
                    stack[i] = carry
                    carry = y
                    pc = py
            stack[d] = carry
        prio[x] = priority_after[t]
    return depths


def _running_counts(arr: np.ndarray) -> np.ndarray:
    """For each access, how many times its expert has been accessed up to and including it."""
    n = len(arr)
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out
    order = np.argsort(arr, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(arr[order])) + 1]
    sizes = np.diff(np.r_[starts, n])
    out[order] = np.arange(n) - np.repeat(starts, sizes) + 1
    return out


def _depths_to_hits(depths: np.ndarray, num_experts: int) -> np.ndarray:
    """Hits for cache sizes 1..E from the access depths (-1 = never seen before)."""
    found = depths[depths >= 0]
    per_depth = np.bincount(found, minlength=num_experts)[:num_experts]
    return np.cumsum(per_depth).astype(np.int64)


def _check_sequence(seq: Iterable[int], num_experts: int) -> np.ndarray:
    arr = np.asarray(seq, dtype=np.int64).ravel()
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_experts):
        raise ValueError(f"expert ids must lie in [0, {num_experts}), got {arr.min()}..{arr.max()}")
    return arr


def hit_counts(seq: Iterable[int], num_experts: int, policies: Sequence[str] = POLICIES) -> CacheCurves:
    """Hits of every cache size 1..E for each policy, from one pass per policy over ``seq``."""
    arr = _check_sequence(seq, num_experts)
    n = len(arr)
    as_list = arr.tolist()
    hits: dict[str, np.ndarray] = {}
    reuse = None
    for policy in policies:
        if policy == "lru":
            depths = reuse = _lru_depths(as_list)
        elif policy == "lfu":
            # Priority = (uses so far, time of last use), packed into one int: counts dominate.
            uses = _running_counts(arr)
            prio = (uses * (n + 1) + np.arange(n)).tolist()
            depths = _priority_depths(as_list, prio, num_experts)
        elif policy == "belady":
            nxt = next_use_indices(arr)
            # Sooner next use = higher priority; never used again: lowest, ties by expert id.
            prio_arr = -nxt
            never = nxt >= n
            prio_arr[never] = -(n + arr[never])
            depths = _priority_depths(as_list, prio_arr.tolist(), num_experts)
        else:
            raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
        hits[policy] = _depths_to_hits(depths, num_experts)
    return CacheCurves(num_experts=num_experts, accesses=n, distinct=int(len(np.unique(arr))), hits=hits,
                       reuse_distances=reuse)


def hit_rate_curves(seq: Iterable[int], num_experts: int, policies: Sequence[str] = POLICIES) -> dict:
    """Hit rate (0..1) per cache size 1..E for each policy: {policy: array of length E}."""
    curves = hit_counts(seq, num_experts, policies)
    return {p: curves.hit_rate(p) for p in policies}


def experts_needed(hit_rate: np.ndarray, target: float = DEFAULT_TARGET_HIT_RATE) -> int | None:
    """Smallest cache size (1-based) whose hit rate reaches ``target``; None if no size does."""
    reached = np.flatnonzero(np.asarray(hit_rate) >= target - 1e-12)
    return int(reached[0]) + 1 if reached.size else None


def simulate(seq: Iterable[int], capacity: int, policy: str) -> int:
    """Hits of one cache of ``capacity`` experts under ``policy``, simulated directly (reference)."""
    arr = np.asarray(seq, dtype=np.int64).tolist()
    n = len(arr)
    nxt = next_use_indices(np.asarray(arr, dtype=np.int64)).tolist()
    cache: set[int] = set()
    count: dict[int, int] = {}
    last: dict[int, int] = {}
    next_use: dict[int, int] = {}
    hits = 0
    for t, x in enumerate(arr):
        if x in cache:
            hits += 1
        else:
            if len(cache) >= capacity:
                if policy == "lru":
                    victim = min(cache, key=lambda y: last[y])
                elif policy == "lfu":
                    victim = min(cache, key=lambda y: (count[y], last[y]))
                elif policy == "belady":
                    victim = max(cache, key=lambda y: next_use[y] if next_use[y] < n else n + y)
                else:
                    raise ValueError(f"unknown policy {policy!r}")
                cache.discard(victim)
            cache.add(x)
        count[x] = count.get(x, 0) + 1
        last[x] = t
        next_use[x] = nxt[t]
    return hits


def token_access_sequence(experts_per_token: Iterable[Sequence[int]]) -> np.ndarray:
    """Access sequence from sampled routing: each token's top-k expert ids, in token order."""
    flat: list[int] = []
    for ids in experts_per_token:
        flat.extend(int(i) for i in ids)
    return np.asarray(flat, dtype=np.int64)


def step_access_sequence(counts: np.ndarray, max_accesses: int | None = None) -> np.ndarray:
    """Access sequence from per-step counts (steps × E), each step expanded by even interleaving.

    With ``max_accesses`` set and exceeded, every step's counts are scaled down by one common factor
    (an expert with any token keeps at least one access) before the expansion.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim == 1:
        counts = counts[None, :]
    counts = np.clip(counts, 0, None)
    total = int(counts.sum())
    if max_accesses is not None and total > max_accesses > 0:
        scaled = np.floor(counts * (max_accesses / total)).astype(np.int64)
        counts = np.where(counts > 0, np.maximum(scaled, 1), 0)
    steps, num_experts = counts.shape
    flat = counts.ravel()
    n = int(flat.sum())
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cell = np.repeat(np.arange(flat.size), flat)
    step = cell // num_experts
    expert = cell % num_experts
    starts = np.cumsum(flat) - flat
    j = np.arange(n) - np.repeat(starts, flat)
    position = step + (j + 0.5) / np.repeat(np.where(flat > 0, flat, 1), flat)
    order = np.lexsort((expert, position))
    return expert[order]


def cache_tables(routing: Routing, sequences: Mapping[str, np.ndarray], *,
                 target: float = DEFAULT_TARGET_HIT_RATE,
                 expert_bytes: int | None = None,
                 replayed: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hit-rate curves per layer × policy × resident experts, sizing per layer × policy at ``target``).

    Each layer's ``CacheCurves`` is also stored in ``replayed`` (layer -> curves) when a dict is given.
    Memory columns are in bytes (NaN when the expert size is unknown).
    """
    curve_parts, sizing = [], []
    for lr in routing.layers:
        seq = sequences.get(lr.layer)
        if seq is None or not len(seq):
            continue
        curves = hit_counts(seq, lr.num_experts)
        if replayed is not None:
            replayed[lr.layer] = curves
        size = expert_bytes if expert_bytes is not None else lr.expert_bytes
        for policy in POLICIES:
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
