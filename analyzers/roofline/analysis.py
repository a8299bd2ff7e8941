"""Roofline: FLOPs, bytes, arithmetic intensity and efficiency per operator and category, and MFU.

Which calls become roofline points. On every CPU thread the ``cpu_op`` events form a call tree.
Each call with recorded shapes gets a cost model (``op_costs.estimate_op_cost``). Matrix ops
(GEMM, convolution, fused attention) are points unless a matrix op is nested inside them
(``aten::linear`` → ``aten::addmm``: the inner call is the point); the elementwise/copy calls
nested inside a matrix point belong to it. Any other modelled call is a point when no modelled
call is nested in it (``aten::softmax`` → ``aten::_softmax``). A naive attention written with
``matmul`` + ``softmax`` + ``matmul`` therefore shows up as its pieces, which is what lets the
naive-attention finding see it. FLOPs are the profiler's ``flops`` argument when it is non-zero
(``with_flops=True``), else the shape estimate (the profiler counts 0 for attention on some
backends and for every elementwise op).

Time of a point. On a GPU trace: the summed duration of the GPU work (kernels, memcpy, memset)
launched from inside the point's call tree, joined kernel → runtime call by correlation id and
runtime call → innermost enclosing ``cpu_op`` by time on the same thread. On a CPU-only trace:
the call's own duration. Kernels launched from calls outside any point are kept as "other"
(time without a cost model) so the category shares add up to the GPU kernel time.

Roofs come from ``device_specs.spec_for_trace``: the GPU's datasheet or the host's measured
roofline. A point's compute roof is the peak of its dtype on matrix units for matrix ops (FP32
GEMMs: the FP32 rate — PyTorch leaves TF32 off for matmul by default — unless the point's kernels
are tensor-core kernels by name (``kernels.is_tensor_core``: TF32 was allowed); FP32 convolutions
on a device with TF32: the TF32 rate, cuDNN's default) and the FP32 vector rate for everything else.
attainable = min(peak, intensity × bandwidth); bound = compute when intensity ≥ the ridge point;
efficiency = achieved FLOP/s ÷ peak when compute-bound, achieved bytes/s ÷ bandwidth when
memory-bound (the same as achieved ÷ attainable, and defined for zero-FLOP copies too).

Model FLOPs utilisation per step: counted FLOPs of the points that start inside the step ÷ step
time ÷ the peak of the dtype carrying most of the matrix FLOPs; and, when the run reports tokens
per step and the parameter count (manifest ``user_counts`` ``tokens_per_step`` and ``parameters``, or
``model.parameters``; tokens per step also from the ``steps`` stream),
``6 × parameters × tokens ÷ step time ÷ peak`` (the dense-transformer training estimate: forward 2,
backward 4 FLOPs per parameter per token).

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
* ``steps`` — per step: ``dur_ns``, ``flops``, ``achieved_flops_per_s``, ``mfu``, ``tokens``,
  ``model_flops``, ``model_mfu``.

Summary: device, spec source, ``dominant_dtype`` with its ``peak_flops_per_s`` and
``ridge_flop_per_byte`` (draw this roof), bandwidth, memory/compute-bound time shares, mean MFU.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from typing import Mapping

import numpy as np
import pandas as pd

from torchscope.analyzers import kernels as kernel_rules
from torchscope.analyzers.hardware.device_specs import DeviceSpec, spec_for_trace
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.hardware.op_costs import MATRIX_CATEGORIES, OpCost, estimate_op_cost
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.trace import Trace

__all__ = [
    "analyze", "op_points", "point_table", "roofs_table", "step_mfu", "peak_dtype_for", "lift_measured_roofs",
    "FUSION_MIN_CHAIN", "FUSION_MIN_SHARE", "GEMM_LOW_EFFICIENCY", "GEMM_FINDING_MIN_SHARE",
    "GEMM_TARGET_EFFICIENCY", "MIXED_PRECISION_MIN_SHARE", "SMALL_BATCH_MEMORY_BOUND_SHARE",
    "SMALL_BATCH_MIN_GEMM_SHARE", "NAIVE_ATTENTION_MIN_SHARE",
]

ANALYZER = "roofline"

#: Consecutive memory-bound elementwise/norm/softmax points on one thread that count as a chain.
FUSION_MIN_CHAIN = 3
#: Raise the fusion finding when such chains take at least this share of GPU (or op) time.
FUSION_MIN_SHARE = 0.05
#: A compute-bound GEMM/conv below this efficiency (of its dtype's peak) is "low efficiency".
GEMM_LOW_EFFICIENCY = 0.5
#: Raise the low-efficiency GEMM finding when those GEMMs take this share of time.
GEMM_FINDING_MIN_SHARE = 0.05
#: Efficiency assumed reachable by a well-shaped GEMM when the trace has no aligned GEMM to compare with.
GEMM_TARGET_EFFICIENCY = 0.6
#: Raise the mixed-precision finding when FP32 matrix ops take this share of time on a device
#: whose 16-bit matrix peak is at least twice its FP32 peak.
MIXED_PRECISION_MIN_SHARE = 0.10
#: The batch finding needs this share of GEMM time to be memory-bound ...
SMALL_BATCH_MEMORY_BOUND_SHARE = 0.5
#: ... and GEMMs to take at least this share of time.
SMALL_BATCH_MIN_GEMM_SHARE = 0.2
#: Raise the naive-attention finding when the matmul-softmax-matmul pattern takes this share of time.
NAIVE_ATTENTION_MIN_SHARE = 0.02
#: Points shorter than this (total ns) do not lift a measured host roofline (timer noise).
LIFT_MIN_TIME_NS = 200_000
#: Points allowed between the first matmul and the softmax, and between softmax and the second matmul.
NAIVE_ATTENTION_GAP = 3

#: Copies that move data over PCIe/NVLink (host<->device, peer), not through device memory.
_TRANSFER_RE = r"HtoD|DtoH|HtoH|PtoP|H2D|D2H|P2P"
#: Categories of rows without a cost model (GPU time only).
UNMODELLED_CATEGORIES = ("other", "communication", "transfer")

_COLUMNS_POINTS = [
    "name", "category", "dtype", "shapes", "detail", "ts_ns", "tid", "flops", "flops_source", "bytes",
    "time_ns", "kernels", "op_index", "tensor_core",
]


# ---------------------------------------------------------------------------------------- points
def _arg(args: object, key: str) -> object:
    # The loader gives plain dicts; a concrete type check is far cheaper than the Mapping ABC here.
    return args.get(key) if isinstance(args, dict) else None


def op_points(trace: Trace) -> pd.DataFrame:
    """One row per roofline point (operator call): cost, dtype, and its GPU or CPU time in ns."""
    return _points_and_kernel_owner(trace)[0]


def _points_and_kernel_owner(trace: Trace) -> tuple[pd.DataFrame, np.ndarray]:
    """Points, and for each GPU event the ``op_index`` of the point that launched it (-1: none)."""
    ev = trace.events
    ops = ev[ev["kind"] == "cpu_op"]
    if ops.empty:
        return pd.DataFrame(columns=_COLUMNS_POINTS), np.empty(0, np.int64)
    gpu = trace.gpu_events()
    on_gpu = not gpu.empty
    runtime = ev[(ev["kind"] == "runtime") & (ev["correlation"] >= 0)] if on_gpu else ev.iloc[:0]

    # Cost model per op (distinct argument lists are evaluated once).
    names = ops["name"].astype(str).to_numpy()
    args = ops["args"].to_numpy()
    costs: list[OpCost | None] = []
    profiler_flops = np.zeros(len(ops))
    cache: dict = {}
    for i, (name, a) in enumerate(zip(names, args)):
        dims = _arg(a, "Input Dims")
        f = _arg(a, "flops")
        if isinstance(f, (int, float)) and f > 0:
            profiler_flops[i] = float(f)
        if not dims:
            costs.append(None)
            continue
        types = _arg(a, "Input type")
        concrete = _arg(a, "Concrete Inputs")
        key = (name, repr(dims), repr(types), repr(concrete))
        if key not in cache:
            cache[key] = estimate_op_cost(name, dims, types, concrete)
        costs.append(cache[key])

    # Call trees per thread: parents, then which calls are points and who owns each call.
    n_ops = len(ops)
    ts = ops["ts_ns"].to_numpy()
    end = ts + ops["dur_ns"].to_numpy()
    threads = (ops["pid"].astype(np.int64).to_numpy(), ops["tid"].astype(np.int64).to_numpy())
    rt_ts = runtime["ts_ns"].to_numpy() if on_gpu else np.empty(0, np.int64)
    rt_threads = (runtime["pid"].astype(np.int64).to_numpy(), runtime["tid"].astype(np.int64).to_numpy()) if on_gpu \
        else (np.empty(0, np.int64), np.empty(0, np.int64))
    parent = np.full(n_ops, -1, dtype=np.int64)
    rt_owner_op = np.full(len(rt_ts), -1, dtype=np.int64)
    # Events of all threads sorted by (pid, tid, ts, ops before runtime calls, longer first).
    all_pid = np.concatenate([threads[0], rt_threads[0]])
    all_tid = np.concatenate([threads[1], rt_threads[1]])
    all_ts = np.concatenate([ts, rt_ts])
    is_rt = np.concatenate([np.zeros(n_ops, bool), np.ones(len(rt_ts), bool)])
    all_dur = np.concatenate([end - ts, np.zeros(len(rt_ts), np.int64)])
    order = np.lexsort((-all_dur, is_rt, all_ts, all_tid, all_pid))
    stack: list[int] = []
    cur_thread = None
    for j in order:
        thread = (all_pid[j], all_tid[j])
        if thread != cur_thread:
            stack = []
            cur_thread = thread
        t = all_ts[j]
        while stack and end[stack[-1]] <= t:
            stack.pop()
        if is_rt[j]:
            rt_owner_op[j - n_ops] = stack[-1] if stack else -1
            continue
        parent[j] = stack[-1] if stack else -1
        stack.append(j)

    modelled = np.array([c is not None for c in costs])
    matrix = np.array([c is not None and c.category in MATRIX_CATEGORIES for c in costs])
    has_matrix_desc = np.zeros(n_ops, bool)
    has_modelled_desc = np.zeros(n_ops, bool)
    preorder = np.lexsort((-(end - ts), ts, threads[1], threads[0]))
    for i in preorder[::-1]:  # children before parents
        p = parent[i]
        if p >= 0:
            has_matrix_desc[p] |= has_matrix_desc[i] or matrix[i]
            has_modelled_desc[p] |= has_modelled_desc[i] or modelled[i]
    is_point = np.zeros(n_ops, bool)
    owner = np.full(n_ops, -1, dtype=np.int64)
    for i in preorder:
        p = parent[i]
        inherited = owner[p] if p >= 0 else -1
        if matrix[i] and not has_matrix_desc[i]:
            is_point[i] = True
        elif modelled[i] and not matrix[i] and not has_modelled_desc[i]:
            # Inside a matrix point it is part of that op (bias copy, cast), not a point of its own.
            is_point[i] = inherited < 0 or not matrix[inherited]
        owner[i] = i if is_point[i] else inherited

    # Time of each point.
    time_ns = np.zeros(n_ops, dtype=np.int64)
    n_kernels = np.zeros(n_ops, dtype=np.int64)
    n_tensor_core = np.zeros(n_ops, dtype=np.int64)
    other_rows: list[dict] = []
    kernel_owner = np.empty(0, np.int64)
    if on_gpu:
        corr_to_op = pd.Series(
            np.where(rt_owner_op >= 0, owner[np.maximum(rt_owner_op, 0)], -1),
            index=runtime["correlation"].to_numpy(),
        )
        corr_to_op = corr_to_op[~corr_to_op.index.duplicated(keep="first")]
        corr_to_launch = pd.Series(rt_owner_op, index=runtime["correlation"].to_numpy())
        corr_to_launch = corr_to_launch[~corr_to_launch.index.duplicated(keep="first")]
        kcorr = gpu["correlation"].to_numpy()
        kernel_owner = corr_to_op.reindex(kcorr).fillna(-1).to_numpy().astype(np.int64)
        knames = gpu["name"].astype(str)
        kinds = gpu["kind"].astype(str).to_numpy()
        # Host<->device and peer copies run over PCIe/NVLink, not HBM: kept out of the memory roof.
        transfer = (kinds == "memcpy") & knames.str.contains(_TRANSFER_RE, regex=True).to_numpy()
        kernel_owner[transfer] = -1
        kdur = gpu["dur_ns"].to_numpy()
        owned = kernel_owner >= 0
        np.add.at(time_ns, kernel_owner[owned], kdur[owned])
        np.add.at(n_kernels, kernel_owner[owned], 1)
        tc = kernel_rules.is_tensor_core(knames).to_numpy(dtype=bool)
        np.add.at(n_tensor_core, kernel_owner[owned], tc[owned].astype(np.int64))
        # GPU work with no point: group by the outermost named operator that launched it.
        launch = corr_to_launch.reindex(kcorr).fillna(-1).to_numpy().astype(np.int64)
        loose = np.nonzero(kernel_owner < 0)[0]
        kcat = kernel_rules.category_of(knames.iloc[loose], gpu["kind"].iloc[loose]).to_numpy()
        kts = gpu["ts_ns"].to_numpy()
        groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, -1])
        knames_np = knames.to_numpy()
        for pos, k in enumerate(loose):
            category = "transfer" if transfer[k] else ("communication" if kcat[pos] == kernel_rules.COMMUNICATION
                                                       else "other")
            label = _outermost_name(launch[k], parent, names) if launch[k] >= 0 else None
            if label is None or category == "transfer":
                label = knames_np[k] if kinds[k] == "kernel" else str(knames_np[k]).split(" (")[0]
            g = groups[(label, category)]
            g[0] += int(kdur[k])
            g[1] += 1
            g[2] = int(kts[k]) if g[2] < 0 else g[2]
        for (label, category), (dur, count, first_ts) in groups.items():
            other_rows.append({"name": label, "category": category, "dtype": None, "shapes": "", "detail": "",
                               "ts_ns": first_ts, "tid": -1, "flops": 0.0, "flops_source": "none",
                               "bytes": math.nan, "time_ns": dur, "kernels": count, "op_index": -1,
                               "tensor_core": False})
    else:
        time_ns = end - ts

    idx = np.nonzero(is_point)[0]
    rows = []
    for i in idx:
        c = costs[i]
        if on_gpu and n_kernels[i] == 0:
            continue  # host-side call (a CPU tensor, a view): nothing ran on the GPU
        pf = profiler_flops[i]
        dims = _arg(args[i], "Input Dims")
        rows.append({
            "name": names[i], "category": c.category, "dtype": c.dtype,
            "shapes": _shape_key(dims), "detail": c.detail, "ts_ns": int(ts[i]), "tid": int(threads[1][i]),
            "flops": pf if pf > 0 else c.flops, "flops_source": "profiler" if pf > 0 else "estimated",
            "bytes": c.bytes, "time_ns": int(time_ns[i]), "kernels": int(n_kernels[i]), "op_index": int(i),
            "tensor_core": bool(n_tensor_core[i] > 0),
        })
    return pd.DataFrame(rows + other_rows, columns=_COLUMNS_POINTS), kernel_owner


def _outermost_name(i: int, parent: np.ndarray, names: np.ndarray) -> str | None:
    """Outermost operator ("ns::op", not autograd machinery) on the call path to op ``i``."""
    best = None
    while i >= 0:
        name = names[i]
        if "::" in name and not name.startswith("autograd::") and not name.startswith("ProfilerStep"):
            best = name
        i = parent[i]
    return best


def _shape_key(dims: object) -> str:
    if not isinstance(dims, (list, tuple)):
        return ""
    return str([d for d in dims if d])[:120]


# ---------------------------------------------------------------------------------------- roofs
def peak_dtype_for(category: str, dtype: str | None, spec: DeviceSpec, tensor_core: bool = False) -> str:
    """Which of the device's peaks bounds an op of ``category`` and ``dtype`` (see module doc)."""
    if category in MATRIX_CATEGORIES:
        if dtype in (None, "fp32"):
            if (category == "conv" or tensor_core) and spec.peak_flops_per_s.get("tf32"):
                return "tf32"
            return "fp32_matrix"
        return dtype
    return "fp64" if dtype == "fp64" else "fp32"


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
    g = p.groupby(["name", "category", "dtype", "shapes"], sort=False, dropna=False).agg(
        detail=("detail", "first"), calls=("time_ns", "size"), flops=("flops", "sum"),
        bytes=("bytes", "sum"), time_ns=("time_ns", "sum"), flops_source=("flops_source", "first"),
        tensor_core=("tensor_core", "any"),
    ).reset_index()
    g = _derive(g, spec)
    total = g["time_ns"].sum()
    g["time_share"] = g["time_ns"] / total if total > 0 else 0.0
    return g.sort_values("time_ns", ascending=False, ignore_index=True)[cols]


def _derive(g: pd.DataFrame, spec: DeviceSpec | None) -> pd.DataFrame:
    """Adds intensity, achieved rates, roofs, bound and efficiency to rows with flops/bytes/time_ns."""
    t_s = g["time_ns"].to_numpy(dtype=float) / 1e9
    flops = g["flops"].to_numpy(dtype=float)
    nbytes = g["bytes"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        g["intensity_flop_per_byte"] = np.where(nbytes > 0, flops / nbytes, np.nan)
        g["achieved_flops_per_s"] = np.where(t_s > 0, flops / t_s, np.nan)
        g["achieved_bytes_per_s"] = np.where(t_s > 0, nbytes / t_s, np.nan)
    if spec is None:
        for col in ("peak_dtype", "bound"):
            g[col] = None
        for col in ("peak_flops_per_s", "attainable_flops_per_s", "efficiency"):
            g[col] = np.nan
        return g
    tcs = g["tensor_core"] if "tensor_core" in g else pd.Series(False, index=g.index)
    dtypes = [peak_dtype_for(c, d or None, spec, bool(t)) if c not in UNMODELLED_CATEGORIES else None
              for c, d, t in zip(g["category"], g["dtype"], tcs)]
    peak = np.array([spec.peak(d) if d else np.nan for d in dtypes])
    bw = spec.mem_bw_bytes_per_s
    ai = g["intensity_flop_per_byte"].to_numpy(dtype=float)
    ridge = peak / bw
    known = ~np.isnan(ai) & ~np.isnan(peak)
    compute = known & (ai >= ridge)
    with np.errstate(invalid="ignore"):
        attainable = np.where(known, np.minimum(peak, ai * bw), np.nan)
        eff = np.where(compute, g["achieved_flops_per_s"] / peak,
                       np.where(known, g["achieved_bytes_per_s"] / bw, np.nan))
    g["peak_dtype"] = dtypes
    g["peak_flops_per_s"] = peak
    g["attainable_flops_per_s"] = attainable
    g["bound"] = np.where(compute, "compute", np.where(known, "memory", None))
    g["efficiency"] = eff
    return g


def roofs_table(spec: DeviceSpec | None) -> pd.DataFrame:
    """One row per dtype the device has a peak for: peak FLOP/s, bandwidth, ridge point (FLOP/byte)."""
    cols = ["dtype", "peak_flops_per_s", "mem_bw_bytes_per_s", "ridge_flop_per_byte"]
    if spec is None:
        return pd.DataFrame(columns=cols)
    rows = [{"dtype": d, "peak_flops_per_s": v, "mem_bw_bytes_per_s": spec.mem_bw_bytes_per_s,
             "ridge_flop_per_byte": v / spec.mem_bw_bytes_per_s}
            for d, v in spec.peak_flops_per_s.items() if d != "int8"]
    return pd.DataFrame(rows, columns=cols).sort_values("peak_flops_per_s", ignore_index=True)


def _category_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per op category (points with ``bound`` already derived): totals, intensity, memory-bound share."""
    cols = ["category", "calls", "flops", "bytes", "time_ns", "time_share", "intensity_flop_per_byte",
            "achieved_flops_per_s", "achieved_bytes_per_s", "memory_bound_time_share"]
    if points.empty:
        return pd.DataFrame(columns=cols)
    g = points.groupby("category", sort=False).agg(
        calls=("time_ns", "size"), flops=("flops", "sum"), bytes=("bytes", "sum"), time_ns=("time_ns", "sum"),
    ).reset_index()
    g = _derive(g, None)
    total = g["time_ns"].sum()
    g["time_share"] = g["time_ns"] / total if total > 0 else 0.0
    mb = points[points["bound"] == "memory"].groupby("category")["time_ns"].sum()
    g["memory_bound_time_share"] = [
        (mb.get(c, 0) / t) if t > 0 else np.nan for c, t in zip(g["category"], g["time_ns"])]
    return g.sort_values("time_ns", ascending=False, ignore_index=True)[cols]


def _kernel_category_table(trace: Trace, points: pd.DataFrame, kernel_owner: np.ndarray) -> pd.DataFrame:
    """FLOPs/bytes of each point spread over its kernels by duration, summed per kernel category."""
    cols = ["kernel_category", "kernels", "time_ns", "flops", "bytes", "intensity_flop_per_byte",
            "achieved_flops_per_s"]
    gpu = trace.gpu_events()
    if gpu.empty or kernel_owner.size != len(gpu):
        return pd.DataFrame(columns=cols)
    cat = kernel_rules.category_of(gpu["name"], gpu["kind"]).to_numpy()
    dur = gpu["dur_ns"].to_numpy(dtype=float)
    flops = np.zeros(len(gpu))
    nbytes = np.zeros(len(gpu))
    own_total = np.zeros(max(int(kernel_owner.max()) + 1, 1)) if kernel_owner.size else np.zeros(1)
    ok = kernel_owner >= 0
    np.add.at(own_total, kernel_owner[ok], dur[ok])
    pts = points[points["op_index"] >= 0]
    op_flops = dict(zip(pts["op_index"].astype(int), pts["flops"].astype(float)))
    op_bytes = dict(zip(pts["op_index"].astype(int), pts["bytes"].astype(float)))
    for k in np.nonzero(ok)[0]:
        o = int(kernel_owner[k])
        share = dur[k] / own_total[o] if own_total[o] > 0 else 0.0
        flops[k] = op_flops.get(o, 0.0) * share
        nbytes[k] = op_bytes.get(o, 0.0) * share
    df = pd.DataFrame({"kernel_category": cat, "time_ns": dur, "flops": flops, "bytes": nbytes})
    g = df.groupby("kernel_category").agg(kernels=("time_ns", "size"), time_ns=("time_ns", "sum"),
                                          flops=("flops", "sum"), bytes=("bytes", "sum")).reset_index()
    g["time_ns"] = g["time_ns"].astype(np.int64)
    g = _derive(g, None)
    return g.sort_values("time_ns", ascending=False, ignore_index=True)[cols]


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
    best_bw = float(ok.loc[ok["bound"] == "memory", "achieved_bytes_per_s"].max()) if (ok["bound"] == "memory").any() else 0.0
    if best_bw > bw:
        bw = best_bw
        lifted["mem_bw_bytes_per_s"] = best_bw
    if not lifted:
        return spec, lifted
    note = "; roofs raised to the best rate this run achieved (the measurement was lower)"
    return replace(spec, peak_flops_per_s=peaks, mem_bw_bytes_per_s=bw, source=spec.source + note), lifted


# ---------------------------------------------------------------------------------------- MFU
def _dominant_dtype(points: pd.DataFrame, spec: DeviceSpec) -> str:
    """The peak dtype (tensor-core use included) that carries the most matrix FLOPs."""
    mat = points[points["category"].isin(MATRIX_CATEGORIES)]
    if mat.empty:
        return "fp32"
    tcs = mat["tensor_core"] if "tensor_core" in mat else pd.Series(False, index=mat.index)
    keys = [peak_dtype_for(c, d if isinstance(d, str) and d else None, spec, bool(t))
            for c, d, t in zip(mat["category"], mat["dtype"], tcs)]
    return str(mat["flops"].groupby(pd.Series(keys, index=mat.index)).sum().idxmax())


def step_mfu(trace: Trace, points: pd.DataFrame, spec: DeviceSpec | None) -> pd.DataFrame:
    """Per step: time, counted FLOPs, achieved FLOP/s, MFU (counted) and MFU from 6·params·tokens."""
    cols = ["step", "ts_ns", "dur_ns", "flops", "achieved_flops_per_s", "mfu", "tokens", "model_flops",
            "model_mfu"]
    steps = trace.steps()
    if steps.empty:
        if points.empty:
            return pd.DataFrame(columns=cols)
        lo = int(points["ts_ns"].min())
        hi = lo + int(max(points["time_ns"].sum(), 1)) if trace.gpu_events().empty else None
        if hi is None:  # the GPU's span, widened to the first launching operator
            gpu = trace.gpu_events()
            lo, hi = min(lo, int(gpu["ts_ns"].min())), int((gpu["ts_ns"] + gpu["dur_ns"]).max())
        steps = pd.DataFrame({"step": [0], "ts_ns": [lo], "dur_ns": [hi - lo]})
    peak = spec.peak(_dominant_dtype(points, spec)) if spec is not None and not points.empty else math.nan
    manifest = trace.meta.manifest or {}
    counts = manifest.get("user_counts") or {}
    params = counts.get("parameters") if isinstance(counts, Mapping) else None
    if not params and isinstance(manifest.get("model"), Mapping):
        params = manifest["model"].get("parameters")
    default_tokens = counts.get("tokens_per_step") if isinstance(counts, Mapping) else None
    tokens_by_step: dict[int, float] = {}
    stream = trace.streams.get("steps") if trace.streams else None
    if stream is not None and "tokens" in stream and "step" in stream:
        for s, tok in zip(stream["step"], stream["tokens"]):
            if pd.notna(tok) and pd.notna(s):
                tokens_by_step[int(s)] = float(tok)
    p_ts = points["ts_ns"].to_numpy() if not points.empty else np.empty(0, np.int64)
    p_fl = points["flops"].to_numpy(dtype=float) if not points.empty else np.empty(0)
    rows = []
    for step, t0, dur in zip(steps["step"], steps["ts_ns"], steps["dur_ns"]):
        t0, dur = int(t0), int(dur)
        inside = (p_ts >= t0) & (p_ts < t0 + dur)
        fl = float(p_fl[inside].sum())
        rate = fl / (dur / 1e9) if dur > 0 else math.nan
        tokens = tokens_by_step.get(int(step), default_tokens)
        model_flops = 6.0 * float(params) * float(tokens) if params and tokens else math.nan
        rows.append({
            "step": int(step), "ts_ns": t0, "dur_ns": dur, "flops": fl, "achieved_flops_per_s": rate,
            "mfu": rate / peak if peak and peak > 0 else math.nan,
            "tokens": float(tokens) if tokens else math.nan, "model_flops": model_flops,
            "model_mfu": (model_flops / (dur / 1e9) / peak) if dur > 0 and peak > 0 else math.nan,
        })
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------- analyze
@register(ANALYZER, description="Roofline per operator and category, model FLOPs utilisation", page="roofline")
def analyze(trace: Trace, *, spec: DeviceSpec | None = None) -> Result:
    """Roofline of a trace: per-op/category FLOPs, bytes, intensity, bound, efficiency; MFU; findings."""
    if not any(isinstance(a, dict) and ("Input Dims" in a or "flops" in a) for a in trace.events["args"]):
        raise NotApplicable("no recorded shapes or FLOP counts (profile with record_shapes=True)")
    spec = spec if spec is not None else spec_for_trace(trace)
    points, kernel_owner = _points_and_kernel_owner(trace)
    if points.empty or points["time_ns"].sum() <= 0:
        raise NotApplicable("no operator with recorded shapes ran any measurable work")
    lifted: dict[str, float] = {}
    if spec is not None and spec.measured:
        spec, lifted = lift_measured_roofs(spec, point_table(points, spec))
    per_point = _derive(points.copy(), spec)
    ops = point_table(points, spec)
    categories = _category_table(per_point)
    steps = step_mfu(trace, points, spec)
    kernel_cats = _kernel_category_table(trace, points, kernel_owner)
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
        "memory_bound_time_share": float(per_point.loc[per_point["bound"] == "memory", "time_ns"].sum() / total_ns)
        if total_ns else 0.0,
        "compute_bound_time_share": float(per_point.loc[per_point["bound"] == "compute", "time_ns"].sum() / total_ns)
        if total_ns else 0.0,
        "mfu_mean": float(np.nanmean(steps["mfu"])) if not steps.empty and steps["mfu"].notna().any() else math.nan,
        "model_mfu_mean": float(np.nanmean(steps["model_mfu"]))
        if not steps.empty and steps["model_mfu"].notna().any() else math.nan,
    }
    if lifted:
        summary["roofs_lifted_to_observed"] = lifted
    if spec is not None:
        dom = _dominant_dtype(points, spec)
        summary.update({"dominant_dtype": dom, "peak_flops_per_s": spec.peak(dom), "ridge_flop_per_byte": spec.ridge(dom)})
    findings = _findings(trace, points, per_point, spec, total_ns)
    return Result(
        analyzer=ANALYZER,
        tables={"ops": ops, "categories": categories, "kernel_categories": kernel_cats, "roofs": roofs_table(spec),
                "steps": steps},
        summary=summary, findings=tuple(findings), rank=trace.rank,
    )


# ---------------------------------------------------------------------------------------- findings
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _findings(trace: Trace, points: pd.DataFrame, per_point: pd.DataFrame, spec: DeviceSpec | None,
              total_ns: int) -> list[Finding]:
    out: list[Finding] = []
    if total_ns <= 0 or spec is None:
        return out
    where = "GPU kernel time" if not trace.gpu_events().empty else "operator time"

    # 1. Memory-bound elementwise chains → fusion.
    chains = _elementwise_chains(per_point)
    if chains:
        chain_ns = sum(int(per_point.loc[c, "time_ns"].sum()) for c in chains)
        mean_len = float(np.mean([len(c) for c in chains]))
        share = chain_ns / total_ns
        if share >= FUSION_MIN_SHARE:
            gain = share * (1.0 - 1.0 / mean_len)
            top = per_point.loc[[i for c in chains for i in c]].groupby("name")["time_ns"].sum().nlargest(5)
            out.append(Finding(
                id="roofline.fuse_elementwise", analyzer=ANALYZER,
                severity="warning" if share >= 2 * FUSION_MIN_SHARE else "info",
                title=f"Memory-bound elementwise chains take {_pct(share)} of {where}",
                evidence={"chains": len(chains), "mean_chain_length": round(mean_len, 2), "chain_time_ns": chain_ns,
                          "time_share": round(share, 4), "top_ops": {k: int(v) for k, v in top.items()}},
                recommendation="Fuse the elementwise/norm chains: wrap the model (or the hot block) in "
                               "torch.compile, or use fused kernels (fused LayerNorm/RMSNorm, fused bias+activation, "
                               "fused optimizers with foreach=True/fused=True).",
                estimated_gain=f"up to {_pct(gain)} of {where}: a fused chain of {mean_len:.1f} ops reads its inputs "
                               f"and writes its output once instead of once per op (time ∝ bytes when memory-bound)",
                gain_fraction=min(gain, 1.0), rank=trace.rank, page="roofline",
            ))

    mat = per_point[per_point["category"].isin(("gemm", "conv"))]
    gemm_ns = int(mat["time_ns"].sum())

    # 2. FP32/TF32 matrix work on a device with much faster 16-bit tensor cores → mixed precision.
    fp32 = mat[mat["dtype"].isin(["fp32"]) | mat["dtype"].isna()]
    fp32_ns = int(fp32["time_ns"].sum())
    half_peak = spec.peak("bf16") if spec.peak_flops_per_s.get("bf16") else spec.peak("fp16")
    row_peak = fp32["peak_flops_per_s"].to_numpy(dtype=float)
    if fp32_ns / total_ns >= MIXED_PRECISION_MIN_SHARE and row_peak.size and half_peak >= 2 * np.nanmin(row_peak):
        is_compute = (fp32["bound"] == "compute").to_numpy()
        times = fp32["time_ns"].to_numpy(dtype=float)
        compute_ns = int(times[is_compute].sum())
        memory_ns = fp32_ns - compute_ns
        saved = float((times * (1 - row_peak / half_peak))[is_compute].clip(min=0).sum()) + memory_ns * 0.5
        tf32_ns = int(fp32.loc[fp32["peak_dtype"] == "tf32", "time_ns"].sum())
        out.append(Finding(
            id="roofline.mixed_precision", analyzer=ANALYZER, severity="warning",
            title=f"FP32 GEMMs/convolutions take {_pct(fp32_ns / total_ns)} of {where}"
                  + (f" ({_pct(tf32_ns / fp32_ns)} of it already on TF32 tensor cores)" if tf32_ns else ""),
            evidence={"fp32_matrix_time_ns": fp32_ns, "tf32_time_ns": tf32_ns,
                      "fp32_peak_flops_per_s": float(np.nanmin(row_peak)),
                      "bf16_peak_flops_per_s": half_peak, "compute_bound_ns": compute_ns},
            recommendation="Run the matrix work in bf16 (torch.autocast(device_type='cuda', dtype=torch.bfloat16)) "
                           "so it uses 16-bit tensor cores and moves half the bytes"
                           + ("; at least allow TF32 (torch.backends.cuda.matmul.allow_tf32 = True / "
                              "torch.set_float32_matmul_precision('high'))." if tf32_ns < fp32_ns else "."),
            estimated_gain=f"up to {_pct(saved / total_ns)} of {where}: compute-bound FP32/TF32 GEMM time scaled by "
                           f"the ratio of its peak to the {half_peak / 1e12:.0f} TFLOP/s bf16 peak at the same "
                           "efficiency, memory-bound time halved by 2-byte operands",
            gain_fraction=min(saved / total_ns, 1.0), rank=trace.rank, page="roofline",
        ))

    # 3. Low-efficiency compute-bound GEMMs, often from dimensions that are not tile multiples.
    low = mat[(mat["bound"] == "compute") & (mat["efficiency"] < GEMM_LOW_EFFICIENCY)]
    low_ns = int(low["time_ns"].sum())
    if gemm_ns and low_ns / total_ns >= GEMM_FINDING_MIN_SHARE:
        aligned = mat[(mat["bound"] == "compute") & mat["detail"].map(_aligned)]
        target = float(np.average(aligned["efficiency"], weights=aligned["time_ns"])) if not aligned.empty \
            and aligned["time_ns"].sum() > 0 else GEMM_TARGET_EFFICIENCY
        target = max(target, GEMM_LOW_EFFICIENCY)
        saved = float(((1 - low["efficiency"] / target).clip(lower=0) * low["time_ns"]).sum())
        misaligned = low[~low["detail"].map(_aligned)]
        shapes = misaligned.groupby("detail")["time_ns"].sum().nlargest(5)
        out.append(Finding(
            id="roofline.gemm_efficiency", analyzer=ANALYZER, severity="warning" if low_ns / total_ns >= 0.15 else "info",
            title=f"Compute-bound GEMMs reach under {_pct(GEMM_LOW_EFFICIENCY)} of peak for {_pct(low_ns / total_ns)} "
                  f"of {where}",
            evidence={"low_efficiency_time_ns": low_ns, "median_efficiency": float(low["efficiency"].median()),
                      "misaligned_shapes": {str(k): int(v) for k, v in shapes.items()},
                      "dtypes": sorted({str(d) for d in low["dtype"].dropna()})},
            recommendation=(_CPU_GEMM_ADVICE if spec.measured else _GPU_GEMM_ADVICE)
                           + (f" Misaligned shapes: {', '.join(map(str, shapes.index[:3]))}." if len(shapes) else ""),
            estimated_gain=f"up to {_pct(saved / total_ns)} of {where}: those GEMMs brought to "
                           f"{_pct(target)} efficiency (the time-weighted efficiency of this run's aligned GEMMs, "
                           f"or {_pct(GEMM_TARGET_EFFICIENCY)} when there are none)",
            gain_fraction=min(saved / total_ns, 1.0), rank=trace.rank, page="roofline",
        ))

    # 4. Small batch on a memory-bound model → a larger batch.
    gemm_only = per_point[per_point["category"] == "gemm"]
    g_ns = int(gemm_only["time_ns"].sum())
    mb_ns = int(gemm_only.loc[gemm_only["bound"] == "memory", "time_ns"].sum())
    mem_share = float(per_point.loc[per_point["bound"] == "memory", "time_ns"].sum() / total_ns)
    if g_ns / total_ns >= SMALL_BATCH_MIN_GEMM_SHARE and g_ns and mb_ns / g_ns >= SMALL_BATCH_MEMORY_BOUND_SHARE:
        gain = 0.5 * mb_ns / total_ns
        out.append(Finding(
            id="roofline.larger_batch", analyzer=ANALYZER, severity="info",
            title=f"{_pct(mb_ns / g_ns)} of GEMM time is memory-bound: the batch is too small to reuse the weights",
            evidence={"memory_bound_gemm_ns": mb_ns, "gemm_ns": g_ns, "memory_bound_time_share": round(mem_share, 4),
                      "ridge_flop_per_byte": spec.ridge(_dominant_dtype(points, spec))},
            recommendation="Increase the batch (or tokens per batch; use gradient accumulation to keep the optimiser "
                           "batch) so each weight read serves more rows; for inference, batch requests together.",
            estimated_gain=f"about {_pct(gain)} of {where} per sample: doubling the rows of a weight-bound GEMM "
                           "doubles its FLOPs for about the same bytes, halving its time per sample",
            gain_fraction=min(gain, 1.0), rank=trace.rank, page="roofline",
        ))

    # 5. Naive attention: matmul → softmax → matmul with no fused attention anywhere.
    if not (points["category"] == "attention").any():
        patterns = _naive_attention(per_point)
        if patterns:
            all_idx = sorted({i for p in patterns for i in p})
            pat_ns = int(per_point.loc[all_idx, "time_ns"].sum())
            mid_ns = int(sum(per_point.loc[p[1:-1], "time_ns"].sum() for p in patterns))
            share = pat_ns / total_ns
            if share >= NAIVE_ATTENTION_MIN_SHARE:
                out.append(Finding(
                    id="roofline.fused_attention", analyzer=ANALYZER,
                    severity="warning" if share >= 0.1 else "info",
                    title=f"Attention is computed as matmul + softmax + matmul ({len(patterns)} times, "
                          f"{_pct(share)} of {where})",
                    evidence={"occurrences": len(patterns), "pattern_time_ns": pat_ns,
                              "score_matrix_ops_time_ns": mid_ns},
                    recommendation="Use torch.nn.functional.scaled_dot_product_attention (FlashAttention / "
                                   "memory-efficient kernels) instead of explicit matmul-softmax-matmul; in Hugging "
                                   "Face models set attn_implementation='sdpa' or 'flash_attention_2'.",
                    estimated_gain=f"at least {_pct(mid_ns / total_ns)} of {where}: the softmax, scaling, masking "
                                   "and dropout passes over the L×S score matrix disappear in a fused kernel",
                    gain_fraction=min(mid_ns / total_ns, 1.0), rank=trace.rank, page="roofline",
                ))
    return out


_GPU_GEMM_ADVICE = ("Pad GEMM dimensions (hidden size, vocabulary, batch×sequence) to multiples of 8 for fp16/bf16 "
                    "(16 for fp8), ideally of 64, so tensor-core tiles are full; keep operands in bf16/fp16 so "
                    "tensor cores are used at all.")
_CPU_GEMM_ADVICE = ("Give the CPU larger GEMMs: more rows per call (batch×sequence), inner dimensions that are "
                    "multiples of the SIMD width (16 fp32 lanes on AVX-512, 8 on AVX2), and check that "
                    "torch.get_num_threads() matches the physical cores the job owns; bf16 helps only on CPUs "
                    "with AMX or AVX512-BF16.")


def _aligned(detail: object) -> bool:
    """True when every GEMM dimension in a 'M=.. K=.. N=..' detail is a multiple of 8."""
    if not isinstance(detail, str) or "K=" not in detail:
        return True
    dims = [int(part.split("=")[1]) for part in detail.split() if part[:2] in ("M=", "K=", "N=")]
    return all(d % 8 == 0 for d in dims)


def _thread_sequences(per_point: pd.DataFrame) -> list[np.ndarray]:
    p = per_point[~per_point["category"].isin(UNMODELLED_CATEGORIES)]
    return [grp.sort_values("ts_ns").index.to_numpy() for _, grp in p.groupby("tid", sort=False)]


def _elementwise_chains(per_point: pd.DataFrame) -> list[list[int]]:
    """Runs of ≥ FUSION_MIN_CHAIN consecutive memory-bound elementwise/norm/softmax points on a thread."""
    chains = []
    fusible = ("elementwise", "norm", "softmax")
    category = per_point["category"].to_dict()
    bound = per_point["bound"].to_dict()
    for seq in _thread_sequences(per_point):
        run: list[int] = []
        for i in seq:
            if category[i] in fusible and bound[i] == "memory":
                run.append(i)
                continue
            if len(run) >= FUSION_MIN_CHAIN:
                chains.append(run)
            run = []
        if len(run) >= FUSION_MIN_CHAIN:
            chains.append(run)
    return chains


def _naive_attention(per_point: pd.DataFrame) -> list[list[int]]:
    """Index lists [matmul, ..., softmax, ..., matmul] where the softmax input is the first matmul's output."""
    found = []
    matmuls = ("aten::bmm", "aten::matmul", "aten::baddbmm", "aten::mm")
    all_names = per_point["name"].to_dict()
    all_cats = per_point["category"].to_dict()
    for seq in _thread_sequences(per_point):
        names = [all_names[i] for i in seq]
        cats = [all_cats[i] for i in seq]
        for s, cat in enumerate(cats):
            if cat != "softmax" or "backward" in names[s]:
                continue
            before = [j for j in range(max(0, s - NAIVE_ATTENTION_GAP - 1), s) if names[j] in matmuls]
            after = [j for j in range(s + 1, min(len(seq), s + NAIVE_ATTENTION_GAP + 2)) if names[j] in matmuls]
            if not before or not after:
                continue
            first, last = before[-1], after[0]
            scores = _gemm_out_numel(per_point.at[seq[first], "detail"])
            soft_numel = per_point.at[seq[s], "flops"] / 5.0
            if scores and abs(scores - soft_numel) > 0.01 * scores:
                continue
            found.append([int(seq[j]) for j in range(first, last + 1)])
    return found


def _gemm_out_numel(detail: object) -> float | None:
    if not isinstance(detail, str) or "N=" not in detail:
        return None
    parts = dict(p.split("=") for p in detail.split() if "=" in p)
    try:
        return float(int(parts.get("B", 1)) * int(parts["M"]) * int(parts["N"]))
    except (KeyError, ValueError):
        return None
