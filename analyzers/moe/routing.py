"""MoE routing as recorded: the run bundle's ``rank<N>.moe.jsonl`` stream read into per-layer tables.

The stream (``trace.streams["moe"]``, written by ``profiler/moe.py``) holds three kinds of lines:

- ``router``  one per router: layer, layer_index, num_experts, top_k, and the expert size
              (``expert_bytes``, or ``expert_params`` × ``param_bytes``) when known;
- ``counts``  one per step × phase × router: ``counts[e]`` = top-k assignments to expert ``e``,
              ``tokens``, optional ``weights`` (routing weight per expert) and ``calls`` (router
              calls summed into the line, 1 when absent);
- ``tokens``  optional sampled tokens: each sampled token's top-k expert ids.

Lines that cannot be used (no step, counts that are not finite numbers or do not have one entry per
expert) are skipped and counted (``Routing.skipped_rows``); expert ids outside ``0..E-1`` in sampled
tokens are left out. A layer with sampled tokens but no counts lines gets its counts rebuilt from the
samples, one row per step × phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = ["LayerRouting", "Routing", "routing_from_stream"]

#: Phase given to lines that name none.
_NO_PHASE = "all"
#: Sort key of layers without a layer index: after every indexed one.
_UNINDEXED = 1 << 30


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


# ------------------------------------------------------------------------------------- line records
@dataclass(frozen=True)
class _Router:
    """A ``router`` line: what the layer is (the last line of a layer wins)."""

    layer_index: int | None
    num_experts: int | None
    top_k: int | None
    expert_bytes: int | None


@dataclass(frozen=True)
class _CountsLine:
    """A usable ``counts`` line; ``order`` is its position in the stream (ties within a step)."""

    step: int
    order: int
    phase: str
    tokens: int | None
    counts: list[float]
    weights: list[float] | None
    calls: int


@dataclass(frozen=True)
class _TokensLine:
    """A usable ``tokens`` line: the sampled tokens' expert id lists, not yet checked against E."""

    step: int
    order: int
    phase: str
    experts: list


@dataclass
class _LayerLines:
    """What the stream says about one layer."""

    router: _Router | None = None
    counts_len: int | None = None  # length of the first usable counts line (E when no router says)
    counts: list[_CountsLine] = field(default_factory=list)
    tokens: list[_TokensLine] = field(default_factory=list)

    @property
    def num_experts(self) -> int | None:
        """Experts of the layer: the router's number, else the first counts line's length."""
        from_router = self.router.num_experts if self.router is not None else None
        return from_router or self.counts_len


# ------------------------------------------------------------------------------------- value parsing
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


def _phase(rec: Mapping) -> str:
    phase = rec.get("phase")
    return str(phase) if isinstance(phase, str) else _NO_PHASE


# ------------------------------------------------------------------------------------- line readers
def _router(rec: Mapping) -> _Router:
    size = _int_or_none(rec.get("expert_bytes"))
    if size is None:
        params, per = _int_or_none(rec.get("expert_params")), _int_or_none(rec.get("param_bytes"))
        size = params * per if params is not None and per is not None else None
    return _Router(_int_or_none(rec.get("layer_index")), _int_or_none(rec.get("num_experts")),
                   _int_or_none(rec.get("top_k")), size)


def _counts_line(rec: Mapping, order: int, lines: _LayerLines) -> _CountsLine | None:
    """The counts line, or None when it cannot be used (no step, bad counts, wrong length)."""
    counts = _numbers(rec.get("counts"))
    step = _int_or_none(rec.get("step"))
    if counts is None or step is None or not counts:
        return None
    if lines.counts_len is None:
        lines.counts_len = len(counts)
    num_experts = lines.num_experts
    if len(counts) != num_experts:
        return None
    weights = _numbers(rec.get("weights"))
    if weights is not None and len(weights) != num_experts:
        weights = None
    calls = _int_or_none(rec.get("calls"))
    return _CountsLine(step, order, _phase(rec), _int_or_none(rec.get("tokens")), counts, weights,
                       calls if calls and calls > 0 else 1)


def _tokens_line(rec: Mapping, order: int) -> _TokensLine | None:
    experts = _as_list(rec.get("experts"))
    step = _int_or_none(rec.get("step"))
    if experts is None or step is None:
        return None
    return _TokensLine(step, order, _phase(rec), experts)


def _read_lines(frame: pd.DataFrame) -> tuple[dict[str, _LayerLines], int]:
    """(layer -> its lines, lines skipped) of a moe stream frame."""
    types = frame["type"].astype(str).to_numpy()
    layers = frame["layer"].astype(str).to_numpy()
    records = frame.to_dict("records")
    by_layer: dict[str, _LayerLines] = {}
    for rec, typ, layer in zip(records, types, layers):
        if typ == "router":
            by_layer.setdefault(layer, _LayerLines()).router = _router(rec)
    skipped = 0
    for order, (rec, typ, layer) in enumerate(zip(records, types, layers)):
        if typ == "counts":
            lines = by_layer.setdefault(layer, _LayerLines())
            row = _counts_line(rec, order, lines)
            if row is None:
                skipped += 1
            else:
                lines.counts.append(row)
        elif typ == "tokens":
            sample = _tokens_line(rec, order)
            if sample is None:
                skipped += 1
            else:
                by_layer.setdefault(layer, _LayerLines()).tokens.append(sample)
    return by_layer, skipped


# ------------------------------------------------------------------------------------ layer tables
@dataclass(frozen=True)
class _CountsTable:
    """One layer's counts rows as arrays (``top_k`` as known or inferred)."""

    steps: np.ndarray
    phases: tuple[str, ...]
    tokens: np.ndarray
    counts: np.ndarray
    weights: np.ndarray | None
    calls: np.ndarray
    top_k: int | None


@dataclass(frozen=True)
class _TokenSamples:
    """One layer's sampled tokens whose ids are valid, each with its step and phase."""

    experts: tuple[tuple[int, ...], ...]
    phases: tuple[str, ...]
    steps: tuple[int, ...]


def _token_samples(samples: list[_TokensLine], num_experts: int) -> _TokenSamples:
    experts, phases, steps = [], [], []
    for line in samples:
        for tok in line.experts:
            ids = _expert_ids(tok, num_experts)
            if ids:
                experts.append(ids)
                phases.append(line.phase)
                steps.append(line.step)
    return _TokenSamples(tuple(experts), tuple(phases), tuple(steps))


def _table_from_counts(rows: list[_CountsLine], top_k: int | None) -> _CountsTable:
    """The counts lines as arrays; a missing top_k is inferred from assignments over tokens."""
    counts = np.clip(np.asarray([r.counts for r in rows], dtype=np.float64), 0, None).astype(np.int64)
    has_weights = all(r.weights is not None for r in rows)
    weights = np.asarray([r.weights for r in rows], dtype=np.float64) if has_weights else None
    tokens = np.asarray([r.tokens if r.tokens is not None else -1 for r in rows], dtype=np.int64)
    if top_k is None:
        known = tokens > 0
        if known.any():
            top_k = max(1, int(round(counts[known].sum() / tokens[known].sum())))
    if top_k is not None:  # a line without tokens: its assignments over top_k
        tokens = np.where(tokens >= 0, tokens, counts.sum(axis=1) // top_k)
    return _CountsTable(
        steps=np.asarray([r.step for r in rows], dtype=np.int64), phases=tuple(r.phase for r in rows),
        tokens=tokens, counts=counts, weights=weights, calls=np.asarray([r.calls for r in rows], dtype=np.int64),
        top_k=top_k)


def _table_from_samples(samples: list[_TokensLine], num_experts: int, top_k: int | None,
                        sampled: _TokenSamples) -> _CountsTable:
    """Counts rebuilt from sampled tokens, one row per step × phase (top_k: the first token's)."""
    keys = sorted({(line.step, line.phase) for line in samples})
    where = {key: i for i, key in enumerate(keys)}
    counts = np.zeros((len(keys), num_experts), np.int64)
    tokens = np.zeros(len(keys), np.int64)
    for line in samples:
        i = where[(line.step, line.phase)]
        for tok in line.experts:
            ids = _expert_ids(tok, num_experts)
            np.add.at(counts[i], list(ids), 1)
            tokens[i] += 1 if ids else 0
    if top_k is None and sampled.experts:
        top_k = len(sampled.experts[0])
    return _CountsTable(
        steps=np.asarray([k[0] for k in keys], dtype=np.int64), phases=tuple(k[1] for k in keys),
        tokens=tokens, counts=counts, weights=None, calls=np.ones(len(keys), np.int64), top_k=top_k)


def _layer_routing(layer: str, lines: _LayerLines, manifest_bytes: int | None) -> LayerRouting | None:
    """One layer's routing, or None when its number of experts cannot be told."""
    rows = sorted(lines.counts, key=lambda r: (r.step, r.order))
    samples = sorted(lines.tokens, key=lambda r: (r.step, r.order))
    num_experts = lines.num_experts if rows else (lines.router.num_experts if lines.router else None)
    if num_experts is None:  # tokens only, no router line: the largest id seen bounds E
        ids = [i for line in samples for tok in line.experts for i in _expert_ids(tok)]
        num_experts = int(max(ids)) + 1 if ids else 0
    if num_experts <= 0:
        return None
    router = lines.router or _Router(None, None, None, None)
    sampled = _token_samples(samples, num_experts)
    table = (_table_from_counts(rows, router.top_k) if rows
             else _table_from_samples(samples, num_experts, router.top_k, sampled))
    return LayerRouting(
        layer=layer, layer_index=router.layer_index if router.layer_index is not None else -1,
        num_experts=num_experts, top_k=table.top_k, steps=table.steps, phases=table.phases, tokens=table.tokens,
        counts=table.counts, weights=table.weights, calls=table.calls, token_samples=sampled.experts,
        token_sample_phases=sampled.phases, token_sample_steps=sampled.steps,
        expert_bytes=router.expert_bytes or manifest_bytes,
    )


def routing_from_stream(frame: pd.DataFrame | None, *, manifest: Mapping | None = None) -> Routing:
    """Parse a moe JSONL frame (one row per line) into per-layer count matrices and samples."""
    if frame is None or frame.empty or "type" not in frame.columns or "layer" not in frame.columns:
        return Routing(())
    manifest_bytes = None
    if manifest:
        manifest_bytes = _int_or_none((manifest.get("options") or {}).get("moe_expert_bytes"))
    by_layer, skipped = _read_lines(frame)
    out = [lr for layer, lines in by_layer.items() if lines.counts or lines.tokens
           if (lr := _layer_routing(layer, lines, manifest_bytes)) is not None]
    out.sort(key=lambda lr: (lr.layer_index if lr.layer_index >= 0 else _UNINDEXED, lr.layer))
    return Routing(tuple(out), skipped)
