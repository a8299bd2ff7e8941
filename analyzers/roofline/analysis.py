"""Roofline analyzer: FLOPs, bytes, arithmetic intensity and efficiency per operator and category, and MFU.

The steps, one module each (this module only puts them together and registers the analyzer):

* ``points`` — which ``cpu_op`` calls are roofline points and their cost (``hardware.op_costs``),
  over the per-thread call tree (``call_tree``) with their GPU time (``attribution``: kernels joined to
  the launching op by correlation id; on a CPU-only trace the call's own duration). FLOPs are the
  profiler's ``flops`` argument when non-zero (``with_flops=True``), else the shape estimate;
* ``roofs`` — roofs from ``device_specs.spec_for_trace`` (datasheet or measured host roofline, the
  latter raised to what the run achieved) and each point's peak dtype, bound and efficiency;
* ``tables`` — the aggregate tables; ``mfu`` — model FLOPs utilisation per step;
* ``rules`` — the findings, one function per rule.

Tables of the Result:

* ``ops`` — one row per (operator, category, dtype, input shapes): ``calls``, ``flops``, ``bytes``,
  ``time_ns``, ``intensity_flop_per_byte``, ``achieved_flops_per_s``, ``achieved_bytes_per_s``,
  ``peak_dtype``, ``peak_flops_per_s``, ``attainable_flops_per_s``, ``bound`` (compute | memory),
  ``efficiency``, ``time_share``, ``flops_source`` (profiler | estimated), ``tensor_core``, ``detail``
  (GEMM M/K/N, conv kernel/stride). Categories other/communication/transfer hold GPU time without a
  cost model (no intensity): the plot skips them, the shares count them.
* ``categories`` — the same per op category; ``kernel_categories`` — FLOPs/bytes of each point spread
  over its kernels by duration and summed per ``kernels.category_of`` category.
* ``roofs`` — per dtype: ``peak_flops_per_s``, ``mem_bw_bytes_per_s``, ``ridge_flop_per_byte``.
* ``steps`` — per step: ``ts_ns``, ``dur_ns``, ``flops``, ``achieved_flops_per_s``, ``mfu``, ``tokens``,
  ``model_flops``, ``model_mfu``.

Summary keys: ``SUMMARY_KEYS``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from torchscope.analyzers.core.args import any_has_key
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.hardware.device_specs import DeviceSpec, spec_for_trace
from torchscope.analyzers.roofline.mfu import step_mfu
from torchscope.analyzers.roofline.points import op_points, points_and_kernel_owner
from torchscope.analyzers.roofline.roofs import derive, dominant_dtype, lift_measured_roofs, roofs_table
from torchscope.analyzers.roofline.rules import ANALYZER, Evidence, findings
from torchscope.analyzers.roofline.tables import category_table, kernel_category_table, point_table
from torchscope.analyzers.timeline.launches import gpu_work

__all__ = ["analyze", "op_points", "SUMMARY_KEYS", "ANALYZER"]

#: Every key the roofline Result's summary can hold: what it is, with its unit.
SUMMARY_KEYS: dict[str, str] = {
    "device": "device name (from the spec, else the trace's device name, else 'unknown')",
    "device_key": "key of the device spec used (None without a spec)",
    "spec_source": "where the roofs come from (datasheet, measured host roofline, or none)",
    "spec_measured": "True when the roofs are a measured (host) roofline, bool",
    "mem_bw_bytes_per_s": "memory bandwidth roof, bytes/s (NaN without a spec)",
    "time_ns": "total time of the points and unmodelled GPU work, ns",
    "flops": "FLOPs of all points (profiler count or shape estimate)",
    "bytes": "bytes moved by all points (shape estimate)",
    "flops_counted_time_share": "share of time in points with a non-zero FLOP count, 0..1",
    "flops_estimated_share": "share of FLOPs from the shape estimate rather than the profiler, 0..1",
    "memory_bound_time_share": "share of time in memory-bound points, 0..1",
    "compute_bound_time_share": "share of time in compute-bound points, 0..1",
    "mfu_mean": "mean over steps of counted FLOP/s ÷ peak of the dominant dtype, 0..1 (NaN if unknown)",
    "model_mfu_mean": "mean over steps of 6·parameters·tokens FLOP/s ÷ peak, 0..1 (NaN if unknown)",
    "roofs_lifted_to_observed": "only when a measured roofline was raised: roof name -> new value (FLOP/s, bytes/s)",
    "dominant_dtype": "only with a spec: peak dtype carrying most matrix FLOPs (the roof to draw)",
    "peak_flops_per_s": "only with a spec: peak of the dominant dtype, FLOP/s",
    "ridge_flop_per_byte": "only with a spec: ridge point of the dominant dtype, FLOP/byte",
}


def _share(per_point: pd.DataFrame, bound: str, total_ns: int) -> float:
    return float(per_point.loc[per_point["bound"] == bound, "time_ns"].sum() / total_ns) if total_ns else 0.0


def _summary(trace: Trace, points: pd.DataFrame, per_point: pd.DataFrame, steps: pd.DataFrame,
             spec: DeviceSpec | None, lifted: dict[str, float], dom: str | None) -> dict:
    """The summary (keys: ``SUMMARY_KEYS``)."""
    total_ns = int(points["time_ns"].sum())
    counted = points[points["flops"] > 0]
    summary = {
        "device": spec.name if spec else trace.meta.device_name or "unknown",
        "device_key": spec.key if spec else None,
        "spec_source": spec.source if spec else "no spec: roofs unknown",
        "spec_measured": bool(spec.measured) if spec else False,
        "mem_bw_bytes_per_s": spec.mem_bw_bytes_per_s if spec else math.nan,
        "time_ns": total_ns,
        "flops": float(points["flops"].sum()),
        "bytes": float(points["bytes"].sum(skipna=True)),
        "flops_counted_time_share": float(counted["time_ns"].sum() / total_ns) if total_ns else 0.0,
        "flops_estimated_share": float(points.loc[points["flops_source"] == "estimated", "flops"].sum()
                                       / max(points["flops"].sum(), 1.0)),
        "memory_bound_time_share": _share(per_point, "memory", total_ns),
        "compute_bound_time_share": _share(per_point, "compute", total_ns),
        "mfu_mean": float(np.nanmean(steps["mfu"])) if not steps.empty and steps["mfu"].notna().any() else math.nan,
        "model_mfu_mean": float(np.nanmean(steps["model_mfu"]))
        if not steps.empty and steps["model_mfu"].notna().any() else math.nan,
    }
    if lifted:
        summary["roofs_lifted_to_observed"] = lifted
    if spec is not None:
        summary.update({"dominant_dtype": dom, "peak_flops_per_s": spec.peak(dom),
                        "ridge_flop_per_byte": spec.ridge(dom)})
    return summary


@register(ANALYZER, description="Roofline per operator and category, model FLOPs utilisation", page="roofline",
          summary_keys=SUMMARY_KEYS)
def analyze(trace: Trace, *, spec: DeviceSpec | None = None) -> Result:
    """Roofline of a trace: per-op/category FLOPs, bytes, intensity, bound, efficiency; MFU; findings."""
    if not any_has_key(trace.events["args"], "Input Dims", "flops"):
        raise NotApplicable("no recorded shapes or FLOP counts (profile with record_shapes=True)")
    spec = spec if spec is not None else spec_for_trace(trace)
    points, kernel_owner = points_and_kernel_owner(trace)
    if points.empty or points["time_ns"].sum() <= 0:
        raise NotApplicable("no operator with recorded shapes ran any measurable work")
    lifted: dict[str, float] = {}
    if spec is not None and spec.measured:
        spec, lifted = lift_measured_roofs(spec, point_table(points, spec))
    per_point = derive(points.copy(), spec)
    dom = dominant_dtype(points, spec) if spec is not None else None  # the roof to draw, found once
    steps = step_mfu(trace, points, spec, dominant=dom)
    found = []
    if spec is not None:
        where = "GPU kernel time" if not gpu_work(trace).empty else "operator time"
        found = findings(Evidence(points, per_point, spec, int(points["time_ns"].sum()), trace.rank, where, dom))
    return Result(
        analyzer=ANALYZER,
        tables={"ops": point_table(points, spec), "categories": category_table(per_point),
                "kernel_categories": kernel_category_table(trace, points, kernel_owner),
                "roofs": roofs_table(spec), "steps": steps},
        summary=_summary(trace, points, per_point, steps, spec, lifted, dom), findings=tuple(found), rank=trace.rank,
    )
