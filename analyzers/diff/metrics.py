"""What `torchscope diff` compares: the metrics of one run, per step, taken from a loaded Trace.

A *run* is one rank of one trace or run bundle. Its steps are the project's one step-window
definition (``timeline.steps.step_windows``: each ``ProfilerStep#N`` from its start to the next
step's start, the last to its own end), after the selection of ``StepSelection`` (explicit step
numbers, or all but the first ``warmup`` steps); a trace without steps is one window, step -1. Every metric is one of

* **sampled** — one number per selected step (step time, phase time, GPU time per category,
  communication time, energy per step, MoE imbalance, per-kernel and per-operator time), or one
  number per run (peak memory): noisy, compared statistically;
* **exact** — a deterministic number per run (ops, kernels, FLOPs, operator bytes and memcpy bytes per step, MoE
  tokens per expert per step): compared exactly, a difference is a change.

*Headline* metrics gate by default; the per-phase, per-category, per-kernel and per-operator rows
are diagnostics. Kernels and operators are matched across runs by `normalize_name` (template
arguments, numbers and addresses removed), so one kernel compiled for two architectures or with a
different tile size still lines up.

GPU work is attributed to the step whose window holds the *launch* (the runtime call with the same
correlation id), not the kernel's own start: the GPU runs behind the CPU.

Definitions are shared with the analyzers, not re-implemented: GPU time categories are
``kernels.category_of``; peak memory comes from ``memory.device_memory_timeline`` / ``memory.host_rss``;
FLOPs and bytes per step are the roofline's operator cost model (``roofline.op_points``: the
profiler's FLOPs, else an estimate from the recorded shapes). MoE loads come from
``moe.routing.routing_from_stream``; imbalance is ``moe.load.imbalance_metrics``' busiest expert over
the mean (averaged over layers), the drop rate is ``moe.capacity.capacity_metrics`` at
``moe.capacity.DEFAULT_CAPACITY_FACTOR``.
Phase times are the training-loop analyzer's exclusive per-step breakdown (our phase annotations,
else phases inferred from operator names). GPU energy per step is the power analyzer's energy curve
(``power.nvml_samples`` / ``power.energy_curve``: the NVML energy counter, else integrated power)
taken at the step boundaries; host energy is the RAPL counter's increase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from torchscope.analyzers import kernels as kernels_analyzer
from torchscope.analyzers import memory as memory_analyzer
from torchscope.analyzers.moe.capacity import DEFAULT_CAPACITY_FACTOR, capacity_metrics
from torchscope.analyzers.moe.load import imbalance_metrics
from torchscope.analyzers.moe.routing import routing_from_stream
from torchscope.analyzers import power as power_analyzer
from torchscope.analyzers.roofline import analysis as roofline_analyzer
from torchscope.analyzers import training_loop as training_loop_analyzer
from torchscope.analyzers.core.args import decode_args
from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.core.trace import GPU_WORK_KINDS, Trace
from torchscope.analyzers.timeline.intervals import union_ns
from torchscope.analyzers.timeline.launches import launches
from torchscope.analyzers.timeline.steps import step_index, step_windows, windows_or_span

__all__ = [
    "Metric",
    "RunMetrics",
    "StepSelection",
    "extract_run_metrics",
    "merge_runs",
    "normalize_name",
    "parse_steps",
    "select_steps",
    "DEFAULT_WARMUP_STEPS",
    "MIN_STEPS_AFTER_WARMUP",
]

#: Steps skipped at the start of every run unless ``--steps`` picks steps explicitly.
DEFAULT_WARMUP_STEPS = 1
#: Warm-up steps are only skipped when at least this many steps remain (short traces keep all).
MIN_STEPS_AFTER_WARMUP = 2

#: CPU-side collectives of gloo jobs (torch 2.13 writes a user annotation "gloo:all_reduce").
_COMM_CPU = re.compile(r"^gloo:", re.IGNORECASE)

_TEMPLATE = re.compile(r"<[^<>]*>")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_NUMBER = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Metric:
    """One metric of one run (or of several repeated runs merged): samples or an exact value."""

    key: str
    group: str
    unit: str
    exact: bool
    headline: bool
    #: +1: higher is worse; -1: lower is worse; 0: no direction (any change is a "change").
    direction: int
    #: Sampled metrics: the samples (one per step, or one per run when ``per_run``).
    samples: np.ndarray = field(default_factory=lambda: np.empty(0))
    #: Exact metrics: the value (a number, or a list such as tokens per expert).
    value: float | list | None = None
    #: One sample per run (peak memory) rather than one per step.
    per_run: bool = False
    #: A per-name diagnostic row (kernel/operator): a run without the name counts as zero.
    fill_zero: bool = False


@dataclass(frozen=True)
class StepSelection:
    """Which steps of each run to compare: explicit step numbers, or all but the warm-up steps."""

    steps: tuple[int, ...] | None = None
    warmup: int = DEFAULT_WARMUP_STEPS


@dataclass(frozen=True)
class RunMetrics:
    """The metrics of one run, the steps they cover and notes on what was skipped or missing."""

    source: str
    rank: int
    steps: tuple[int, ...]
    metrics: Mapping[str, Metric]
    notes: tuple[str, ...] = ()


def normalize_name(name: str) -> str:
    """A kernel/operator name without template arguments, numbers and addresses, for matching."""
    text = str(name)
    previous = None
    while previous != text:  # innermost template arguments first, until none is left
        previous = text
        text = _TEMPLATE.sub("", text)
    text = _ADDRESS.sub("", text)
    text = _NUMBER.sub("N", text)
    return _SPACES.sub(" ", text).strip()


def parse_steps(text: str) -> tuple[int, ...]:
    """Step numbers from ``--steps``: "1010:1014" (inclusive), "1010,1012" or a mix of both."""
    steps: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            lo, _, hi = part.partition(":")
            a, b = int(lo), int(hi)
            if b < a:
                raise ValueError(f"empty step range {part!r}")
            steps.extend(range(a, b + 1))
        else:
            steps.append(int(part))
    if not steps:
        raise ValueError(f"no step numbers in {text!r}")
    return tuple(sorted(set(steps)))


def select_steps(trace: Trace, selection: StepSelection) -> tuple[pd.DataFrame, list[str]]:
    """The selected step windows (step, start_ns, end_ns; ``timeline.steps.step_windows``), with notes."""
    frame = step_windows(trace)
    notes: list[str] = []
    if frame.empty:
        if selection.steps is not None:
            raise TraceError(trace.meta.path, "has no ProfilerStep annotations, so --steps cannot apply")
        return frame, ["no ProfilerStep annotations: the whole trace counts as one sample"]
    if selection.steps is not None:
        chosen = frame[frame["step"].isin(selection.steps)]
        if chosen.empty:
            have = f"{frame['step'].min()}..{frame['step'].max()}"
            raise TraceError(trace.meta.path,
                             f"none of the steps asked for with --steps is in the trace (it has {have})")
        missing = sorted(set(selection.steps) - set(chosen["step"]))
        if missing:
            notes.append(f"steps not in the trace: {_short_list(missing)}")
        return chosen.reset_index(drop=True), notes
    if selection.warmup > 0 and len(frame) - selection.warmup >= MIN_STEPS_AFTER_WARMUP:
        skipped = frame["step"].iloc[: selection.warmup].tolist()
        notes.append(f"skipped warm-up step(s) {_short_list(skipped)}")
        frame = frame.iloc[selection.warmup:]
    elif selection.warmup > 0:
        notes.append(f"only {len(frame)} step(s): warm-up not skipped")
    return frame.reset_index(drop=True), notes


def extract_run_metrics(trace: Trace, selection: StepSelection = StepSelection()) -> RunMetrics:
    """Every metric `torchscope diff` compares, for one rank's trace."""
    windows, notes = select_steps(trace, selection)
    has_steps = not windows.empty
    if not has_steps:  # the whole trace as one window, step -1
        windows = windows_or_span(trace)
    n = len(windows)
    starts = windows["start_ns"].to_numpy(np.int64)
    ends = windows["end_ns"].to_numpy(np.int64)
    out: dict[str, Metric] = {}

    def sampled(key: str, group: str, unit: str, values: np.ndarray, *, headline: bool = False,
                direction: int = 1, per_run: bool = False, fill_zero: bool = False) -> None:
        out[key] = Metric(key, group, unit, exact=False, headline=headline, direction=direction,
                          samples=np.asarray(values, dtype=np.float64), per_run=per_run, fill_zero=fill_zero)

    def exact(key: str, group: str, unit: str, value: float | list, *, headline: bool = False,
              fill_zero: bool = False) -> None:
        out[key] = Metric(key, group, unit, exact=True, headline=headline, direction=0, value=value,
                          fill_zero=fill_zero)

    if has_steps:
        sampled("step/time", "step", "ns", ends - starts, headline=True)

    ev = trace.events
    kind = ev["kind"]
    # --- phases (torchscope.phase annotations) -----------------------------------------------
    if has_steps:
        for name, per_step in _phase_times(trace, windows["step"].to_numpy(np.int64)):
            sampled(f"phase/{name}", "phase", "ns", per_step, fill_zero=True)
    # --- GPU work: categories, kernels, bytes ------------------------------------------------
    gpu = ev[kind.isin(GPU_WORK_KINDS)]
    if not gpu.empty:
        host_ts = _launch_ts(trace, gpu)
        step_of = step_index(host_ts, starts, ends)
        inside = step_of >= 0
        gpu, step_of, host_ts = gpu[inside], step_of[inside], host_ts[inside]
        dur = gpu["dur_ns"].to_numpy(np.float64)
        gkind = gpu["kind"].astype(str).to_numpy()
        is_kernel = gkind == "kernel"
        category = kernels_analyzer.category_of(gpu["name"], gpu["kind"]).to_numpy()
        is_comm = category == kernels_analyzer.COMMUNICATION
        for cat in kernels_analyzer.CATEGORIES:
            mask = category == cat
            if mask.any():
                sampled(f"gpu/{cat}", "gpu", "ns", np.bincount(step_of[mask], dur[mask], minlength=n))
        busy = _busy_per_step(gpu["ts_ns"].to_numpy(np.int64), gpu["ts_ns"].to_numpy(np.int64)
                              + gpu["dur_ns"].to_numpy(np.int64), step_of, n)
        sampled("gpu/busy", "gpu", "ns", busy)
        sampled("comm/time", "communication", "ns",
                np.bincount(step_of[is_comm], dur[is_comm], minlength=n), headline=True)
        kernels = gpu[is_kernel]
        if not kernels.empty:
            exact("work/kernels_per_step", "work", "count", float(len(kernels)) / n, headline=True)
            for name, per_step in _per_name_per_step(kernels, None, starts, ends, step_of=step_of[is_kernel]):
                sampled(f"kernel_time/{name}", "kernel", "ns", per_step, fill_zero=True)
            for name, count in _per_name_counts(kernels, n):
                exact(f"kernel_count/{name}", "kernel", "count", count, fill_zero=True)
        memcpy = gpu[gkind == "memcpy"]
        if not memcpy.empty:
            nbytes = _arg_numbers(memcpy["args"], "bytes")
            if np.isfinite(nbytes).any():
                exact("work/memcpy_bytes_per_step", "work", "bytes", float(np.nansum(nbytes)) / n, headline=True)
    elif has_steps:
        # CPU-only run: collectives are CPU annotations (gloo).
        comm = ev[(kind == "annotation") & ev["name"].astype(str).str.match(_COMM_CPU)]
        if not comm.empty:
            idx = step_index(comm["ts_ns"].to_numpy(np.int64), starts, ends)
            ok = idx >= 0
            sampled("comm/time", "communication", "ns",
                    np.bincount(idx[ok], comm["dur_ns"].to_numpy(np.float64)[ok], minlength=n), headline=True)
    # --- CPU operators: counts, FLOPs, time ----------------------------------------------------
    ops = ev[kind == "cpu_op"]
    if not ops.empty:
        op_step = step_index(ops["ts_ns"].to_numpy(np.int64), starts, ends)
        ops, op_step = ops[op_step >= 0], op_step[op_step >= 0]
    if not ops.empty:
        exact("work/ops_per_step", "work", "count", float(len(ops)) / n, headline=True)
        for name, per_step in _per_name_per_step(ops, None, starts, ends, step_of=op_step):
            sampled(f"op_time/{name}", "operator", "ns", per_step, fill_zero=True)
        for name, count in _per_name_counts(ops, n):
            exact(f"op_count/{name}", "operator", "count", count, fill_zero=True)
    # --- FLOPs and bytes of the operators (the roofline's cost model: profiler FLOPs, else shapes) ----
    points = roofline_analyzer.op_points(trace) if not ops.empty else None
    if points is not None and not points.empty:
        in_step = step_index(points["ts_ns"].to_numpy(np.int64), starts, ends) >= 0
        flops = float(np.nansum(points["flops"].to_numpy(np.float64)[in_step]))
        nbytes = float(np.nansum(points["bytes"].to_numpy(np.float64)[in_step]))
        if flops > 0:
            exact("work/flops_per_step", "work", "flop", flops / n, headline=True)
        if nbytes > 0:
            exact("work/op_bytes_per_step", "work", "bytes", nbytes / n, headline=True)
    # --- memory, energy, MoE ---------------------------------------------------------------------
    window = (int(starts.min()), int(ends.max()))
    for key, unit, value, headline in _peak_memory(trace, window):
        sampled(key, "memory", unit, np.array([value]), headline=headline, per_run=True)
    for key, values, headline in _energy_per_step(trace, starts, ends):
        sampled(key, "energy", "mJ", values, headline=headline)
    moe_notes = _moe_metrics(trace, windows["step"].to_numpy(np.int64) if has_steps else None, selection,
                             sampled, exact)
    notes.extend(moe_notes)
    steps = tuple(int(s) for s in windows["step"]) if has_steps else ()
    return RunMetrics(trace.meta.path, trace.rank, steps, out, tuple(notes))


def merge_runs(runs: Sequence[RunMetrics]) -> dict[str, Metric]:
    """The metrics of repeated runs of one side: samples pooled, exact values averaged."""
    keys: dict[str, Metric] = {}
    for run in runs:
        for key, metric in run.metrics.items():
            keys.setdefault(key, metric)
    merged: dict[str, Metric] = {}
    for key, first in keys.items():
        parts = []
        values = []
        for run in runs:
            metric = run.metrics.get(key)
            if metric is None:
                if not first.fill_zero:
                    continue
                if first.exact:
                    values.append(0.0)
                else:
                    parts.append(np.zeros(max(len(run.steps), 1)))
                continue
            if first.exact:
                values.append(metric.value)
            else:
                parts.append(metric.samples)
        if first.exact:
            value = _mean_value(values)
            merged[key] = Metric(first.key, first.group, first.unit, True, first.headline, first.direction,
                                 value=value, fill_zero=first.fill_zero)
        else:
            samples = np.concatenate(parts) if parts else np.empty(0)
            merged[key] = Metric(first.key, first.group, first.unit, False, first.headline, first.direction,
                                 samples=samples, per_run=first.per_run, fill_zero=first.fill_zero)
    return merged


# --- extractors ------------------------------------------------------------------------------------

def _launch_ts(trace: Trace, gpu: pd.DataFrame) -> np.ndarray:
    """Start of the runtime or driver call that launched each GPU event (its own start when none matches), ns."""
    launch = launches(trace, gpu, calls=("runtime", "driver"))["launch_ts_ns"].to_numpy(np.int64)
    return np.where(launch >= 0, launch, gpu["ts_ns"].to_numpy(np.int64))


def _names_normalized(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Codes of the normalized names of ``frame`` rows and the normalized names they index."""
    names = frame["name"]
    if isinstance(names.dtype, pd.CategoricalDtype):
        cats = names.cat.categories
        codes = names.cat.codes.to_numpy()
    else:
        codes, cats = pd.factorize(names.astype(str))
    norm_codes, norm_names = pd.factorize(pd.Index([normalize_name(c) for c in cats]))
    return norm_codes[codes], list(norm_names)


def _per_name_per_step(frame: pd.DataFrame, ts_ns: np.ndarray | None, starts: np.ndarray, ends: np.ndarray,
                       *, step_of: np.ndarray | None = None) -> Iterable[tuple[str, np.ndarray]]:
    """(normalized name, total duration per step) for each name present in the selected steps."""
    n = len(starts)
    if step_of is None:
        step_of = step_index(ts_ns, starts, ends)
    ok = step_of >= 0
    codes, names = _names_normalized(frame)
    codes, steps, dur = codes[ok], step_of[ok], frame["dur_ns"].to_numpy(np.float64)[ok]
    if codes.size == 0:
        return []
    table = np.bincount(codes * n + steps, dur, minlength=len(names) * n).reshape(len(names), n)
    present = np.bincount(codes, minlength=len(names)) > 0
    return [(names[i], table[i]) for i in np.flatnonzero(present)]


def _per_name_counts(frame: pd.DataFrame, n_steps: int) -> Iterable[tuple[str, float]]:
    """(normalized name, occurrences per step) for each name in ``frame``."""
    codes, names = _names_normalized(frame)
    counts = np.bincount(codes, minlength=len(names))
    return [(names[i], float(counts[i]) / n_steps) for i in np.flatnonzero(counts)]


def _busy_per_step(start_ns: np.ndarray, end_ns: np.ndarray, step_of: np.ndarray, n: int) -> np.ndarray:
    """Time at least one GPU stream is busy, per step (union of the step's GPU work), ns."""
    busy = np.zeros(n)
    for step in np.unique(step_of):
        mine = step_of == step
        busy[step] = float(union_ns(start_ns[mine], end_ns[mine]))
    return busy


def _arg_numbers(args: pd.Series, key: str) -> np.ndarray:
    """``args[key]`` of each row as float (NaN where missing or not a number)."""
    out = np.full(len(args), np.nan)
    for i, a in enumerate(decode_args(args)):
        if a:
            v = a.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[i] = float(v)
    return out


def _peak_memory(trace: Trace, window: tuple[int, int]) -> list[tuple[str, str, float, bool]]:
    """Peak allocated / reserved / used device memory and peak host RSS over the selected steps, bytes."""
    found = []
    lo, hi = window
    timeline = memory_analyzer.device_memory_timeline(trace)
    if not timeline.empty:
        timeline = timeline[timeline["device_type"] != "cpu"]
        inside = timeline[(timeline["ts_ns"] >= lo) & (timeline["ts_ns"] <= hi)]
        timeline = inside if not inside.empty else timeline
        for column, key, headline in (("allocated_bytes", "memory/peak_allocated", True),
                                      ("reserved_bytes", "memory/peak_reserved", False),
                                      ("used_bytes", "memory/peak_device_used", False)):
            values = timeline[column].to_numpy(np.float64)
            if np.isfinite(values).any():
                found.append((key, "bytes", float(np.nanmax(values)), headline))
    rss = memory_analyzer.host_rss(trace)
    if not rss.empty:
        inside = rss[(rss["ts_ns"] >= lo) & (rss["ts_ns"] <= hi)]
        rss = inside if not inside.empty else rss
        # host memory is the headline memory metric of a CPU-only run
        headline = not any(key == "memory/peak_allocated" for key, *_ in found)
        found.append(("memory/peak_host_rss", "bytes", float(rss["rss_bytes"].max()), headline))
    return found


def _phase_times(trace: Trace, steps: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(phase, time per selected step) from the training-loop analyzer's exclusive phase breakdown, ns."""
    table = training_loop_analyzer.analyze(trace).table("steps")
    table = table.set_index("step").reindex(steps)
    out = []
    for column in table.columns:
        if column.endswith("_ns") and column not in ("step_ns", "start_ns"):
            values = table[column].to_numpy(np.float64)
            if np.nansum(values) > 0:
                out.append((column[: -len("_ns")], np.nan_to_num(values)))
    return out


def _energy_per_step(trace: Trace, starts: np.ndarray, ends: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """Energy per step of the GPUs (the power analyzer's energy curve per device) and the host (RAPL), mJ."""
    out = []
    nvml = power_analyzer.nvml_samples(trace)
    gpu_energy = None
    for _, device in nvml.groupby("device", sort=True):
        t = device["t_ns"].to_numpy(np.int64)
        if t.size < 2 or starts.min() < t[0] or ends.max() > t[-1]:
            continue  # the readings do not cover the steps
        try:
            _, curve = power_analyzer.energy_curve(t, power_mw=device["power_mw"].to_numpy(np.float64),
                                                   energy_mj=device["energy_mj"].to_numpy(np.float64))
        except ValueError:  # neither power nor energy read on this device
            continue
        energy = curve(ends) - curve(starts)
        gpu_energy = energy if gpu_energy is None else gpu_energy + energy
    if gpu_energy is not None:
        out.append(("energy/per_step", gpu_energy, True))
    samples = trace.streams.get("samples") if trace.streams else None
    if samples is not None and not samples.empty and "t_ns" in samples and "rapl_energy_uj" in samples:
        host = _counter_delta(samples, "rapl_energy_uj", starts, ends, scale=1e-3)
        if host is not None:
            out.append(("energy/host_per_step", host, False))
    return out


def _device_groups(frame: pd.DataFrame, column: str) -> list[pd.DataFrame]:
    rows = frame[["t_ns", column] + (["device"] if "device" in frame else [])]
    rows = rows[pd.to_numeric(rows[column], errors="coerce").notna()]
    if rows.empty:
        return []
    if "device" in rows:
        return [g.sort_values("t_ns") for _, g in rows.groupby(rows["device"].astype(str), sort=True)]
    return [rows.sort_values("t_ns")]


def _counter_delta(frame: pd.DataFrame, column: str, starts: np.ndarray, ends: np.ndarray,
                   scale: float) -> np.ndarray | None:
    """Increase of a monotone energy counter over each window (interpolated), summed over devices."""
    total = None
    for group in _device_groups(frame, column):
        t = group["t_ns"].to_numpy(np.float64)
        v = pd.to_numeric(group[column]).to_numpy(np.float64)
        if t.size < 2 or starts.min() < t[0] or ends.max() > t[-1]:
            continue  # the counter does not cover the steps
        delta = (np.interp(ends, t, v) - np.interp(starts, t, v)) * scale
        total = delta if total is None else total + delta
    return total


def _moe_metrics(trace: Trace, steps: np.ndarray | None, selection: StepSelection, sampled, exact) -> list[str]:
    """MoE tokens per expert (exact, per layer), load imbalance and drop rate per step (sampled)."""
    moe = trace.streams.get("moe") if trace.streams else None
    if moe is None or moe.empty:
        return []
    routing = routing_from_stream(moe, manifest=trace.meta.manifest)
    layers = [(lr, *lr.step_counts()) for lr in routing.layers if len(lr.counts)]
    if not layers:
        return []
    notes = []
    all_steps = np.unique(np.concatenate([s for _, s, _ in layers]))
    chosen = all_steps[np.isin(all_steps, steps)] if steps is not None else all_steps[:0]
    if chosen.size == 0:  # the router's step numbers do not line up with ProfilerStep: select on its own
        chosen = all_steps
        if selection.steps is not None:
            chosen = chosen[np.isin(chosen, selection.steps)]
        elif selection.warmup > 0 and chosen.size - selection.warmup >= MIN_STEPS_AFTER_WARMUP:
            chosen = chosen[selection.warmup:]
        if steps is not None:
            notes.append("MoE steps selected on the router's own step numbers")
    if chosen.size == 0:
        return notes
    max_over_mean = np.zeros(chosen.size)
    n_layers = np.zeros(chosen.size)
    dropped = np.zeros(chosen.size)
    assigned = np.zeros(chosen.size)
    for lr, layer_steps, counts in layers:
        keep = np.isin(layer_steps, chosen)
        rows, counts = np.searchsorted(chosen, layer_steps[keep]), counts[keep]
        exact(f"moe_expert_tokens/{lr.layer}", "moe", "tokens",
              [float(x) for x in counts.sum(axis=0) / chosen.size], headline=True)
        ratio = imbalance_metrics(counts)["max_over_mean"]
        ok = np.isfinite(ratio)
        np.add.at(max_over_mean, rows[ok], ratio[ok])
        np.add.at(n_layers, rows[ok], 1)
        for row, step_counts in zip(rows, counts):
            cap = capacity_metrics(step_counts, DEFAULT_CAPACITY_FACTOR)
            dropped[row] += cap["dropped"]
            assigned[row] += float(step_counts.sum())
    has = n_layers > 0
    if has.any():
        sampled("moe/imbalance", "moe", "ratio", max_over_mean[has] / n_layers[has], headline=True)
    if (assigned > 0).any():
        sampled("moe/drop_rate", "moe", "fraction", dropped[assigned > 0] / assigned[assigned > 0], headline=True)
    return notes


def _mean_value(values: list) -> float | list | None:
    if not values:
        return None
    if any(isinstance(v, (list, tuple)) for v in values):
        arrays = [np.asarray(v, dtype=np.float64) for v in values if isinstance(v, (list, tuple))]
        if len({a.size for a in arrays}) != 1:
            return list(arrays[0])
        return [float(x) for x in np.mean(arrays, axis=0)]
    return float(np.mean(values))


def _short_list(values: Sequence[int]) -> str:
    values = list(values)
    if len(values) <= 6:
        return ", ".join(str(v) for v in values)
    return f"{values[0]}..{values[-1]} ({len(values)} steps)"
