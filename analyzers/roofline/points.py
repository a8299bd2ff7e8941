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

from torchscope.analyzers.core.args import gc_paused
from torchscope.analyzers.core.trace import Trace, distinct_names, name_mask
from torchscope.analyzers.hardware.op_costs import (
    MATRIX_CATEGORIES,
    OpCost,
    OpShapes,
    estimate_op_cost,
    has_cost_model,
    op_shapes,
    trace_op_shapes,
)
from torchscope.analyzers.roofline.attribution import GpuAttribution, attribute_gpu_work
from torchscope.analyzers.roofline.call_tree import CallTree, call_tree, launch_labels
from torchscope.analyzers.timeline.launches import gpu_work

__all__ = ["op_points", "points_and_kernel_owner", "op_costs", "choose_points", "POINT_COLUMNS"]

#: Columns of the points frame (one row per point, plus the loose GPU-work rows with op_index -1).
POINT_COLUMNS = [
    "name", "category", "dtype", "shapes", "detail", "ts_ns", "tid", "flops", "flops_source", "bytes",
    "time_ns", "kernels", "op_index", "tensor_core",
]


#: Columns of the events frame the points are built from: operator calls (their args are read by event
#: position, ``op_costs.trace_op_shapes``), and the runtime calls they make.
_OP_COLUMNS = ["ts_ns", "dur_ns", "name", "pid", "tid"]
_RUNTIME_COLUMNS = ["ts_ns", "dur_ns", "pid", "tid", "correlation"]


def _arg(args: object, key: str) -> object:
    # The loader gives plain dicts; a concrete type check is far cheaper than the Mapping ABC here.
    return args.get(key) if isinstance(args, dict) else None


def _maybe_modelled(names: pd.Series) -> pd.Series:
    """Per distinct op name: whether ``estimate_op_cost`` may model it (``aten::`` and a modelled base name)."""
    return names.map(has_cost_model).astype(bool)


def op_costs(names: np.ndarray, args: np.ndarray) -> tuple[list[OpCost | None], np.ndarray]:
    """Per op: its cost model (None when unmodelled or without shapes) and the profiler's FLOPs (0: none)."""
    costs, profiler_flops, _ = _op_costs(np.asarray(names, dtype=object), op_shapes(args))
    return costs.tolist(), profiler_flops


def _op_costs(names: np.ndarray, shapes: OpShapes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``op_costs`` from the ops' recorded shapes (as an object array), and each op's shape key (``_shape_key`` of
    its Input Dims, "" without a cost). A cost model runs once per distinct (name, shapes)."""
    n = len(names)
    profiler_flops = np.zeros(n)
    for i, f in enumerate(shapes.flops):
        if f is not None and isinstance(f, (int, float)) and f > 0:
            profiler_flops[i] = float(f)
    code = shapes.code
    name_id, _ = pd.factorize(names, use_na_sentinel=False)
    _, first, inverse = np.unique(name_id.astype(np.int64) * (len(shapes.distinct) + 1) + (code + 1),
                                  return_index=True, return_inverse=True)
    costs = np.full(first.size, None, dtype=object)
    keys = np.full(first.size, "", dtype=object)
    for u, i in enumerate(first.tolist()):
        if code[i] < 0:  # no args
            continue
        dims, types, concrete = shapes.distinct[code[i]]
        if not dims:
            continue
        costs[u] = estimate_op_cost(names[i], dims, types, concrete)
        keys[u] = _shape_key(dims)
    inverse = inverse.reshape(-1)
    return costs[inverse], profiler_flops, keys[inverse]


def choose_points(costs: list[OpCost | None], tree: CallTree) -> tuple[np.ndarray, np.ndarray]:
    """Per op: whether it is a point, and the point owning it (itself, an enclosing point, or -1)."""
    return _choose_points(*_cost_flags(costs), tree.parent)


def _cost_flags(costs) -> tuple[np.ndarray, np.ndarray]:
    """Per op: whether it has a cost model, and whether that is a matrix op's."""
    modelled = np.array([c is not None for c in costs], dtype=bool)
    matrix = np.array([c is not None and c.category in MATRIX_CATEGORIES for c in costs], dtype=bool)
    return modelled, matrix


def _ancestors_of(flag: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """True for every op with a flagged op among its descendants (walking up the parents, one level per pass)."""
    out = np.zeros(flag.size, bool)
    at = parent[flag]
    at = at[at >= 0]
    while at.size:
        at = np.unique(at[~out[at]])
        out[at] = True
        at = parent[at]
        at = at[at >= 0]
    return out


def _depths(parent: np.ndarray) -> np.ndarray:
    """Nesting depth of each op (0 at a root), from the parents."""
    depth = np.zeros(parent.size, np.int64)
    rows = np.flatnonzero(parent >= 0)
    up = parent[rows]
    while rows.size:
        depth[rows] += 1
        keep = up >= 0
        rows, up = rows[keep], parent[up[keep]]
        keep = up >= 0  # rows whose next ancestor is a root are done after this pass
        depth[rows[~keep]] += 1
        rows, up = rows[keep], up[keep]
    return depth


def _choose_points(modelled: np.ndarray, matrix: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``choose_points`` over flags, one nesting level at a time (parents decided before their children)."""
    n_ops = modelled.size
    has_matrix_desc = _ancestors_of(matrix, parent)
    has_modelled_desc = _ancestors_of(modelled, parent)
    is_point = np.zeros(n_ops, bool)
    owner = np.full(n_ops, -1, dtype=np.int64)
    depth = _depths(parent)
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[by_depth], np.arange(int(depth.max(initial=0)) + 2))
    for d in range(bounds.size - 1):
        rows = by_depth[bounds[d]:bounds[d + 1]]
        p = parent[rows]
        inherited = np.where(p >= 0, owner[np.maximum(p, 0)], -1)
        matrix_point = matrix[rows] & ~has_matrix_desc[rows]
        # Inside a matrix point it is part of that op (bias copy, cast), not a point of its own.
        other_point = modelled[rows] & ~matrix[rows] & ~has_modelled_desc[rows] \
            & ((inherited < 0) | ~matrix[np.maximum(inherited, 0)])
        point = matrix_point | other_point
        is_point[rows] = point
        owner[rows] = np.where(point, rows, inherited)
    return is_point, owner


def _shape_key(dims: object) -> str:
    if not isinstance(dims, (list, tuple)):
        return ""
    return str([d for d in dims if d])[:120]


def _name_strings(names: pd.Series) -> np.ndarray:
    """Each event's name as a str (object array), read through the categories when the column is categorical."""
    if isinstance(names.dtype, pd.CategoricalDtype):
        cats = np.append(distinct_names(names).to_numpy(dtype=object), np.nan)  # code -1: missing, as astype(str)
        return cats[names.cat.codes.to_numpy()]
    return names.astype(str).to_numpy(dtype=object)


def op_points(trace: Trace) -> pd.DataFrame:
    """One row per roofline point (operator call): cost, dtype, and its GPU or CPU time in ns."""
    return points_and_kernel_owner(trace)[0]


def points_and_kernel_owner(trace: Trace) -> tuple[pd.DataFrame, np.ndarray]:
    """Points, and for each GPU event the ``op_index`` of the point that launched it (-1: none)."""
    ev = trace.events
    kind = ev["kind"]
    # Only the columns read here are taken along (the args of selected rows are decoded below).
    op_rows = np.flatnonzero((kind == "cpu_op").to_numpy())
    ops = ev[_OP_COLUMNS].iloc[op_rows]
    if ops.empty:
        return pd.DataFrame(columns=POINT_COLUMNS), np.empty(0, np.int64)
    gpu = gpu_work(trace)
    on_gpu = not gpu.empty
    launch = ((kind == "runtime") & (ev["correlation"] >= 0)).to_numpy() if on_gpu else np.zeros(len(ev), bool)
    runtime = ev[_RUNTIME_COLUMNS].iloc[np.flatnonzero(launch)]
    names = _name_strings(ops["name"])
    # Only ops whose name has a cost model can be points or stop an enclosing op from being one:
    # their args alone are decoded (most ops are views, allocations and autograd machinery).
    maybe = np.flatnonzero(name_mask(ops["name"], _maybe_modelled))
    with gc_paused():
        sub_costs, sub_flops, sub_shapes = _op_costs(names[maybe], trace_op_shapes(trace, op_rows[maybe]))
    costs = np.full(len(ops), None, dtype=object)
    shapes = np.full(len(ops), "", dtype=object)
    profiler_flops = np.zeros(len(ops))
    costs[maybe] = sub_costs
    shapes[maybe] = sub_shapes
    profiler_flops[maybe] = sub_flops
    modelled, matrix = np.zeros(len(ops), bool), np.zeros(len(ops), bool)
    modelled[maybe], matrix[maybe] = _cost_flags(sub_costs)
    tree = call_tree(ops, runtime)
    is_point, owner = _choose_points(modelled, matrix, tree.parent)
    ts = ops["ts_ns"].to_numpy()
    if on_gpu:
        work = attribute_gpu_work(gpu, runtime, tree, owner, launch_labels(ops, runtime), trace=trace)
    else:
        dur = ops["dur_ns"].to_numpy()
        zeros = np.zeros(len(ops), dtype=np.int64)
        work = GpuAttribution(dur.astype(np.int64), zeros, zeros, np.empty(0, np.int64), [])
    tids = ops["tid"].to_numpy(np.int64)
    pts = np.flatnonzero(is_point)
    if on_gpu:
        pts = pts[work.kernels[pts] != 0]  # host-side calls (a CPU tensor, a view): nothing ran on the GPU
    pc = costs[pts].tolist()
    pf = profiler_flops[pts]
    counted = (pf > 0).tolist()
    # Plain lists, the loose rows appended, so each column's dtype is inferred as from the rows it holds.
    columns = {
        "name": names[pts].tolist(), "category": [c.category for c in pc], "dtype": [c.dtype for c in pc],
        "shapes": shapes[pts].tolist(), "detail": [c.detail for c in pc], "ts_ns": ts[pts].tolist(),
        "tid": tids[pts].tolist(),
        "flops": [f if k else c.flops for f, k, c in zip(pf.tolist(), counted, pc)],
        "flops_source": ["profiler" if k else "estimated" for k in counted], "bytes": [c.bytes for c in pc],
        "time_ns": work.time_ns[pts].tolist(), "kernels": work.kernels[pts].tolist(), "op_index": pts.tolist(),
        "tensor_core": (work.tensor_core_kernels[pts] > 0).tolist(),
    }
    for r in work.loose:
        for col, value in (("name", r["name"]), ("category", r["category"]), ("dtype", None), ("shapes", ""),
                           ("detail", ""), ("ts_ns", r["ts_ns"]), ("tid", -1), ("flops", 0.0),
                           ("flops_source", "none"), ("bytes", math.nan), ("time_ns", r["time_ns"]),
                           ("kernels", r["kernels"]), ("op_index", -1), ("tensor_core", False)):
            columns[col].append(value)
    if not columns["name"]:
        return pd.DataFrame(columns=POINT_COLUMNS), work.kernel_owner
    return pd.DataFrame(columns, columns=POINT_COLUMNS), work.kernel_owner
