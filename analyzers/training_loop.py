"""Steps and phases of a training (or inference) loop: where each step's wall time goes.

Steps are the step windows of ``timeline.steps`` (a ``ProfilerStep#N`` runs until the next one
starts, the last to its own end). Without them the whole trace is one window labelled
``"whole trace"`` (``step = -1`` in the tables): it is no step, so ``steps`` is 0 and the step
statistics are None; its time is "other" unless backward or optimizer ops show where forward ends.
Inside a window, the time is split into exclusive phases, painted in the order
data_loading, loss, optimizer, backward, forward (a later phase only gets time no earlier one
claimed), and ``other`` is what is left:

* With our bundle's ``torchscope.phase`` annotations (kind ``phase``) those are used: the union of
  the annotations named after each phase (``zero_grad`` counts as optimizer). User phase names
  (``prefill``, ``decode``, ...) get their own ``<name>_ns`` columns, painted after the standard ones.
* Otherwise phases are inferred from standard op names: ``enumerate(DataLoader)#...`` is data
  loading; ``Optimizer.step#...`` and ``Optimizer.zero_grad#...`` are optimizer; backward runs from
  the first to the last backward op, whatever its thread: the autograd engine runs backward on its
  own thread(s) while the step's main thread waits in ``loss.backward()``, so backward ops are
  recognised by name, not thread: the ``autograd::engine::evaluate_function: ...`` wrappers (every
  schema since 2021), else, where a trace has none, operators named ``*Backward*``/``*_backward``
  and ``AccumulateGrad``. Top-level ops whose name contains ``loss`` on the step's thread are loss;
  forward is the rest of the step before backward starts (before the optimizer when there is no
  backward; the whole rest for inference).

The run's ``mode``: ``training`` when any window has backward or optimizer time, else ``inference``
(no loss, backward or optimizer phase is reported then), or ``unknown`` when the guess failed:
no operator was recorded, or gradient collectives (all-reduce, reduce-scatter) ran with no backward
nor optimizer op in sight (a training step whose operators were not traced; its time stays "other").
``phase_confidence`` says how far to trust the split (``PHASE_CONFIDENCE``) and ``phase_note`` why.
With ``prof.step(tokens=, samples=)`` counts, throughput is reported (tokens/s, samples/s over the
steps' time).

Per-module forward/backward time comes from our ``torchscope.module`` annotations (top-level
modules: those none of whose dotted name prefixes is annotated too, e.g. ``tok``, ``blocks.0``,
``head`` when ``blocks`` is a ModuleList; the root model is skipped), or else from Kineto's
``nn.Module: X`` python events (the children of the outermost module of each thread, forward only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from torchscope.analyzers.core.args import decode_args
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.trace import Trace, distinct_names, name_mask
from torchscope.analyzers.kernels import name_search
from torchscope.analyzers.timeline.intervals import clip, merge_intervals, union_ns
from torchscope.analyzers.timeline.nesting import outermost
from torchscope.analyzers.timeline.steps import (WHOLE_TRACE_LABEL, schedule_words, step_count, step_index,
                                                 steps_run, traced_steps, user_counts, window_label,
                                                 windows_or_span)

__all__ = [
    "analyze", "PHASES", "DATA_LOADING_FINDING_FRACTION", "OPTIMIZER_FINDING_FRACTION",
    "SYNC_FINDING_FRACTION", "OUTLIER_FACTOR", "WARMUP_STEPS", "DATA_LOADING_CRITICAL_FRACTION",
    "SYNC_CRITICAL_FRACTION", "DATA_LOADER_BOUND", "SLOW_OPTIMIZER_STEP", "DEVICE_SYNC_IN_STEP", "SUMMARY_KEYS",
    "MODES", "PHASE_CONFIDENCE", "INFERENCE_PHASES",
]

PHASES = ("data_loading", "forward", "loss", "backward", "optimizer", "other")
#: The phases an inference run reports (no loss, backward or optimizer).
INFERENCE_PHASES = ("data_loading", "forward", "other")
#: What the run is: backward/optimizer time seen, none seen, or the guess failed.
MODES = ("training", "inference", "unknown")
#: How far to trust the phase split, with what each level means.
PHASE_CONFIDENCE = {
    "high": "our phase annotations, or steps where every step shows the autograd engine's wrappers and the optimizer",
    "medium": "inferred from op names with a gap: backward by operator names only, or some steps without "
              "backward/optimizer, or an inference run's forward taken as the whole step",
    "low": "no steps (the whole trace is one window) or the guess failed (mode 'unknown'): read the split as a guess",
}
#: Paint order: a phase only gets time that no phase before it in this order claimed.
_PAINT_ORDER = ("data_loading", "loss", "optimizer", "backward", "forward")
#: Finding: the loop waits for the next batch.
DATA_LOADER_BOUND = "training_loop.data_loader_bound"
#: Data loading at least this share of step time → "data-loader bound" finding.
DATA_LOADING_FINDING_FRACTION = 0.10
#: ... and critical from this share of step time on.
DATA_LOADING_CRITICAL_FRACTION = 0.30
#: Finding: a slow (unfused, per-parameter) optimizer step.
SLOW_OPTIMIZER_STEP = "training_loop.slow_optimizer_step"
#: Optimizer at least this share of step time → fused/foreach optimizer finding.
OPTIMIZER_FINDING_FRACTION = 0.15
#: Speed-up assumed for a fused (or foreach) optimizer over a per-parameter loop, for the gain.
FUSED_OPTIMIZER_SPEEDUP = 3.0
#: Finding: the host blocks on device synchronizations inside the step.
DEVICE_SYNC_IN_STEP = "training_loop.device_sync_in_step"
#: Host blocked in device synchronizations at least this share of step time → "remove syncs" finding.
SYNC_FINDING_FRACTION = 0.02
#: ... and critical from this share of step time on.
SYNC_CRITICAL_FRACTION = 0.20
#: A step whose duration is off the median by more than this factor (either way) is an outlier.
OUTLIER_FACTOR = 1.5
#: Outliers among the first this many steps are labelled warm-up.
WARMUP_STEPS = 3

#: Keys of the ``training_loop`` summary -> what each is, with its unit. Steps are the windows of
#: ``timeline.steps`` (a step runs until the next one starts), or the whole trace as one step.
SUMMARY_KEYS: dict[str, str] = {
    "steps": "number of traced steps (timeline.steps.step_count; 0 when the trace has no ProfilerStep)",
    "steps_run": "number of prof.step() calls of the run, traced or not (timeline.steps.steps_run: the bundle's "
                 "steps stream); None for a plain Kineto trace, which cannot know",
    "schedule": "which steps Kineto traced, in words (timeline.steps.schedule_words): 'wait 1, warmup 1, active 3', "
                "'a custom schedule' or 'Kineto off'; None for a plain Kineto trace",
    "window": "what the rows are: 'steps', or 'whole trace' (one window, no step) when the trace has no ProfilerStep",
    "total_window_ns": "time of all windows together (the steps, or the whole trace), ns",
    "mode": "'training' (backward or optimizer time seen), 'inference' (neither: no loss/backward/optimizer "
            "phases) or 'unknown' (the guess failed, see phase_note)",
    "phase_source": "where the phases come from: 'torchscope.phase annotations' or 'inferred from op names'",
    "phase_confidence": "how far to trust the phase split: 'high', 'medium' or 'low' (PHASE_CONFIDENCE says when)",
    "phase_note": "why the confidence is not high, or how the guess failed (None when high)",
    "backward_source": "how backward was recognised: 'torchscope.phase annotations', 'autograd engine wrappers' "
                       "(autograd::engine::evaluate_function ops), 'backward op names', or None",
    "autograd_threads": "number of threads other than the step's main thread that ran backward ops",
    "tokens_per_s": "only with prof.step(tokens=) counts: tokens over the steps' time, 1/s",
    "samples_per_s": "only with prof.step(samples=) counts: samples over the steps' time, 1/s",
    "step_median_ns": "median step time, ns (None without steps, as for every step statistic)",
    "step_p90_ns": "90th percentile of step time, ns",
    "step_mean_ns": "mean step time, ns",
    "step_min_ns": "shortest step, ns",
    "step_max_ns": "longest step, ns",
    "warmup_steps": "step numbers of outliers among the first WARMUP_STEPS steps, list of int",
    "outlier_steps": "step numbers off the median by more than OUTLIER_FACTOR, list of int",
    "steady_median_ns": "median step time without the warm-up steps, ns (None when every step is warm-up)",
    **{f"{p}_pct": f"{p.replace('_', ' ')} time (exclusive) over all windows' time, % (loss, backward and "
       "optimizer absent in inference)" if p in ("loss", "backward", "optimizer")
       else f"{p.replace('_', ' ')} time (exclusive) over all windows' time, %" for p in PHASES},
    "<user phase>_pct": "for each user phase name (prefill, decode, ...): its exclusive time over all steps' time, %",
}

_DATA_RE = re.compile(r"^enumerate\(DataLoader\)#")
_OPT_RE = re.compile(r"^Optimizer\.(?:step|zero_grad)#")
_BWD_PREFIX = "autograd::engine::evaluate_function:"
#: Backward operators by name, for traces without the engine's wrappers: AddmmBackward0, convolution_backward, ...
_BWD_OP_RE = re.compile(r"backward|^torch::autograd::accumulategrad$", re.I)  # lower case: fast (name_search)
#: Collectives that carry gradients: seen with no backward nor optimizer op, the phase guess has failed.
_GRAD_COLLECTIVE_RE = re.compile(r"all_?reduce|reduce_?scatter", re.I)
_LOSS_RE = re.compile(r"loss", re.I)
_BACKWARD_RE = re.compile(r"backward", re.I)
_SYNC_RUNTIME_RE = re.compile(r"^(?:cuda|hip)(?:Device|Stream|Event)Synchronize$")
_SYNC_OP_NAMES = ("aten::item", "aten::_local_scalar_dense")
_PHASE_ALIASES = {"zero_grad": "optimizer", "data": "data_loading", "dataloader": "data_loading",
                  "fwd": "forward", "bwd": "backward", "optimizer_step": "optimizer"}
_FUSED_OPT_RE = re.compile(r"fused|foreach|apex|multi_tensor", re.I)


# --------------------------------------------------------------------------- helpers
def _steps(trace: Trace) -> pd.DataFrame:
    """Windows (``timeline.steps.windows_or_span``) with the step's thread; without steps, the busiest host thread."""
    windows = windows_or_span(trace)
    out = windows.rename(columns={"start_ns": "ts_ns"})
    out["dur_ns"] = out["end_ns"] - out["ts_ns"]
    steps = traced_steps(trace)
    if not steps.empty:
        out["tid"] = steps["tid"].to_numpy()
    else:
        ev = trace.events
        if ev.empty:
            raise NotApplicable("no events")
        host = ev[~ev["kind"].isin(("kernel", "memcpy", "memset", "gpu_annotation", "cuda_sync"))]
        host = host if not host.empty else ev
        out["tid"] = int(host["tid"].mode().iloc[0])
    return out[["step", "ts_ns", "dur_ns", "tid", "end_ns"]]


def _assign_step(ts: np.ndarray, steps: pd.DataFrame) -> np.ndarray:
    """Index of the step containing each start time (-1 when none)."""
    return step_index(ts, steps["ts_ns"].to_numpy(), steps["end_ns"].to_numpy())


def _per_step_union(step_idx: np.ndarray, s: np.ndarray, e: np.ndarray, steps: pd.DataFrame) -> list:
    """Per step, the merged (starts, ends) of the intervals assigned to it, clipped to the step."""
    out = []
    starts, ends = steps["ts_ns"].to_numpy(), steps["end_ns"].to_numpy()
    order = np.argsort(step_idx, kind="stable")
    si, ss, ee = step_idx[order], s[order], e[order]
    bounds = np.searchsorted(si, np.arange(len(steps) + 1), side="left")
    for i in range(len(steps)):  # one iteration per step, not per event
        a, b = bounds[i], bounds[i + 1]
        out.append(merge_intervals(*clip(ss[a:b], ee[a:b], starts[i], ends[i])))
    return out


_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _intervals(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    s = frame["ts_ns"].to_numpy()
    return s, s + frame["dur_ns"].to_numpy()


# --------------------------------------------------------------------------- phases
@dataclass(frozen=True)
class _PhaseEvidence:
    """What the phase split rests on: where phases came from, how backward was found, per-window markers."""

    source: str
    backward_source: str | None
    backward_steps: np.ndarray  # bool per window: backward time found
    optimizer_steps: np.ndarray  # bool per window: optimizer time found
    autograd_threads: int
    host_ops: int  # operator events inside the windows
    grad_collectives: int  # all-reduce / reduce-scatter events anywhere


def _nonempty(layer: list) -> np.ndarray:
    return np.array([iv[0].size > 0 for iv in layer], dtype=bool)


def _autograd_threads(trace: Trace, steps: pd.DataFrame) -> int:
    """Threads other than the step's main thread that ran autograd-engine wrappers inside the windows."""
    ev = trace.events
    rows = (ev["kind"] == "cpu_op").to_numpy() & name_mask(ev["name"], lambda c: c.str.startswith(_BWD_PREFIX))
    idx = _assign_step(ev["ts_ns"].to_numpy()[rows], steps)
    tid = ev["tid"].to_numpy()[rows]
    off_main = (idx >= 0) & (tid != steps["tid"].to_numpy()[np.clip(idx, 0, None)])
    return int(np.unique(tid[off_main]).size)


def _grad_collectives(trace: Trace) -> int:
    return int(name_mask(trace.events["name"], lambda c: name_search(_GRAD_COLLECTIVE_RE, c.tolist())).sum())


def _phase_layers(trace: Trace, steps: pd.DataFrame) -> tuple[dict, _PhaseEvidence]:
    """Per phase, a list (per step) of merged intervals (standard phases first), and what they rest on."""
    ev = trace.events
    phase_ev = ev[ev["kind"] == "phase"]
    layers: dict[str, list] = {}
    op_ts = ev["ts_ns"].to_numpy()[(ev["kind"] == "cpu_op").to_numpy()]
    host_ops = int((_assign_step(op_ts, steps) >= 0).sum())
    if not phase_ev.empty:
        names = phase_ev["name"].astype(str).str.lower().map(lambda n: _PHASE_ALIASES.get(n, n))
        s, e = _intervals(phase_ev)
        idx = _assign_step(s, steps)
        for phase in _PAINT_ORDER:
            m = (names == phase).to_numpy() & (idx >= 0)
            layers[phase] = _per_step_union(idx[m], s[m], e[m], steps)
        # User phases (prefill, decode, eval, ...) get their own layers, painted after the standard ones.
        for phase in sorted(set(names) - set(_PAINT_ORDER) - set(PHASES)):
            m = (names == phase).to_numpy() & (idx >= 0)
            if m.any():
                layers[phase] = _per_step_union(idx[m], s[m], e[m], steps)
        bwd = _nonempty(layers["backward"])
        evidence = _PhaseEvidence("torchscope.phase annotations", "torchscope.phase annotations" if bwd.any() else None,
                                  bwd, _nonempty(layers["optimizer"]), _autograd_threads(trace, steps), host_ops,
                                  _grad_collectives(trace))
        return layers, evidence

    kind = ev["kind"]
    host = ev[["ts_ns", "dur_ns", "name", "kind", "tid"]].iloc[
        np.flatnonzero(kind.isin(("annotation", "python", "cpu_op", "runtime")).to_numpy())]
    hname = host["name"]
    # Match on the distinct names, then spread to events (no per-event regex).
    def mask(rule) -> np.ndarray:
        return name_mask(hname, rule)

    is_op = (host["kind"] == "cpu_op").to_numpy()
    data_m = mask(lambda c: c.str.match(_DATA_RE))
    opt_m = mask(lambda c: c.str.match(_OPT_RE))
    bwd_m = mask(lambda c: c.str.startswith(_BWD_PREFIX)) & is_op
    backward_source = "autograd engine wrappers"
    if not bwd_m.any():  # a schema without the engine's wrappers: the backward operators themselves
        bwd_m = mask(lambda c: name_search(_BWD_OP_RE, c.tolist())) & is_op
        backward_source = "backward op names"
    loss_m = mask(lambda c: name_search(_LOSS_RE, c.tolist()) & ~name_search(_BACKWARD_RE, c.tolist())) & is_op
    s_all, e_all = _intervals(host)
    idx = _assign_step(s_all, steps)

    def per_step(m: np.ndarray) -> list:
        m = m & (idx >= 0)
        return _per_step_union(idx[m], s_all[m], e_all[m], steps)

    layers["data_loading"] = per_step(data_m)
    layers["optimizer"] = per_step(opt_m)
    # Loss: only top-level loss ops on the step's thread (not the ones inside backward).
    tids = steps["tid"].to_numpy()
    host_tid = host["tid"].to_numpy()
    on_main = host_tid == tids[np.clip(idx, 0, None)]
    layers["loss"] = per_step(loss_m & on_main)
    bwd = per_step(bwd_m)
    layers["backward"] = [(iv[0][:1], iv[1][-1:]) if iv[0].size else _EMPTY for iv in bwd]  # first→last span
    has_bwd, has_opt = _nonempty(layers["backward"]), _nonempty(layers["optimizer"])
    grad_collectives = _grad_collectives(trace)
    failed = not has_bwd.any() and not has_opt.any() and (not host_ops or grad_collectives > 0)
    fwd = []
    for i, (s0, s1) in enumerate(zip(steps["ts_ns"].to_numpy(), steps["end_ns"].to_numpy())):
        if has_bwd[i]:
            stop = int(layers["backward"][i][0][0])
        elif has_opt[i]:
            stop = int(layers["optimizer"][i][0][0])
        elif failed or int(steps["step"].iloc[i]) == -1:
            stop = int(s0)  # nothing says what is forward: the time stays "other"
        else:
            stop = int(s1)
        fwd.append((np.array([s0], np.int64), np.array([max(stop, s0)], np.int64)))
    layers["forward"] = fwd
    off_main = bwd_m & (idx >= 0) & ~on_main
    threads = int(np.unique(host_tid[off_main]).size)
    evidence = _PhaseEvidence("inferred from op names", backward_source if has_bwd.any() else None, has_bwd, has_opt,
                              threads, host_ops, grad_collectives)
    return layers, evidence


def _phase_guess(evidence: _PhaseEvidence, has_steps: bool) -> tuple[str, str, str | None]:
    """(mode, confidence, note) of the phase split: what the run is, how far to trust it, and why."""
    bwd, opt = evidence.backward_steps, evidence.optimizer_steps
    annotated = evidence.source == "torchscope.phase annotations"
    if not bwd.any() and not opt.any():
        if evidence.grad_collectives and not annotated:
            return "unknown", "low", (f"guess failed: {evidence.grad_collectives} gradient collectives (all-reduce/"
                                      "reduce-scatter) but no backward or optimizer op: a training step whose "
                                      "operators were not traced? Its time is left as other")
        if not evidence.host_ops and not annotated:
            return "unknown", "low", "guess failed: no operator was recorded, so nothing shows what the time was"
        mode = "inference"
    else:
        mode = "training"
    if not has_steps:
        return mode, "low", f"no ProfilerStep: the {WHOLE_TRACE_LABEL} is one window, its phases a guess"
    if annotated:
        return mode, "high", None
    if mode == "inference":
        return mode, "medium", "no backward or optimizer op in any step: an inference run, forward is the whole step"
    gaps = []
    if evidence.backward_source == "backward op names":
        gaps.append("no autograd::engine::evaluate_function wrappers: backward found by operator names")
    if not bwd.all():
        gaps.append(f"{int((~bwd).sum())} of {bwd.size} steps without backward ops")
    if not opt.all():
        gaps.append(f"{int((~opt).sum())} of {opt.size} steps without an Optimizer annotation")
    return mode, ("medium" if gaps else "high"), ("; ".join(gaps) or None)


def _paint(layers: dict, n_steps: int) -> dict[str, np.ndarray]:
    """Exclusive ns per phase per step, painting ``_PAINT_ORDER`` first, then user phases."""
    order = list(_PAINT_ORDER) + [p for p in layers if p not in _PAINT_ORDER]
    out = {p: np.zeros(n_steps, np.int64) for p in order}
    for i in range(n_steps):
        claimed = _EMPTY
        before = 0
        for phase in order:
            iv = layers.get(phase, [_EMPTY] * n_steps)[i]
            claimed = merge_intervals(np.concatenate([claimed[0], iv[0]]), np.concatenate([claimed[1], iv[1]]))
            now = int((claimed[1] - claimed[0]).sum())
            out[phase][i] = now - before
            before = now
    return out


# --------------------------------------------------------------------------- modules
def _modules(trace: Trace, steps: pd.DataFrame) -> pd.DataFrame:
    ev = trace.events
    cols = ["module", "direction", "count", "total_ns", "mean_per_step_ns", "source"]
    mod = ev[ev["kind"] == "module"]
    n_steps = max(len(steps), 1)
    if not mod.empty:
        mod = mod[mod["name"].astype(str) != ""]  # the root model itself, when annotated
        top = mod["name"].astype(str).isin(_top_level_names(set(mod["name"].astype(str)))).to_numpy()
        direction = [((a or {}).get("direction") or "forward") for a in decode_args(mod["args"].to_numpy()[top])]
        frame = pd.DataFrame({"module": mod["name"].astype(str).to_numpy()[top], "direction": direction,
                              "dur_ns": mod["dur_ns"].to_numpy()[top]})
        source = "torchscope.module annotations"
    else:
        py = ev[ev["kind"] == "python"]
        is_mod = py["name"].astype(str).str.startswith("nn.Module: ")
        py = py[is_mod.to_numpy()]
        if py.empty:
            return pd.DataFrame(columns=cols)
        roots = outermost(py)
        children = outermost(py[~roots])
        sel = py[~roots][children]
        frame = pd.DataFrame({"module": sel["name"].astype(str).str.slice(len("nn.Module: ")).to_numpy(),
                              "direction": "forward", "dur_ns": sel["dur_ns"].to_numpy()})
        source = "Kineto nn.Module events"
    if frame.empty:
        return pd.DataFrame(columns=cols)
    g = frame.groupby(["module", "direction"], sort=False)["dur_ns"].agg(["size", "sum"]).reset_index()
    g.columns = ["module", "direction", "count", "total_ns"]
    g["mean_per_step_ns"] = (g["total_ns"] / n_steps).round().astype(np.int64)
    g["source"] = source
    return g.sort_values("total_ns", ascending=False).reset_index(drop=True)


def _top_level_names(names: set[str]) -> set[str]:
    """Qualified module names none of whose dotted prefixes is itself annotated."""
    top = set()
    for name in names:  # distinct module names, not events
        parts = name.split(".")
        if not any(".".join(parts[:i]) in names for i in range(1, len(parts))):
            top.add(name)
    return top


# --------------------------------------------------------------------------- syncs
def _syncs(trace: Trace, steps: pd.DataFrame) -> pd.DataFrame:
    """Per step: host-side synchronizations (count) and the time the host was blocked in them (ns)."""
    ev = trace.events
    names = ev["name"]
    is_sync = name_mask(names, lambda c: c.str.match(_SYNC_RUNTIME_RE) | c.isin(_SYNC_OP_NAMES))
    host = ev[is_sync & ev["kind"].isin(("runtime", "cpu_op")).to_numpy()]
    gpu_sync = ev[ev["kind"] == "cuda_sync"]
    n = len(steps)
    s, e = _intervals(host)
    idx = _assign_step(s, steps)
    blocked = np.array([union_ns(*iv) for iv in _per_step_union(idx[idx >= 0], s[idx >= 0], e[idx >= 0], steps)],
                       dtype=np.int64) if n else np.zeros(0, np.int64)
    calls = host[idx >= 0]
    hname = calls["name"].astype(str).to_numpy()
    cidx = idx[idx >= 0]
    # .item() nests _local_scalar_dense which nests a stream sync: count the outermost kind only.
    item_calls = np.bincount(cidx[hname == "aten::item"], minlength=n)
    lsd_calls = np.bincount(cidx[hname == "aten::_local_scalar_dense"], minlength=n)
    rt_calls = np.bincount(cidx[np.char.find(hname.astype(str), "Synchronize") >= 0], minlength=n)
    g_idx = _assign_step(gpu_sync["ts_ns"].to_numpy(), steps)
    gpu_calls = np.bincount(g_idx[g_idx >= 0], minlength=n)
    return pd.DataFrame({"step": steps["step"].to_numpy(), "item_calls": item_calls,
                         "local_scalar_dense_calls": lsd_calls, "synchronize_calls": rt_calls,
                         "cuda_sync_events": gpu_calls, "blocked_ns": blocked})


# --------------------------------------------------------------------------- analyzer
@register("training_loop", description="Step times and the phases of each step (data, fwd, loss, bwd, optimizer)",
          page="overview", summary_keys=SUMMARY_KEYS)
def analyze(trace: Trace) -> Result:
    """Per-step phase times (ns), per-module time, step-time statistics and loop findings."""
    steps = _steps(trace)
    n = len(steps)
    has_steps = step_count(trace) > 0
    layers, evidence = _phase_layers(trace, steps)
    mode, confidence, note = _phase_guess(evidence, has_steps)
    painted = _paint(layers, n)
    user_phases = [p for p in painted if p not in PHASES]
    standard = INFERENCE_PHASES if mode == "inference" else PHASES
    all_phases = [*standard[:-1], *user_phases, "other"]
    table = pd.DataFrame({"step": steps["step"].to_numpy(),
                          "window": [window_label(s) for s in steps["step"].to_numpy()],
                          "start_ns": steps["ts_ns"].to_numpy(), "step_ns": steps["dur_ns"].to_numpy()})
    for phase in all_phases[:-1]:
        table[f"{phase}_ns"] = painted[phase]
    table["other_ns"] = table["step_ns"] - table[[f"{p}_ns" for p in all_phases[:-1]]].sum(axis=1)
    dur = table["step_ns"].to_numpy().astype(np.float64)
    median = float(np.median(dur))
    ratio = dur / median if median else np.ones_like(dur)
    outlier = (ratio > OUTLIER_FACTOR) | (ratio < 1 / OUTLIER_FACTOR)
    table["outlier"] = outlier & has_steps
    table["warmup"] = table["outlier"] & (np.arange(n) < WARMUP_STEPS)
    steady = table[~table["warmup"]]
    totals = {p: int(table[f"{p}_ns"].sum()) for p in all_phases}
    step_total = int(table["step_ns"].sum())
    throughput = _throughput(trace, table) if has_steps else {}
    syncs = _syncs(trace, steps)
    modules = _modules(trace, steps)

    def stat(value: float) -> int | None:
        return int(round(value)) if has_steps else None

    summary = {
        "steps": step_count(trace), "steps_run": steps_run(trace), "schedule": schedule_words(trace),
        "window": "steps" if has_steps else WHOLE_TRACE_LABEL,
        "total_window_ns": step_total,
        "mode": mode, "phase_source": evidence.source, "phase_confidence": confidence, "phase_note": note,
        "backward_source": evidence.backward_source, "autograd_threads": evidence.autograd_threads,
        **throughput,
        "step_median_ns": stat(median),
        "step_p90_ns": stat(float(np.quantile(dur, 0.9))),
        "step_mean_ns": stat(float(dur.mean())),
        "step_min_ns": stat(dur.min()), "step_max_ns": stat(dur.max()),
        "warmup_steps": [int(s) for s in table.loc[table["warmup"], "step"]],
        "outlier_steps": [int(s) for s in table.loc[table["outlier"], "step"]],
        "steady_median_ns": stat(float(np.median(steady["step_ns"]))) if len(steady) else None,
        **{f"{p}_pct": (100.0 * totals[p] / step_total if step_total else 0.0) for p in all_phases},
    }
    phase_totals = pd.DataFrame({"phase": all_phases, "total_ns": [totals[p] for p in all_phases],
                                 "share_pct": [summary[f"{p}_pct"] for p in all_phases],
                                 "user_phase": [p in user_phases for p in all_phases]})
    findings = _findings(trace, table, syncs, summary, step_total)
    tables = {"steps": table, "phases": phase_totals, "modules": modules, "syncs": syncs}
    return Result(analyzer="training_loop", rank=trace.rank, tables=tables, summary=summary,
                  findings=tuple(findings))


def _throughput(trace: Trace, table: pd.DataFrame) -> dict:
    """Tokens/s and samples/s over the steps' time, from ``prof.step(tokens=, samples=)``; adds the per-step counts."""
    counts = user_counts(trace, table["step"].to_numpy())
    seconds = table["step_ns"].sum() / 1e9
    out = {}
    for col in ("tokens", "samples"):
        values = counts[col].to_numpy(np.float64)
        if seconds > 0 and not np.isnan(values).all():
            table[col] = values
            out[f"{col}_per_s"] = float(np.nansum(values) / seconds)
    return out


def _findings(trace: Trace, table: pd.DataFrame, syncs: pd.DataFrame, summary: dict, step_total: int) -> list:
    """The loop's findings, one rule each: data loading, optimizer step, device syncs."""
    if not step_total:
        return []
    found = (_data_loader_finding(trace, table, step_total), _optimizer_finding(trace, table, step_total),
             _sync_finding(trace, syncs, step_total))
    return [f for f in found if f is not None]


def _data_loader_finding(trace: Trace, table: pd.DataFrame, step_total: int) -> Finding | None:
    """Data loading takes a large share of step time → more DataLoader workers, pinned memory, prefetching."""
    data_share = table["data_loading_ns"].sum() / step_total
    if data_share < DATA_LOADING_FINDING_FRACTION:
        return None
    return Finding(
        id=DATA_LOADER_BOUND, analyzer="training_loop",
        severity="critical" if data_share >= DATA_LOADING_CRITICAL_FRACTION else "warning",
        title=f"Data loading takes {100 * data_share:.1f}% of step time",
        evidence={"data_loading_ns": int(table["data_loading_ns"].sum()), "step_total_ns": step_total,
                  "data_loading_pct": round(100 * data_share, 3), "steps": len(table),
                  "threshold_pct": 100 * DATA_LOADING_FINDING_FRACTION},
        recommendation=("The training loop waits for the next batch. Raise DataLoader(num_workers=...) "
                        "(e.g. to the CPU cores per GPU), set pin_memory=True, persistent_workers=True and "
                        "prefetch_factor (2-4), and move expensive decoding/augmentation off the main process "
                        "or onto the GPU."),
        estimated_gain=(f"up to {100 * data_share:.1f}% of step time: the measured data-loading time, "
                        "hidden entirely if loading overlaps with compute"),
        gain_fraction=float(min(data_share, 1.0)), rank=trace.rank, page="overview")


def _optimizer_finding(trace: Trace, table: pd.DataFrame, step_total: int) -> Finding | None:
    """An unfused optimizer step takes a large share of step time → fused/foreach optimizer."""
    if "optimizer_ns" not in table:  # an inference run
        return None
    opt_share = table["optimizer_ns"].sum() / step_total
    opt_names = _optimizer_names(trace)
    already_fused = bool(opt_names) and all(_FUSED_OPT_RE.search(n) for n in opt_names)
    if opt_share < OPTIMIZER_FINDING_FRACTION or already_fused:
        return None
    gain = opt_share * (1 - 1 / FUSED_OPTIMIZER_SPEEDUP)
    return Finding(
        id=SLOW_OPTIMIZER_STEP, analyzer="training_loop", severity="warning",
        title=f"The optimizer step takes {100 * opt_share:.1f}% of step time",
        evidence={"optimizer_ns": int(table["optimizer_ns"].sum()), "step_total_ns": step_total,
                  "optimizer_pct": round(100 * opt_share, 3), "optimizers": sorted(opt_names),
                  "threshold_pct": 100 * OPTIMIZER_FINDING_FRACTION},
        recommendation=("Use a fused or multi-tensor optimizer: torch.optim.AdamW(..., fused=True) (or "
                        "foreach=True), likewise for SGD/Adam; this replaces a per-parameter loop of small "
                        "kernels by a few large ones. Zero gradients with zero_grad(set_to_none=True)."),
        estimated_gain=(f"about {100 * gain:.1f}% of step time: the optimizer share assumed "
                        f"{FUSED_OPTIMIZER_SPEEDUP:g}x faster when fused"),
        gain_fraction=float(min(gain, 1.0)), rank=trace.rank, page="overview")


def _sync_finding(trace: Trace, syncs: pd.DataFrame, step_total: int) -> Finding | None:
    """The host blocks in device synchronizations inside the step → remove .item()/synchronize calls."""
    blocked = int(syncs["blocked_ns"].sum())
    sync_share = blocked / step_total
    calls = int(syncs[["item_calls", "synchronize_calls"]].sum().sum())
    if sync_share < SYNC_FINDING_FRACTION or not calls:
        return None
    return Finding(
        id=DEVICE_SYNC_IN_STEP, analyzer="training_loop",
        severity="critical" if sync_share >= SYNC_CRITICAL_FRACTION else "warning",
        title=f"The host blocks on device synchronizations for {100 * sync_share:.1f}% of step time",
        evidence={"blocked_ns": blocked, "step_total_ns": step_total, "blocked_pct": round(100 * sync_share, 3),
                  "item_calls": int(syncs["item_calls"].sum()),
                  "synchronize_calls": int(syncs["synchronize_calls"].sum()),
                  "cuda_sync_events": int(syncs["cuda_sync_events"].sum()), "steps": len(syncs),
                  "threshold_pct": 100 * SYNC_FINDING_FRACTION},
        recommendation=("Remove synchronizations from the step: avoid tensor.item(), .cpu(), .tolist(), "
                        "printing or logging tensors every step (accumulate on the GPU and read them every N "
                        "steps), avoid torch.cuda.synchronize() outside benchmarking, and use "
                        "non_blocking=True copies from pinned memory."),
        estimated_gain=(f"up to {100 * sync_share:.1f}% of step time: the measured time the host spent "
                        "blocked in them, during which it could have queued more work"),
        gain_fraction=float(min(sync_share, 1.0)), rank=trace.rank, page="timeline")


def _optimizer_names(trace: Trace) -> set[str]:
    cats = distinct_names(trace.events["name"])
    names = cats[cats.str.startswith("Optimizer.step#")]
    return {n.split("#", 1)[1] for n in names}
