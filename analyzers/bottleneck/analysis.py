"""The ``bottleneck`` analyzer: where each step's time goes, and what each change would gain.

It builds the step model (``model``), attributes every ns of every step to one cause
(``attribution``), and replays each what-if change (``whatif``) through the simulator (``replay``).
A finding is made per cause whose change is predicted to save at least ``MIN_GAIN_FRACTION`` of
step time; its ``gain_fraction`` is that prediction: ``1 - sum(replayed steps after the change) /
sum(replayed steps unmodified)`` over the steps that did not stall (``_gain``), both replayed without
the profiler's own per-op cost (``profiler_overhead``), as the run realizes them. Every time finding
is in that one unit, so they rank together.

A bundle whose run had steps with the profiler off (the schedule's wait steps, or the steps after the
traced window, timed by the ``steps`` stream) measures that cost instead of estimating it: the per-op
cost is fitted so that the replay without it takes the untraced step
(``profiler_overhead.fit_overhead``), and every what-if uses the fitted cost. The summary says how much
slower the traced steps ran and how far the replay lands from the untraced step, with the measured cost
and with the fitted one; where the fit cannot reach it (past ``UNTRACED_CAVEAT_SHARE``) every gain's text
says so. The untraced steps still carry torchscope's own annotations (module hooks): they are the
bundle's run without Kineto, not the bare job.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torchscope.analyzers.bottleneck import whatif
from torchscope.analyzers.bottleneck.attribution import attribute, cause_label
from torchscope.analyzers.bottleneck.model import build
from torchscope.analyzers.bottleneck.profiler_overhead import fit_overhead, profiler_overhead
from torchscope.analyzers.bottleneck.replay import _Plan, replay
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.report.units import format_duration_ns, format_share
from torchscope.analyzers.timeline.steps import untraced_step_windows

__all__ = ["CRITICAL_GAIN_FRACTION", "MIN_GAIN_FRACTION", "SUMMARY_KEYS", "WARNING_GAIN_FRACTION", "analyze"]

#: A change predicted to save less than this share of step time is not worth a finding.
MIN_GAIN_FRACTION = 0.05
#: Fewest untraced steps whose median is taken as the step without the profiler.
MIN_UNTRACED_STEPS = 3
#: A replay without the profiler further than this from the untraced step makes every gain say so.
UNTRACED_CAVEAT_SHARE = 0.10
#: A step measured longer than this many times the median stalled: it is left out of the gains.
STALLED_STEP_FACTOR = 2.0
#: Severity by predicted gain.
CRITICAL_GAIN_FRACTION = 0.30
WARNING_GAIN_FRACTION = 0.10

SUMMARY_KEYS: dict[str, str] = {
    "steps": "number of windows analysed (traced steps, or 1 for a trace without steps)",
    "step_ns": "median measured step time, ns",
    "top_cause": "the cause with the most time over all steps (see attribution.CAUSES)",
    "top_cause_share": "that cause's share of total step time, 0..1",
    "replay_error": "|median replayed unmodified step - median measured step| / median measured step, 0..1",
    "profiler_overhead_ns": "the profiler's own cost per recorded op, measured from the trace or fitted to the "
                            "run's untraced steps (profiler_overhead_source), ns",
    "profiler_overhead_share": "share of the measured step time that cost took on the host, 0..1",
    "untraced_step_ns": "median step of the run's steps that ran with the profiler off (the bundle's steps stream, "
                        "timeline.steps.untraced_step_windows), ns; this key and the next three are absent with fewer than "
                        "MIN_UNTRACED_STEPS (a plain Kineto trace has none)",
    "traced_step_slowdown": "median traced step / that untraced step: what tracing cost this run",
    "untraced_replay_error_share": "|median step replayed without the profiler's cost - median untraced step| / median "
                                   "untraced step, 0..1, after the per-op cost was fitted to it (what every gain "
                                   "rests on; above 0 when the fit reached MAX_FITTED_PER_OP_NS)",
    "measured_overhead_replay_error_share": "the same with the per-op cost as measured between sibling ops, before "
                                            "the fit: how much the trace alone misses",
    "profiler_overhead_source": "how profiler_overhead_ns was found: measured between sibling ops, or fitted to the "
                                "untraced steps",
    "gpu_idle_share": "share of step time the GPU ran nothing (0 on a CPU-only trace), 0..1",
    "where_time_goes": "the four largest causes in words with their shares of step time",
    "unrecognised_events": "events whose category no analysis understands (their time is in no cause)",
    "unrecognised": "those events' categories with counts, largest first ('' when none)",
}
#: Categories of bookkeeping events that are expected not to be analysed (the profiler's own span).
_BOOKKEEPING_CATEGORIES = ("trace", "")


#: The threshold findings whose causes the step model replays: where it ran, its findings replace them.
SUPERSEDES = (
    "training_loop.data_loader_bound", "training_loop.slow_optimizer_step", "training_loop.device_sync_in_step",
    "gpu_time.gpu_idle_host_launch", "kernels.many_tiny_kernels", "kernels.fp32_gemm_without_tensor_cores",
    "communication.exposed_communication", "roofline.fuse_elementwise", "roofline.mixed_precision",
)


@register("bottleneck", description="root causes of step time: attribution and what-if gains",
          page="overview", needs=("communication",), summary_keys=SUMMARY_KEYS, supersedes=SUPERSEDES)
def analyze(trace: Trace, communication_result: Result | None = None) -> Result:
    """Attribute every ns of each step to a cause and predict each recommendation's gain by replay."""
    if trace.events.empty:
        raise NotApplicable("the trace has no events")
    coll = None
    if communication_result is not None and "collectives" in communication_result.tables:
        coll = communication_result.table("collectives")
    model = build(trace, coll)
    if model.ops.empty and model.gpu.empty:
        raise NotApplicable("no host operators or GPU work inside the steps")
    attr = attribute(model)
    plan = _Plan(model)
    overhead = profiler_overhead(model)
    base = replay(model, plan=plan, unprofiled=overhead.cuts).step_ns
    replayed = replay(model, plan=plan).step_ns
    measured = model.step_ns
    untraced_ns = _untraced_step_ns(trace)
    measured_error = _error(base, untraced_ns)
    if untraced_ns is not None:
        # The run's own steps without the profiler say what it cost: the per-op cost is fitted to them.
        fitted = fit_overhead(model, untraced_ns, float(np.median(base)), lambda cuts: float(np.median(
            replay(model, plan=plan, unprofiled=cuts).step_ns)))
        if fitted is not overhead:
            overhead = fitted
            base = replay(model, plan=plan, unprofiled=overhead.cuts).step_ns
    unprofiled = overhead.cuts
    untraced = _untraced(untraced_ns, measured, base, measured_error)
    caveat = _caveat(untraced, base)
    rows, findings = [], []
    best: dict[str, tuple[float, whatif.Estimate]] = {}
    for transform in whatif.TRANSFORMS:
        est = transform(model, attr)
        if est is None:
            continue
        after = replay(model, est.change, plan=plan, unprofiled=unprofiled).step_ns if est.change is not None else None
        gain = _gain(base, after, measured) if after is not None else float("nan")
        rows.append({"finding_id": est.finding_id, "change": est.recommendation,
                     "step_ns_before": int(np.median(base)),
                     "step_ns_after": int(np.median(after)) if after is not None else -1,
                     "gain_fraction": gain, "model": est.model})
        key = est.finding_id
        if key not in best or (np.nan_to_num(gain) > np.nan_to_num(best[key][0])):
            best[key] = (gain, est)
    for gain, est in best.values():
        finding = _finding(trace, est, gain, attr, base, caveat)
        if finding is not None:
            findings.append(finding)
    findings.sort(key=lambda f: -f.gain_fraction)
    causes = attr.per_cause()
    idle = causes[~causes["cause"].str.startswith("gpu_compute:")]["share"].sum() if model.has_gpu else 0.0
    summary = {
        "steps": len(model.windows),
        "step_ns": int(np.median(measured)),
        "top_cause": str(causes["cause"].iloc[0]) if not causes.empty else "",
        "top_cause_share": float(causes["share"].iloc[0]) if not causes.empty else 0.0,
        "replay_error": float(abs(np.median(replayed) - np.median(measured)) / max(np.median(measured), 1)),
        "profiler_overhead_ns": overhead.per_op_ns,
        "profiler_overhead_source": overhead.source,
        "profiler_overhead_share": float(overhead.removed(model.windows["start_ns"].to_numpy(np.int64),
                                                          model.windows["end_ns"].to_numpy(np.int64)).sum()
                                         / max(int(measured.sum()), 1)),
        "gpu_idle_share": float(idle),
        "where_time_goes": ", ".join(f"{label} {format_share(share)}" for label, share in
                                     zip(causes["label"].head(4), causes["share"].head(4))),
    }
    summary.update(untraced)
    unknown = _unrecognised(trace)
    summary["unrecognised_events"] = int(unknown.sum())
    summary["unrecognised"] = "; ".join(f"{cat} x{int(n)}" for cat, n in unknown.head(5).items())
    whatif_table = pd.DataFrame(rows, columns=["finding_id", "change", "step_ns_before", "step_ns_after",
                                               "gain_fraction", "model"])
    return Result(analyzer="bottleneck", summary=summary, findings=tuple(findings), rank=trace.rank,
                  tables={"attribution": attr.table.drop(columns=["window"]), "causes": causes,
                          "whatif": whatif_table,
                          "coverage": pd.DataFrame({"category": unknown.index.astype(str),
                                                    "events": unknown.to_numpy(np.int64)})})


def _untraced_step_ns(trace: Trace) -> float | None:
    """The median of the run's steps with the profiler off, ns; None with fewer than ``MIN_UNTRACED_STEPS``."""
    windows = untraced_step_windows(trace)
    if len(windows) < MIN_UNTRACED_STEPS:
        return None
    return max(float(np.median(windows["end_ns"].to_numpy(np.int64) - windows["start_ns"].to_numpy(np.int64))), 1.0)


def _error(base: np.ndarray, untraced_ns: float | None) -> float | None:
    return None if untraced_ns is None else round(abs(float(np.median(base)) - untraced_ns) / untraced_ns, 4)


def _untraced(untraced_ns: float | None, measured: np.ndarray, base: np.ndarray,
              measured_error: float | None) -> dict:
    """The untraced step and how far the traced and the replayed unprofiled steps are from it (after the fit, and
    with the per-op cost as measured); nothing when the run has too few untraced steps (a plain trace has none)."""
    if untraced_ns is None:
        return {}
    return {"untraced_step_ns": int(untraced_ns),
            "traced_step_slowdown": round(float(np.median(measured)) / untraced_ns, 3),
            "untraced_replay_error_share": _error(base, untraced_ns),
            "measured_overhead_replay_error_share": measured_error}


def _unrecognised(trace: Trace) -> pd.Series:
    """Counts of events, by category as written, whose kind nothing understands (an MTIA's ``mtia_*``)."""
    ev = trace.events
    other = (ev["kind"] == "other").to_numpy()
    if not other.any():
        return pd.Series(dtype=np.int64)
    cats = ev["cat"][other].astype(object).fillna("").astype(str)
    counts = cats[~cats.str.lower().isin(_BOOKKEEPING_CATEGORIES)].value_counts()
    return counts.astype(np.int64)


def _gain(base: np.ndarray, after: np.ndarray, measured: np.ndarray) -> float:
    """Predicted reduction of step time: 1 - sum(replayed after) / sum(replayed unmodified), over the
    steps that did not stall.

    A sum, so that a GPU-bound run's backlog (paid in its last step) keeps host savings it cannot use
    at zero; without the steps measured longer than ``STALLED_STEP_FACTOR`` x the median, so that one
    step that stalled (the other rank still writing its trace) does not decide the prediction.
    """
    keep = measured <= STALLED_STEP_FACTOR * max(float(np.median(measured)), 1.0)
    keep[-1] |= after[-1] > base[-1]  # the last step carries the GPU's backlog: never drop it then
    return float(min(1.0, max(0.0, 1.0 - after[keep].sum() / max(base[keep].sum(), 1))))


def _caveat(untraced: dict, base: np.ndarray) -> str:
    """What a gain's text adds when the replay without the profiler misses the run's own untraced step by more
    than ``UNTRACED_CAVEAT_SHARE``: the gain rests on that replay."""
    error = untraced.get("untraced_replay_error_share")
    if error is None or error <= UNTRACED_CAVEAT_SHARE:
        return ""
    return (f"; check: this run's steps without the profiler took {format_duration_ns(untraced['untraced_step_ns'])}, "
            f"the replay without the profiler's cost {format_duration_ns(float(np.median(base)))} "
            f"({format_share(error)} off), so the gain is uncertain by about as much")


def _finding(trace: Trace, est: whatif.Estimate, gain: float, attr, unprofiled: np.ndarray,
             caveat: str = "") -> Finding | None:
    """The finding of one estimate, or None when its predicted gain is too small to act on."""
    causes = attr.per_cause()
    share = float(dict(zip(causes["cause"], causes["share"])).get(est.cause, 0.0)) if not causes.empty else 0.0
    known = np.isfinite(gain)
    if known and gain < MIN_GAIN_FRACTION:
        return None
    if not known and share < WARNING_GAIN_FRACTION:
        return None
    severity = ("critical" if known and gain >= CRITICAL_GAIN_FRACTION else
                "warning" if (not known or gain >= WARNING_GAIN_FRACTION) else "info")
    step = float(np.median(unprofiled))  # the gain is a share of the step without the profiler
    text = (f"{format_share(gain)} of step time (about {format_duration_ns(gain * step)} per step without the "
            f"profiler), "
            f"predicted by replaying the steps with the change: {est.model}{caveat}") if known else \
        f"unknown: {est.model}"
    evidence = dict(est.evidence)
    evidence["cause_share"] = round(share, 4)
    evidence["cause"] = cause_label(est.cause)
    if est.cause in attr.evidence:
        evidence["cause_evidence"] = attr.evidence[est.cause]
    return Finding(id=est.finding_id, analyzer="bottleneck", severity=severity, title=est.title,
                   evidence=evidence, recommendation=est.recommendation, estimated_gain=text,
                   gain_fraction=float(gain) if known else 0.0, rank=trace.rank, page="overview")

