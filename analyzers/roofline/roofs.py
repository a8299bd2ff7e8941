"""Roofs of a device and where each point sits under them: peak dtype, attainable FLOP/s, bound, efficiency.

A point's compute roof is the peak of its dtype on matrix units for matrix ops (FP32 GEMMs: the
FP32 rate — PyTorch leaves TF32 off for matmul by default — unless the point's kernels are
tensor-core kernels by name (``kernels.is_tensor_core``: TF32 was allowed); FP32 convolutions on a
device with TF32: the TF32 rate, cuDNN's default) and the FP32 vector rate for everything else.
attainable = min(peak, intensity × bandwidth); bound = compute when intensity ≥ the ridge point;
efficiency = achieved FLOP/s ÷ peak when compute-bound, achieved bytes/s ÷ bandwidth when
memory-bound (the same as achieved ÷ attainable, and defined for zero-FLOP copies too).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from torchscope.analyzers.hardware.device_specs import DeviceSpec
from torchscope.analyzers.hardware.op_costs import MATRIX_CATEGORIES
from torchscope.analyzers.roofline.attribution import UNMODELLED_CATEGORIES

__all__ = ["peak_dtype_for", "derive", "roofs_table", "lift_measured_roofs", "dominant_dtype", "LIFT_MIN_TIME_NS"]

#: Points shorter than this (total ns) do not lift a measured host roofline (timer noise).
LIFT_MIN_TIME_NS = 200_000


def peak_dtype_for(category: str, dtype: str | None, spec: DeviceSpec, tensor_core: bool = False) -> str:
    """Which of the device's peaks bounds an op of ``category`` and ``dtype`` (see module doc)."""
    if category in MATRIX_CATEGORIES:
        if dtype in (None, "fp32"):
            if (category == "conv" or tensor_core) and spec.peak_flops_per_s.get("tf32"):
                return "tf32"
            return "fp32_matrix"
        return dtype
    return "fp64" if dtype == "fp64" else "fp32"


def derive(g: pd.DataFrame, spec: DeviceSpec | None) -> pd.DataFrame:
    """``g`` (rows with flops, bytes, time_ns) with intensity, achieved rates, roofs, bound and efficiency added."""
    t_s = g["time_ns"].to_numpy(dtype=float) / 1e9
    flops = g["flops"].to_numpy(dtype=float)
    nbytes = g["bytes"].to_numpy(dtype=float)
    new: dict = {}  # the added columns, joined to ``g`` in one step (not one insertion each)
    with np.errstate(divide="ignore", invalid="ignore"):
        new["intensity_flop_per_byte"] = np.where(nbytes > 0, flops / nbytes, np.nan)
        new["achieved_flops_per_s"] = np.where(t_s > 0, flops / t_s, np.nan)
        new["achieved_bytes_per_s"] = np.where(t_s > 0, nbytes / t_s, np.nan)
    if spec is None:
        for col in ("peak_dtype", "bound"):
            new[col] = None
        for col in ("peak_flops_per_s", "attainable_flops_per_s", "efficiency"):
            new[col] = np.nan
        return _joined(g, new)
    tcs = g["tensor_core"] if "tensor_core" in g else pd.Series(False, index=g.index)
    memo: dict = {}  # a few distinct (category, dtype, tensor core) for thousands of rows

    def roof(c, d, t) -> tuple[str | None, float]:
        key = (c, d, t)
        if key not in memo:
            dt = peak_dtype_for(c, d or None, spec, bool(t)) if c not in UNMODELLED_CATEGORIES else None
            memo[key] = (dt, spec.peak(dt) if dt else np.nan)
        return memo[key]

    # The roof of each distinct (category, dtype, tensor core), spread over the rows by one code per row.
    code = np.zeros(len(g), np.int64)
    values = []
    for series in (g["category"], g["dtype"], pd.Series(tcs, index=g.index)):
        col = series.to_numpy(dtype=object)
        if series.dtype == object:
            # None and NaN answer differently (``d or None``) but factorize as one missing value: None is told apart.
            c, uniq = pd.factorize(np.array(["\0None" if v is None else v for v in col.tolist()], dtype=object),
                                   use_na_sentinel=False)
        else:  # a typed column (str, bool) has one missing value
            c, uniq = pd.factorize(series, use_na_sentinel=False)
        code = code * max(len(uniq), 1) + c
        values.append(col)
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    roofs = [roof(values[0][i], values[1][i], values[2][i]) for i in first.tolist()]
    inverse = inverse.reshape(-1)
    dtypes = np.array([r[0] for r in roofs], dtype=object)[inverse].tolist()
    peak = np.array([r[1] for r in roofs], dtype=float)[inverse]
    bw = spec.mem_bw_bytes_per_s
    ai = new["intensity_flop_per_byte"]
    ridge = peak / bw
    known = ~np.isnan(ai) & ~np.isnan(peak)
    compute = known & (ai >= ridge)
    with np.errstate(invalid="ignore"):
        attainable = np.where(known, np.minimum(peak, ai * bw), np.nan)
        eff = np.where(compute, new["achieved_flops_per_s"] / peak,
                       np.where(known, new["achieved_bytes_per_s"] / bw, np.nan))
    new["peak_dtype"] = dtypes
    new["peak_flops_per_s"] = peak
    new["attainable_flops_per_s"] = attainable
    new["bound"] = np.where(compute, "compute", np.where(known, "memory", None))
    new["efficiency"] = eff
    return _joined(g, new)


def _joined(g: pd.DataFrame, new: dict) -> pd.DataFrame:
    """``g`` with the ``new`` columns (replacing any of the same name), in that order after its own."""
    if any(col in g.columns for col in new):
        for col, values in new.items():
            g[col] = values
        return g
    return pd.concat([g, pd.DataFrame(new, index=g.index)], axis=1)


def roofs_table(spec: DeviceSpec | None) -> pd.DataFrame:
    """One row per dtype the device has a peak for: peak FLOP/s, bandwidth, ridge point (FLOP/byte)."""
    cols = ["dtype", "peak_flops_per_s", "mem_bw_bytes_per_s", "ridge_flop_per_byte"]
    if spec is None:
        return pd.DataFrame(columns=cols)
    rows = [{"dtype": d, "peak_flops_per_s": v, "mem_bw_bytes_per_s": spec.mem_bw_bytes_per_s,
             "ridge_flop_per_byte": v / spec.mem_bw_bytes_per_s}
            for d, v in spec.peak_flops_per_s.items() if d != "int8"]
    return pd.DataFrame(rows, columns=cols).sort_values("peak_flops_per_s", ignore_index=True)


def lift_measured_roofs(spec: DeviceSpec, per_point: pd.DataFrame) -> tuple[DeviceSpec, dict[str, float]]:
    """A measured (host) roofline raised to the best throughput the run itself achieved, if higher.

    A roofline measured by a short benchmark on a busy host can sit below what the workload then
    reaches; the best observed rate (over points of at least ``LIFT_MIN_TIME_NS``) is a lower bound
    of the true roof. Datasheet roofs are never changed.
    """
    lifted: dict[str, float] = {}
    ok = per_point[(per_point["time_ns"] >= LIFT_MIN_TIME_NS) & per_point["peak_dtype"].notna()]
    if ok.empty:
        return spec, lifted
    peaks = dict(spec.peak_flops_per_s)
    for dtype, grp in ok[ok["bound"] == "compute"].groupby("peak_dtype"):
        key = spec.resolve_dtype(str(dtype))
        best = float(grp["achieved_flops_per_s"].max())
        if best > peaks.get(key, 0.0):
            peaks[key] = best
            lifted[f"{key}_flops_per_s"] = best
    bw = spec.mem_bw_bytes_per_s
    memory = ok["bound"] == "memory"
    best_bw = float(ok.loc[memory, "achieved_bytes_per_s"].max()) if memory.any() else 0.0
    if best_bw > bw:
        bw = best_bw
        lifted["mem_bw_bytes_per_s"] = best_bw
    if not lifted:
        return spec, lifted
    note = "; roofs raised to the best rate this run achieved (the measurement was lower)"
    return replace(spec, peak_flops_per_s=peaks, mem_bw_bytes_per_s=bw, source=spec.source + note), lifted


def dominant_dtype(points: pd.DataFrame, spec: DeviceSpec) -> str:
    """The peak dtype (tensor-core use included) that carries the most matrix FLOPs."""
    mat = points[points["category"].isin(MATRIX_CATEGORIES)]
    if mat.empty:
        return "fp32"
    tcs = mat["tensor_core"] if "tensor_core" in mat else pd.Series(False, index=mat.index)
    memo: dict = {}
    keys = [memo[k] if k in memo else memo.setdefault(k, peak_dtype_for(k[0], k[1], spec, k[2]))
            for k in ((c, d if isinstance(d, str) and d else None, bool(t))
                      for c, d, t in zip(mat["category"].to_numpy(dtype=object), mat["dtype"].to_numpy(dtype=object),
                                         np.asarray(tcs, dtype=object)))]
    return str(mat["flops"].groupby(pd.Series(keys, index=mat.index)).sum().idxmax())
