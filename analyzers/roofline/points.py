"""Roofline points: which operator calls are points, what each one cost (FLOPs, bytes) and how long it ran (ns).

Four steps, one function each:

1. ``op_costs`` — the cost model of every ``cpu_op`` with recorded shapes (``op_costs.estimate_op_cost``;
   distinct argument lists are evaluated once) and the profiler's own FLOP count where it made one;
2. ``call_tree.call_tree`` — parents of the ops per thread and the op around each runtime call;
3. ``choose_points`` — matrix ops are points unless a matrix op is nested inside them; other modelled
   ops are points when nothing modelled is nested in them and they are not inside a matrix point;
4. ``attribution.attribute_gpu_work`` — each point's GPU time from the kernels its call tree launched
   (on a CPU-only trace: the call's own duration).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from torchscope.analyzers.core.args import decode_args
from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.hardware.op_costs import MATRIX_CATEGORIES, OpCost, estimate_op_cost
from torchscope.analyzers.roofline.attribution import GpuAttribution, attribute_gpu_work
from torchscope.analyzers.roofline.call_tree import CallTree, call_tree, launch_labels

__all__ = ["op_points", "points_and_kernel_owner", "op_costs", "choose_points", "POINT_COLUMNS"]

#: Columns of the points frame (one row per point, plus the loose GPU-work rows with op_index -1).
POINT_COLUMNS = [
    "name", "category", "dtype", "shapes", "detail", "ts_ns", "tid", "flops", "flops_source", "bytes",
    "time_ns", "kernels", "op_index", "tensor_core",
]


def _arg(args: object, key: str) -> object:
    # The loader gives plain dicts; a concrete type check is far cheaper than the Mapping ABC here.
    return args.get(key) if isinstance(args, dict) else None


def op_costs(names: np.ndarray, args: np.ndarray) -> tuple[list[OpCost | None], np.ndarray]:
    """Per op: its cost model (None when unmodelled or without shapes) and the profiler's FLOPs (0: none)."""
    costs: list[OpCost | None] = []
    profiler_flops = np.zeros(len(names))
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
    return costs, profiler_flops


def choose_points(costs: list[OpCost | None], tree: CallTree) -> tuple[np.ndarray, np.ndarray]:
    """Per op: whether it is a point, and the point owning it (itself, an enclosing point, or -1)."""
    n_ops = len(costs)
    parent = tree.parent
    modelled = np.array([c is not None for c in costs], dtype=bool)
    matrix = np.array([c is not None and c.category in MATRIX_CATEGORIES for c in costs], dtype=bool)
    has_matrix_desc = np.zeros(n_ops, bool)
    has_modelled_desc = np.zeros(n_ops, bool)
    for i in tree.preorder[::-1]:  # children before parents
        p = parent[i]
        if p >= 0:
            has_matrix_desc[p] |= has_matrix_desc[i] or matrix[i]
            has_modelled_desc[p] |= has_modelled_desc[i] or modelled[i]
    is_point = np.zeros(n_ops, bool)
    owner = np.full(n_ops, -1, dtype=np.int64)
    for i in tree.preorder:
        p = parent[i]
        inherited = owner[p] if p >= 0 else -1
        if matrix[i] and not has_matrix_desc[i]:
            is_point[i] = True
        elif modelled[i] and not matrix[i] and not has_modelled_desc[i]:
            # Inside a matrix point it is part of that op (bias copy, cast), not a point of its own.
            is_point[i] = inherited < 0 or not matrix[inherited]
        owner[i] = i if is_point[i] else inherited
    return is_point, owner


def _shape_key(dims: object) -> str:
    if not isinstance(dims, (list, tuple)):
        return ""
    return str([d for d in dims if d])[:120]


def op_points(trace: Trace) -> pd.DataFrame:
    """One row per roofline point (operator call): cost, dtype, and its GPU or CPU time in ns."""
    return points_and_kernel_owner(trace)[0]


def points_and_kernel_owner(trace: Trace) -> tuple[pd.DataFrame, np.ndarray]:
    """Points, and for each GPU event the ``op_index`` of the point that launched it (-1: none)."""
    ev = trace.events
    ops = ev[ev["kind"] == "cpu_op"]
    if ops.empty:
        return pd.DataFrame(columns=POINT_COLUMNS), np.empty(0, np.int64)
    gpu = trace.gpu_events()
    on_gpu = not gpu.empty
    runtime = ev[(ev["kind"] == "runtime") & (ev["correlation"] >= 0)] if on_gpu else ev.iloc[:0]
    names = ops["name"].astype(str).to_numpy()
    args = decode_args(ops["args"])
    costs, profiler_flops = op_costs(names, args)
    tree = call_tree(ops, runtime)
    is_point, owner = choose_points(costs, tree)
    ts = ops["ts_ns"].to_numpy()
    if on_gpu:
        work = attribute_gpu_work(gpu, runtime, tree, owner, launch_labels(ops, runtime))
    else:
        dur = ops["dur_ns"].to_numpy()
        zeros = np.zeros(len(ops), dtype=np.int64)
        work = GpuAttribution(dur.astype(np.int64), zeros, zeros, np.empty(0, np.int64), [])
    tids = ops["tid"].astype(np.int64).to_numpy()
    rows = []
    for i in np.nonzero(is_point)[0]:
        c = costs[i]
        if on_gpu and work.kernels[i] == 0:
            continue  # host-side call (a CPU tensor, a view): nothing ran on the GPU
        pf = profiler_flops[i]
        rows.append({
            "name": names[i], "category": c.category, "dtype": c.dtype,
            "shapes": _shape_key(_arg(args[i], "Input Dims")), "detail": c.detail, "ts_ns": int(ts[i]),
            "tid": int(tids[i]), "flops": pf if pf > 0 else c.flops,
            "flops_source": "profiler" if pf > 0 else "estimated", "bytes": c.bytes,
            "time_ns": int(work.time_ns[i]), "kernels": int(work.kernels[i]), "op_index": int(i),
            "tensor_core": bool(work.tensor_core_kernels[i] > 0),
        })
    rows += [{"name": r["name"], "category": r["category"], "dtype": None, "shapes": "", "detail": "",
              "ts_ns": r["ts_ns"], "tid": -1, "flops": 0.0, "flops_source": "none", "bytes": math.nan,
              "time_ns": r["time_ns"], "kernels": r["kernels"], "op_index": -1, "tensor_core": False}
             for r in work.loose]
    return pd.DataFrame(rows, columns=POINT_COLUMNS), work.kernel_owner
