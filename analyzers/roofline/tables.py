"""The roofline's aggregate tables: per operator shape, per op category, per kernel category.

* ``point_table`` — one row per (operator, category, dtype, input shapes): ``calls``, ``flops``,
  ``bytes``, ``time_ns``, intensity, achieved rates, roofs, ``bound``, ``efficiency``, ``time_share``;
* ``category_table`` — the same per op category, with the memory-bound share of its time;
* ``kernel_category_table`` — FLOPs/bytes of each point spread over its kernels by duration and
  summed per ``kernels.category_of`` category.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers import kernels as kernel_rules
from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.hardware.device_specs import DeviceSpec
from torchscope.analyzers.roofline.roofs import derive
from torchscope.analyzers.timeline.launches import gpu_work

__all__ = ["point_table", "category_table", "kernel_category_table"]


def point_table(points: pd.DataFrame, spec: DeviceSpec | None) -> pd.DataFrame:
    """Points aggregated per (operator, category, dtype, shapes) with intensity, roofs, bound, efficiency."""
    cols = ["name", "category", "dtype", "shapes", "detail", "calls", "flops", "bytes", "time_ns",
            "intensity_flop_per_byte", "achieved_flops_per_s", "achieved_bytes_per_s", "peak_dtype",
            "peak_flops_per_s", "attainable_flops_per_s", "bound", "efficiency", "time_share", "flops_source",
            "tensor_core"]
    if points.empty:
        return pd.DataFrame(columns=cols)
    p = points.copy()
    p["dtype"] = p["dtype"].fillna("")
    # One grouping, each column reduced on it (what a named aggregation does, without its per-call setup).
    by = p.groupby(["name", "category", "dtype", "shapes"], sort=False, dropna=False)
    g = pd.DataFrame({
        "detail": by["detail"].first(), "calls": by["time_ns"].size(), "flops": by["flops"].sum(),
        "bytes": by["bytes"].sum(), "time_ns": by["time_ns"].sum(), "flops_source": by["flops_source"].first(),
        "tensor_core": by["tensor_core"].any(),
    }).reset_index()
    g = derive(g, spec)
    total = g["time_ns"].sum()
    g["time_share"] = g["time_ns"] / total if total > 0 else 0.0
    return g.sort_values("time_ns", ascending=False, ignore_index=True)[cols]


def category_table(per_point: pd.DataFrame) -> pd.DataFrame:
    """Per op category (points with ``bound`` already derived): totals, intensity, memory-bound share."""
    cols = ["category", "calls", "flops", "bytes", "time_ns", "time_share", "intensity_flop_per_byte",
            "achieved_flops_per_s", "achieved_bytes_per_s", "memory_bound_time_share"]
    if per_point.empty:
        return pd.DataFrame(columns=cols)
    by = per_point.groupby("category", sort=False)
    g = pd.DataFrame({"calls": by["time_ns"].size(), "flops": by["flops"].sum(), "bytes": by["bytes"].sum(),
                      "time_ns": by["time_ns"].sum()}).reset_index()
    g = derive(g, None)
    total = g["time_ns"].sum()
    g["time_share"] = g["time_ns"] / total if total > 0 else 0.0
    # Memory-bound time per category: integer sums over the category codes (exact, as a groupby sum).
    code, cats = pd.factorize(per_point["category"].to_numpy(dtype=object))
    memory = (per_point["bound"] == "memory").to_numpy(dtype=bool) & (code >= 0)
    sums = np.zeros(len(cats), np.int64)
    np.add.at(sums, code[memory], per_point["time_ns"].to_numpy(np.int64)[memory])
    mb = {c: s for c, s, n in zip(cats.tolist(), sums.tolist(), np.bincount(code[memory], minlength=len(cats))) if n}
    g["memory_bound_time_share"] = [
        (mb.get(c, 0) / t) if t > 0 else np.nan for c, t in zip(g["category"], g["time_ns"])]
    return g.sort_values("time_ns", ascending=False, ignore_index=True)[cols]


def kernel_category_table(trace: Trace, points: pd.DataFrame, kernel_owner: np.ndarray) -> pd.DataFrame:
    """FLOPs/bytes of each point spread over its kernels by duration, summed per kernel category."""
    cols = ["kernel_category", "kernels", "time_ns", "flops", "bytes", "intensity_flop_per_byte",
            "achieved_flops_per_s"]
    gpu = gpu_work(trace)
    if gpu.empty or kernel_owner.size != len(gpu):
        return pd.DataFrame(columns=cols)
    cat = kernel_rules.kernel_categories(trace, gpu).to_numpy()
    dur = gpu["dur_ns"].to_numpy(dtype=float)
    flops = np.zeros(len(gpu))
    nbytes = np.zeros(len(gpu))
    own_total = np.zeros(max(int(kernel_owner.max()) + 1, 1)) if kernel_owner.size else np.zeros(1)
    ok = kernel_owner >= 0
    np.add.at(own_total, kernel_owner[ok], dur[ok])
    is_point = points["op_index"].to_numpy(np.int64) >= 0
    op_index = points["op_index"].to_numpy(np.int64)[is_point]
    size = max(own_total.size, int(op_index.max()) + 1 if op_index.size else 0)
    op_flops, op_bytes = np.zeros(size), np.zeros(size)  # 0 for ops that are no point
    op_flops[op_index] = points["flops"].to_numpy(dtype=float)[is_point]
    op_bytes[op_index] = points["bytes"].to_numpy(dtype=float)[is_point]
    k = np.flatnonzero(ok)
    o = kernel_owner[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(own_total[o] > 0, dur[k] / own_total[o], 0.0)
    flops[k] = op_flops[o] * share
    nbytes[k] = op_bytes[o] * share
    df = pd.DataFrame({"kernel_category": cat, "time_ns": dur, "flops": flops, "bytes": nbytes})
    by = df.groupby("kernel_category")
    g = pd.DataFrame({"kernels": by["time_ns"].size(), "time_ns": by["time_ns"].sum(), "flops": by["flops"].sum(),
                      "bytes": by["bytes"].sum()}).reset_index()
    g["time_ns"] = g["time_ns"].astype(np.int64)
    g = derive(g, None)
    return g.sort_values("time_ns", ascending=False, ignore_index=True)[cols]
