"""`torchscope diff BASE NEW` / `trace-diff BASE NEW`: a performance and energy regression gate.

Each side is one or more runs (trace files, folders of per-rank traces, run bundles, or a folder
holding several run bundles = repeated runs). For every run the metrics of `diff.metrics` are
taken over the selected steps (warm-up skipped by default); repeated runs pool their samples.
Each metric is then compared with `diff.stats`: every row, sampled or deterministic, changes
only beyond ``--threshold`` (relative) and ``--min-delta`` (absolute, per unit); noisy metrics must
also pass a one-sided significance test. ``--threshold 0`` compares the deterministic rows exactly.

What gates (``--gate``):
  ``headline``       (default) the headline metrics: step time, communication time, energy per step,
                     peak memory (device; host RSS on CPU-only runs), MoE imbalance/drop rate, and
                     the deterministic work counts;
  ``deterministic``  only the deterministic headline metrics (ops, kernels, FLOPs, bytes per step,
                     MoE tokens per expert): what our own CI gates on a shared CPU machine
                     (with ``--threshold 0``, so that one extra op per step trips it);
  ``all``            every row, per-kernel and per-operator ones too, with the p-values adjusted
                     for multiple comparisons (Benjamini-Hochberg; Bonferroni for bootstrap rows).

``--fail-on regression`` (default) exits 1 when a gated metric regressed; ``change`` also on any
other change (improvement, deterministic change, added/removed); ``never`` always exits 0.
Exit 2: bad input or usage.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.diff.metrics import Metric, RunMetrics, StepSelection, extract_run_metrics, merge_runs
from torchscope.analyzers.diff.stats import (
    CHANGE_VERDICTS, DEFAULT_ALPHA, DEFAULT_THRESHOLD, Comparison, adjust_p_values, compare_exact, compare_presence,
    compare_samples_many,
)
from torchscope.analyzers.core.trace import Trace, TraceSet
from torchscope.analyzers.report.json import to_jsonable

__all__ = [
    "DiffOptions", "DiffRow", "DiffReport", "SideInfo", "diff_paths", "diff_runs", "load_runs",
    "parse_min_delta", "DEFAULT_MIN_DELTA", "SCHEMA_VERSION", "GATES", "FAIL_ON",
]

#: Version of the JSON report layout (bump on incompatible changes).
SCHEMA_VERSION = 1
GATES = ("headline", "deterministic", "all")
FAIL_ON = ("regression", "change", "never")

#: Absolute change below which a metric is "unchanged", per unit (override with --min-delta).
#: Timings: 50 µs; memory: 1 MiB; energy: 1 mJ; ratios/fractions: 0.01 / 0.001.
DEFAULT_MIN_DELTA: Mapping[str, float] = {
    "ns": 50_000.0,
    "bytes": float(1 << 20),
    "mJ": 1.0,
    "ratio": 0.01,
    "fraction": 0.001,
}

#: Order in which headline metrics are listed (others follow alphabetically).
_HEADLINE_ORDER = (
    "step/time", "comm/time", "energy/per_step", "memory/peak_allocated", "memory/peak_host_rss",
    "moe/imbalance", "moe/drop_rate",
    "work/ops_per_step", "work/kernels_per_step", "work/flops_per_step", "work/op_bytes_per_step",
    "work/memcpy_bytes_per_step",
)
_GROUP_ORDER = ("step", "communication", "energy", "memory", "moe", "work", "phase", "gpu", "kernel", "operator")

_UNIT_SUFFIX = [
    (re.compile(r"^(ns)$"), "ns", 1.0), (re.compile(r"^(us|µs)$"), "ns", 1e3),
    (re.compile(r"^(ms)$"), "ns", 1e6), (re.compile(r"^(s)$"), "ns", 1e9),
    (re.compile(r"^(b|bytes?)$", re.I), "bytes", 1.0),
    (re.compile(r"^(kb)$", re.I), "bytes", 1e3), (re.compile(r"^(mb)$", re.I), "bytes", 1e6),
    (re.compile(r"^(gb)$", re.I), "bytes", 1e9), (re.compile(r"^(kib)$", re.I), "bytes", 1024.0),
    (re.compile(r"^(mib)$", re.I), "bytes", 1024.0**2), (re.compile(r"^(gib)$", re.I), "bytes", 1024.0**3),
    (re.compile(r"^(mj)$"), "mJ", 1.0), (re.compile(r"^(j)$", re.I), "mJ", 1e3),
    (re.compile(r"^(mJ)$"), "mJ", 1.0),
]


@dataclass(frozen=True)
class DiffOptions:
    """How to compare: thresholds, significance, steps, rank, what gates and what fails."""

    threshold: float = DEFAULT_THRESHOLD
    min_delta: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_DELTA))
    alpha: float = DEFAULT_ALPHA
    gate: str = "headline"
    fail_on: str = "regression"
    selection: StepSelection = StepSelection()
    rank: int | None = None


@dataclass(frozen=True)
class DiffRow:
    """One compared metric: what it is, whether it gates, and the comparison."""

    key: str
    group: str
    unit: str
    exact: bool
    headline: bool
    gated: bool
    direction: int
    comparison: Comparison

    @property
    def verdict(self) -> str:
        """The comparison's verdict."""
        return self.comparison.verdict

    def trips(self, fail_on: str) -> bool:
        """Whether this gated row fails the gate under ``fail_on``."""
        if not self.gated or fail_on == "never":
            return False
        if fail_on == "change":
            return self.verdict in CHANGE_VERDICTS
        return self.verdict == "regression"

    def to_dict(self) -> dict:
        """Plain-JSON form: key, grouping, and base/new/delta/ratio/interval/p_value/verdict."""
        return {"key": self.key, "group": self.group, "unit": self.unit, "exact": self.exact,
                "headline": self.headline, "gated": self.gated, **self.comparison.to_dict()}


@dataclass(frozen=True)
class SideInfo:
    """The runs of one side: where they came from, their rank and the steps used."""

    sources: tuple[str, ...]
    runs: tuple[RunMetrics, ...]

    @property
    def n_steps(self) -> int:
        """Steps compared over all runs of the side."""
        return sum(len(r.steps) for r in self.runs)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return {"sources": list(self.sources),
                "runs": [{"source": r.source, "rank": r.rank, "steps": list(r.steps), "notes": list(r.notes)}
                         for r in self.runs]}


@dataclass(frozen=True)
class DiffReport:
    """The outcome of a diff: every compared row, the options and the verdict."""

    base: SideInfo
    new: SideInfo
    rows: tuple[DiffRow, ...]
    options: DiffOptions

    @property
    def gated_rows(self) -> list[DiffRow]:
        """Rows that take part in the gate."""
        return [r for r in self.rows if r.gated]

    @property
    def failing_rows(self) -> list[DiffRow]:
        """Gated rows that fail under the report's ``fail_on`` (or regress, under ``never``)."""
        policy = "regression" if self.options.fail_on == "never" else self.options.fail_on
        return [r for r in self.rows if r.trips(policy)]

    @property
    def verdict(self) -> str:
        """"regression" when a gated metric regressed, else "changed" when one changed, else "ok"."""
        gated = self.gated_rows
        if any(r.verdict == "regression" for r in gated):
            return "regression"
        if any(r.verdict in CHANGE_VERDICTS for r in gated):
            return "changed"
        return "ok"

    @property
    def exit_code(self) -> int:
        """0 when the gate passes, 1 when it trips under ``options.fail_on``."""
        return 1 if any(r.trips(self.options.fail_on) for r in self.rows) else 0

    def row(self, key: str) -> DiffRow | None:
        """The row of metric ``key``, or None."""
        for r in self.rows:
            if r.key == key:
                return r
        return None

    def to_dict(self) -> dict:
        """The JSON report (``schema_version`` first), plain JSON by ``report.json.to_jsonable``."""
        opts = self.options
        return to_jsonable({
            "schema_version": SCHEMA_VERSION,
            "tool": "torchscope diff",
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "options": {
                "threshold": opts.threshold, "alpha": opts.alpha, "gate": opts.gate, "fail_on": opts.fail_on,
                "min_delta": dict(opts.min_delta), "rank": opts.rank,
                "steps": None if opts.selection.steps is None else list(opts.selection.steps),
                "warmup": opts.selection.warmup,
            },
            "base": self.base.to_dict(),
            "new": self.new.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
        })


# --- the diff ------------------------------------------------------------------------------------

def load_runs(paths: Sequence[str | os.PathLike], options: DiffOptions) -> SideInfo:
    """Load every run of one side and take its metrics (TraceError on unusable input)."""
    # deferred: keeps `import torchscope.analyzers.diff.model` light for the CLI parser
    from torchscope.analyzers.io.loader import load

    runs: list[RunMetrics] = []
    sources: list[str] = []
    for path in paths:
        for run_path in expand_repeated_runs(Path(path)):
            sources.append(str(run_path))
            trace = _pick_rank(load(run_path), options.rank, run_path)
            runs.append(extract_run_metrics(trace, options.selection))
    return SideInfo(tuple(sources), tuple(runs))


def expand_repeated_runs(path: Path) -> list[Path]:
    """A folder whose sub-folders are run bundles (and that holds no trace itself) → those bundles."""
    if not path.is_dir() or (path / "manifest.json").is_file():
        return [path]
    if any(p.is_file() and p.name.endswith((".json", ".json.gz")) for p in path.iterdir()):
        return [path]
    bundles = sorted(p for p in path.iterdir() if p.is_dir() and (p / "manifest.json").is_file())
    return bundles or [path]


def diff_paths(base: Sequence[str | os.PathLike], new: Sequence[str | os.PathLike],
               options: DiffOptions = DiffOptions()) -> DiffReport:
    """Load both sides and compare them."""
    return diff_runs(load_runs(base, options), load_runs(new, options), options)


def diff_runs(base: SideInfo, new: SideInfo, options: DiffOptions = DiffOptions()) -> DiffReport:
    """Compare the metrics of two sides (each one or more runs) and decide what regressed."""
    b_metrics, n_metrics = merge_runs(base.runs), merge_runs(new.runs)
    if not b_metrics and not n_metrics:
        raise TraceError(base.sources[0] if base.sources else "?", "no step or event to compare")
    keys = sorted(set(b_metrics) | set(n_metrics), key=lambda k: _sort_key(b_metrics.get(k) or n_metrics[k]))
    comparisons: dict[str, Comparison] = {}
    sampled_keys = []
    for key in keys:
        b, n = b_metrics.get(key), n_metrics.get(key)
        proto = b or n
        if proto.exact:
            if b is None or n is None:
                comparisons[key] = compare_presence(b is not None, n is not None,
                                                    base=b.value if b else None, new=n.value if n else None,
                                                    n_base=int(b is not None), n_new=int(n is not None))
            else:
                comparisons[key] = compare_exact(b.value, n.value, direction=proto.direction,
                                                 threshold=options.threshold,
                                                 min_delta=_min_delta(options, proto.unit))
        else:
            sampled_keys.append(key)
    gated = {k: _is_gated(b_metrics.get(k) or n_metrics[k], options.gate) for k in keys}
    results = compare_samples_many(
        [_samples(b_metrics.get(k)) for k in sampled_keys],
        [_samples(n_metrics.get(k)) for k in sampled_keys],
        direction=[(b_metrics.get(k) or n_metrics[k]).direction for k in sampled_keys],
        threshold=options.threshold,
        min_delta=[_min_delta(options, (b_metrics.get(k) or n_metrics[k]).unit) for k in sampled_keys],
        alpha=options.alpha,
        with_interval=[gated[k] for k in sampled_keys],
    )
    comparisons.update(zip(sampled_keys, results))
    if options.gate == "all":
        comparisons.update(_corrected(sampled_keys, comparisons, b_metrics, n_metrics, options))
    rows = []
    for key in keys:
        proto = b_metrics.get(key) or n_metrics[key]
        rows.append(DiffRow(key, proto.group, proto.unit, proto.exact, proto.headline, gated[key],
                            proto.direction, comparisons[key]))
    return DiffReport(base, new, tuple(rows), options)


def _corrected(keys: list[str], comparisons: Mapping[str, Comparison], b_metrics, n_metrics,
               options: DiffOptions) -> dict[str, Comparison]:
    """Gate-all mode: Mann-Whitney p-values adjusted (BH); bootstrap rows re-tested at alpha/m."""
    out = {}
    mwu = [k for k in keys if comparisons[k].method == "mann-whitney"]
    adjusted = adjust_p_values([comparisons[k].p_value for k in mwu])
    for key, p in zip(mwu, adjusted):
        c = comparisons[key]
        if c.verdict in ("regression", "improvement", "changed") and p >= options.alpha:
            out[key] = replace(c, p_value=p, verdict="not_significant")
        else:
            out[key] = replace(c, p_value=p)
    boot = [k for k in keys if comparisons[k].method == "bootstrap"
            and comparisons[k].verdict in ("regression", "improvement", "changed")]
    if boot:
        m = max(len(keys), 1)
        retested = compare_samples_many(
            [_samples(b_metrics.get(k)) for k in boot], [_samples(n_metrics.get(k)) for k in boot],
            direction=[(b_metrics.get(k) or n_metrics[k]).direction for k in boot], threshold=options.threshold,
            min_delta=[_min_delta(options, (b_metrics.get(k) or n_metrics[k]).unit) for k in boot],
            alpha=options.alpha / m, with_interval=True)
        out.update(zip(boot, retested))
    return out


def _samples(metric: Metric | None) -> np.ndarray:
    return np.empty(0) if metric is None else metric.samples


def _min_delta(options: DiffOptions, unit: str) -> float:
    return float(options.min_delta.get(unit, 0.0))


def _is_gated(metric: Metric, gate: str) -> bool:
    if gate == "all":
        return True
    if gate == "deterministic":
        return metric.exact and metric.headline
    return metric.headline


def _sort_key(metric: Metric) -> tuple:
    head = _HEADLINE_ORDER.index(metric.key) if metric.key in _HEADLINE_ORDER else len(_HEADLINE_ORDER)
    group = _GROUP_ORDER.index(metric.group) if metric.group in _GROUP_ORDER else len(_GROUP_ORDER)
    return (not metric.headline, head, group, metric.key)


def _pick_rank(data: Trace | TraceSet, rank: int | None, path: Path) -> Trace:
    if isinstance(data, Trace):
        if rank is not None and data.rank != rank:
            raise TraceError(path, f"holds rank {data.rank} only, not rank {rank}")
        return data
    if rank is None:
        return data[min(data.ranks)]
    if rank not in data.ranks:
        raise TraceError(path, f"has no rank {rank} (ranks: {', '.join(str(r) for r in sorted(data.ranks))})")
    return data[rank]


# --- command line ---------------------------------------------------------------------------------

def parse_min_delta(text: str) -> tuple[str, float]:
    """``--min-delta`` value → (unit, amount in that unit): "2ms" → ("ns", 2e6), "64MiB", "5J", "0.01"."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ]*)\s*", text)
    if not m:
        raise ValueError(f"not an amount: {text!r} (examples: 2ms, 64MiB, 5J, 0.01)")
    amount, suffix = float(m.group(1)), m.group(2)
    if not suffix:
        return ("ratio", amount)
    for pattern, unit, scale in _UNIT_SUFFIX:
        if pattern.match(suffix):
            return (unit, amount * scale)
    raise ValueError(f"unknown unit {suffix!r} in {text!r} (use ns/us/ms/s, B/KB/MB/GB/KiB/MiB/GiB, mJ/J)")
