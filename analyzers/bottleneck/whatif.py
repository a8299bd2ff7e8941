"""What-if changes: each recommendation as a transformation of the step model, with its written model.

Each function below looks for one cause in the model, and when it finds it returns an `Estimate`:
the `replay.Change` that applying the recommendation makes to the steps, the evidence, and the
model in words. A change's cut lengths are in the time of the run *without the profiler*: what a
what-if keeps of the traced time is measured less the profiler's own per-op cost inside it
(``profiler_overhead``), since the realized run never pays it. `analysis` replays every change against the unmodified replay; the gain is the
predicted reduction of step time. Costs that a change keeps (a per-call overhead, a bandwidth) are
measured in the same trace, never assumed; the few constants are named here with their reason.
A change the trace shows already applied (foreach/fused optimizer, DataLoader workers enough to
keep up, DDP buckets) is not proposed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from torchscope.analyzers.bottleneck.attribution import Attribution, covered
from torchscope.analyzers.bottleneck.categories import LAYOUT, cpu_category
from torchscope.analyzers.bottleneck.model import StepModel, op_parents
from torchscope.analyzers.bottleneck.profiler_overhead import profiler_overhead
from torchscope.analyzers.bottleneck.replay import Change
from torchscope.analyzers.core.trace import name_mask
from torchscope.analyzers.hardware.device_specs import spec_for_trace
from torchscope.analyzers.hardware.dtypes import dtype_bytes
from torchscope.analyzers.hardware.op_costs import OpShapes, trace_op_shapes
from torchscope.analyzers.kernels import (
    COMMUNICATION,
    ELEMENTWISE,
    GEMM,
    REDUCTION,
)
from torchscope.analyzers.report.units import format_duration_ns
from torchscope.analyzers.timeline.intervals import covered_ns, merge_intervals
from torchscope.analyzers.timeline.nesting import outermost
from torchscope.analyzers.timeline.steps import step_index

__all__ = [
    "DATA_QUEUE_FETCH_NS",
    "DDP_BUCKET_BYTES",
    "GRAPH_LAUNCH_PER_KERNEL_NS",
    "MAX_DATA_WORKERS",
    "MIN_CHAIN_OPS",
    "MIN_LOOP_ITERATIONS",
    "TRANSFORMS",
    "Estimate",
]

#: What fetching a ready batch from the DataLoader's worker queue costs the main thread (unpickling
#: tensor handles from shared memory), ns; measured with torch 2.x on small batches.
DATA_QUEUE_FETCH_NS = 300_000
#: With workers, a median wait this many times the shortest means batches are not ready in time.
STARVED_WAIT_FACTOR = 2.0
#: Most DataLoader workers we recommend.
MAX_DATA_WORKERS = 8
#: Shortest run of elementwise ops that counts as a fusable chain.
MIN_CHAIN_OPS = 3
#: Longest host gap between two ops of one chain: eager ops run back to back with only Python (and
#: the profiler's bookkeeping) between them, 5-300 µs on a busy host; a longer gap holds other work.
CHAIN_MAX_GAP_NS = 1_000_000
#: The quantile of a message size's durations taken as its transfer time (the calls that waited for
#: no other rank).
FAST_CALL_QUANTILE = 0.2
#: DistributedDataParallel's default bucket size (``bucket_cap_mb=25``), bytes.
DDP_BUCKET_BYTES = 25 * 2**20
#: Fewest iterations that make a per-element Python loop worth vectorising.
MIN_LOOP_ITERATIONS = 16
#: Most ops in one iteration of such a loop, and the longest host gap inside it.
MAX_LOOP_BODY_OPS = 64
MAX_LOOP_GAP_NS = 5_000_000
#: A chain whose largest op moves at most 4x this many bytes is dispatch, not memory traffic, to save.
TINY_OP_BYTES = 4096
#: What a CUDA graph costs per captured kernel at replay, ns (graph launch amortised over its nodes).
GRAPH_LAUNCH_PER_KERNEL_NS = 1_000

_FOREACH_RE = re.compile(r"_foreach_|_fused_|fused|multi_tensor|apex", re.IGNORECASE)
_AUTOGRAD_RE = re.compile(r"^autograd::engine::evaluate_function: ")
#: Autograd's own records around backward kernels (``AddBackward0``, ``detach``): bookkeeping, not work.
_AUTOGRAD_NODE_RE = re.compile(r"^(?:\w+Backward\d*|detach_?|aten::detach_?|torch::autograd::\w+)$")
_DDP_RE = re.compile(r"DistributedDataParallel|ddp\.reducer|Reducer::", re.IGNORECASE)
_ITEM_SITES = ("aten::item", "aten::_local_scalar_dense")
_LOOP_INDEX_RE = re.compile(r"^(?:aten::(?:select|slice|index|narrow|item|unbind)|autograd::engine::evaluate_function: "
                            r"(?:Select|Slice|Index|Unbind)Backward\d*)$")
_EMPTY = np.zeros(0, np.int64)


@dataclass(frozen=True)
class Estimate:
    """One recommendation: the change it makes to the steps, its model in words, its evidence."""

    finding_id: str
    cause: str
    title: str
    recommendation: str
    model: str
    change: Change | None
    evidence: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- shared measurements
def _per_window(model: StepModel, intervals: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Length of a merged interval set inside each window, ns."""
    w = model.windows
    return covered_ns(w["start_ns"].to_numpy(np.int64), w["end_ns"].to_numpy(np.int64), intervals)


def _per_window_removed(model: StepModel, intervals: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The profiler's overhead inside a merged interval set, per window, ns."""
    s, e = intervals
    removed = profiler_overhead(model).removed(s, e)
    w = model.windows
    pos = step_index(s, w["start_ns"].to_numpy(np.int64), w["end_ns"].to_numpy(np.int64))
    return np.bincount(pos[pos >= 0], weights=removed[pos >= 0], minlength=len(w)).astype(np.int64)


def _op_categories(model: StepModel) -> np.ndarray:
    """``categories.cpu_category`` of every row of ``model.ops`` (computed once per model)."""
    cached = model.cache.get("op_categories")
    if cached is None:
        cached = model.cache["op_categories"] = cpu_category(model.ops["name"])
    return cached


def _leaf_ops(model: StepModel) -> pd.DataFrame:
    """Host operators (cpu_op) with no operator inside, in time order per thread, with their category (cached)."""
    cached = model.cache.get("leaf_ops")
    if cached is None:
        cached = model.cache["leaf_ops"] = _find_leaf_ops(model)
    return cached


def _find_leaf_ops(model: StepModel) -> pd.DataFrame:
    ops = model.ops
    kind = ops["kind"].to_numpy(object)
    ts, dur = ops["ts_ns"].to_numpy(np.int64), ops["dur_ns"].to_numpy(np.int64)
    end, pid, tid = ops["end_ns"].to_numpy(np.int64), ops["pid"].to_numpy(np.int64), ops["tid"].to_numpy(np.int64)
    rows = np.flatnonzero((kind == "cpu_op") & (dur > 0))
    # Per thread in time order, the longer of two ops starting together first (a stable sort, as before). The
    # model's ops are in that order already: a stable sort by thread (pid, then tid) keeps it within each.
    threads = sorted(set(model.host_threads))
    thread = np.zeros(rows.size, np.int64)
    for k, (p, t) in enumerate(threads):
        thread[(pid[rows] == p) & (tid[rows] == t)] = k
    rows = rows[np.argsort(thread, kind="stable")]
    same = tid[rows][1:] == tid[rows][:-1]
    leaf = ~np.concatenate([same & (ts[rows][1:] < end[rows][:-1]), [False]])
    rows = rows[leaf]
    out = ops.iloc[rows]
    category = _op_categories(model)[rows]
    out["category"] = category
    out["inside_other_op"] = _inside_other_op(model)[rows]
    return out.reset_index(drop=True)


def _inside_other_op(model: StepModel) -> np.ndarray:
    """True for each row of ``model.ops`` nested (on its thread) inside an operator that is neither pointwise,
    a reduction, a view nor autograd bookkeeping: a GEMM's own contiguous copy, a composite op's internals.
    Those belong to the op around them; no compiler fuses them with the ops before or after it."""
    parent = op_parents(model)
    other = (model.ops["kind"].to_numpy(object) == "cpu_op") & _not_fusable(model)
    inside = np.zeros(len(parent), dtype=bool)
    child = np.flatnonzero(parent >= 0)
    up = parent[child]
    while child.size:  # one nesting level per pass: each op's ancestors, nearest first
        inside[child] |= other[up]
        more = ~inside[child] & (parent[up] >= 0)
        child, up = child[more], parent[up[more]]
    return inside


def _not_fusable(model: StepModel) -> np.ndarray:
    """True for each row of ``model.ops`` whose name is neither pointwise, a reduction, a view nor autograd
    bookkeeping (the ops that end a chain or own the ops inside them), computed once per model."""
    cached = model.cache.get("not_fusable")
    if cached is None:
        names = model.ops["name"]
        cached = ~np.isin(_op_categories(model), (ELEMENTWISE, REDUCTION, LAYOUT))
        cached &= ~name_mask(names, lambda n: n.str.match(_AUTOGRAD_RE) | n.str.match(_AUTOGRAD_NODE_RE))
        model.cache["not_fusable"] = cached
    return cached


def _with_sizes(model: StepModel, leaf: pd.DataFrame) -> pd.DataFrame:
    """Leaf ops with numel, tensor_inputs and elem_bytes (``_shapes``) for pointwise and reduction ops, 0 for others."""
    category = leaf["category"].to_numpy(object)
    sized = (category == ELEMENTWISE) | (category == REDUCTION)
    numel, inputs, esize = (np.zeros(len(leaf), np.int64) for _ in range(3))
    numel[sized], inputs[sized], esize[sized] = _sizes(trace_op_shapes(model.trace, leaf["row"].to_numpy(np.int64)[sized]))
    leaf = leaf.copy()
    leaf["numel"], leaf["tensor_inputs"], leaf["elem_bytes"] = numel, inputs, esize
    return leaf


def _sizes(shapes: OpShapes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_shapes`` of ops' recorded shapes, each distinct one worked out once (a step's ops repeat every step)."""
    code = shapes.code
    used, at = np.unique(code[code >= 0], return_inverse=True)
    per = _shapes([shapes.distinct[c] for c in used.tolist()])
    out = tuple(np.zeros(code.size, np.int64) for _ in per)
    for o, v in zip(out, per):
        o[code >= 0] = v[at.reshape(-1)]
    return out


def _shapes(shapes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (Input Dims, Input type, ...): largest input numel, number of tensor inputs, bytes per element (0 when no
    shapes)."""
    n = len(shapes)
    numel, inputs, esize = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    prod = math.prod
    for i, (dims, types, _) in enumerate(shapes):
        if type(dims) is not list:
            continue
        types = types or ()
        best, count, size = 0, 0, 0
        for j, d in enumerate(dims):
            # A tensor's dims: a non-empty list of ints (the product of anything else is no int, or fails).
            if type(d) is not list or not d:
                continue
            try:
                m = prod(d)
            except TypeError:
                continue
            if type(m) is not int:  # JSON values: an int product means every dim was an int
                continue
            count += 1
            if m >= best:
                best = m
                t = types[j] if j < len(types) else None
                size = dtype_bytes(t) or 4
        numel[i], inputs[i], esize[i] = best, count, size
    return numel, inputs, esize


def _dispatch_floor(leaf: pd.DataFrame) -> int:
    """Per-op dispatch cost on the host, ns: the 10th percentile of leaf operator durations."""
    if leaf.empty:
        return 0
    return int(np.percentile(leaf["dur_ns"].to_numpy(np.int64), 10))


def _outside(model: StepModel, frame: pd.DataFrame, *regions: str) -> np.ndarray:
    """True for rows whose start lies outside the named regions."""
    keep = np.ones(len(frame), dtype=bool)
    t = frame["ts_ns"].to_numpy(np.int64)
    for region in regions:
        keep &= ~covered(model.regions[region], t)
    return keep


# --------------------------------------------------------------------------- data loading
def hide_data_loading(model: StepModel, attr: Attribution) -> Estimate | None:
    """The step waits for its batch: load it in DataLoader workers while the step computes."""
    s, e = model.regions["data_loading"]
    if s.size == 0:
        return None
    load = _per_window(model, (s, e))
    step = model.step_ns
    rest = np.maximum(step - load, 1)
    names = model.ops.loc[model.ops["main"] & model.ops["name"].str.startswith("enumerate(DataLoader)#"), "name"]
    workers_already = bool(names.str.contains("MultiProcessing").any())
    med_load, med_rest = float(np.median(load)), float(np.median(rest))
    fetch = DATA_QUEUE_FETCH_NS
    if workers_already:
        # The workers' count is not in the trace. When they keep up, each wait is only the fetch of a
        # ready batch: about the shortest wait of the run. Waits beyond it are batches not ready yet,
        # which more workers hide.
        fetch = int(np.min(e - s))
        if np.median(load) <= STARVED_WAIT_FACTOR * fetch or np.median(load) - fetch < DATA_QUEUE_FETCH_NS:
            return None
        workers = None
        floor = None
        how = ("each wait for a batch (median {w}) beyond the shortest one (" + format_duration_ns(fetch) + ", the "
               "fetch of a ready batch) is a batch the workers had not finished; with enough workers it is hidden")
    else:
        workers = int(min(MAX_DATA_WORKERS, max(2, math.ceil(med_load / med_rest) + 1)))
        # The workers load without the profiler: the loading time less its bookkeeping, split over them.
        load_u = np.maximum(load - _per_window_removed(model, (s, e)), 0)
        floor = (load_u / workers + np.minimum(DATA_QUEUE_FETCH_NS, load_u)).astype(np.int64)
        how = (f"with {workers} workers each batch (median {{w}}) is loaded while the step computes; the main "
               f"thread keeps only the queue fetch, and a step cannot be shorter than the loading time / {workers}")
    cuts = (s, e, np.minimum(e - s, fetch))
    rec = (f"Load batches in background workers: DataLoader(num_workers={workers}, persistent_workers=True"
           f"{', pin_memory=True' if model.has_gpu else ''})" if workers else
           "Raise DataLoader num_workers (e.g. double it) or make each sample cheaper to load; prefetch_factor "
           "helps only when loading time varies")
    return Estimate(
        "bottleneck.data_loading", "data_loading",
        f"Steps wait for data: median {format_duration_ns(int(med_load))} per step in the DataLoader",
        rec, how.format(w=format_duration_ns(int(med_load))),
        Change(cuts=cuts, step_floor_ns=floor),
        {"step_data_wait_ns": int(med_load), "loader": str(names.iloc[0]) if len(names) else "",
         "recommended_workers": workers})


# --------------------------------------------------------------------------- optimizer
def foreach_optimizer(model: StepModel, attr: Attribution) -> Estimate | None:
    """A per-parameter optimizer loop: one foreach (or fused) call per update op instead of one per tensor."""
    ops = model.ops
    main = ops[ops["main"].to_numpy()]
    regions = main[main["name"].str.startswith("Optimizer.step#").to_numpy()]
    if regions.empty:
        return None
    s, e = regions["ts_ns"].to_numpy(np.int64), regions["end_ns"].to_numpy(np.int64)
    inside_pos = step_index(main["ts_ns"].to_numpy(np.int64), s, e)
    inside = (inside_pos >= 0) & (main["end_ns"].to_numpy(np.int64) <= e[np.maximum(inside_pos, 0)])
    inside &= ~main["name"].str.startswith("Optimizer.step#").to_numpy()
    body = main[inside].copy()
    body["region"] = inside_pos[inside]
    if body.empty or name_mask(body["name"], lambda n: n.str.contains(_FOREACH_RE)).any():
        return None
    top = body[outermost(body)]
    per_region = top.groupby("region")
    n_top = per_region.size().reindex(range(len(regions)), fill_value=0).to_numpy()
    covered = per_region["dur_ns"].sum().reindex(range(len(regions)), fill_value=0).to_numpy(np.int64)
    kinds = int(top["name"].nunique())
    if kinds == 0 or np.median(n_top) < 4 * kinds:
        return None  # not a loop over many tensors
    # Python time between the per-tensor calls: the loop that foreach removes. Both it and the calls'
    # own time are taken without the profiler's bookkeeping (inside the calls: that of their nested ops).
    overhead = profiler_overhead(model)
    in_calls = pd.Series(overhead.removed(top["ts_ns"].to_numpy(np.int64), top["end_ns"].to_numpy(np.int64))).groupby(
        top["region"].to_numpy()).sum().reindex(range(len(regions)), fill_value=0).to_numpy(np.int64)
    in_region = overhead.removed(s, e)
    covered = np.maximum(covered - in_calls, 0)
    gaps = np.maximum((e - s) - in_region - covered, 0)
    gap_per_call = np.where(n_top > 0, gaps / np.maximum(n_top, 1), 0)
    launches_gpu = model.has_gpu and bool(model.ops.loc[top.index.intersection(model.ops.index), "kind"].size) \
        and _launches_inside(model, s, e)
    if launches_gpu:
        # The host issues one multi-tensor kernel per update op; the GPU work stays, its per-kernel
        # fixed cost is paid once per call.
        med_op = int(np.median(top["dur_ns"])) - int(np.median(in_calls / np.maximum(n_top, 1)))
        new_len = kinds * (max(med_op, 0) + gap_per_call.astype(np.int64))
        gpu_dur = _fold_kernels(model, s, e, kinds)
        how = (f"{int(np.median(n_top))} per-tensor calls of {kinds} kinds per step become {kinds} multi-tensor "
               "calls: the host keeps one call per kind (median call + Python gap), each kernel's fixed cost "
               "(the shortest optimizer kernel) is paid once per call")
    else:
        # On the CPU, torch's foreach runs the same per-tensor kernels from C++: the ops' own time stays,
        # the Python loop around them goes.
        new_len = covered + kinds * gap_per_call.astype(np.int64)
        gpu_dur = None
        how = (f"{int(np.median(n_top))} per-tensor calls of {kinds} kinds per step: the per-tensor kernels "
               f"(their measured time) stay, the Python loop between them (median "
               f"{int(np.median(gap_per_call)) / 1e3:.1f} µs per call) is paid once per kind")
    how += (f"; without the profiler's bookkeeping ({overhead.per_op_ns / 1e3:.1f} µs per recorded op, "
            f"{overhead.source}), which the unprofiled run does not pay")
    name = str(regions["name"].iloc[0]).split("#", 1)[-1].split(".", 1)[0]
    return Estimate(
        "bottleneck.optimizer_dispatch", "optimizer_dispatch",
        f"{name} updates parameters one tensor at a time ({int(np.median(n_top))} calls per step)",
        f"Use the multi-tensor optimizer: {name}(..., foreach=True), or fused=True where supported",
        how, Change(cuts=(s, e, np.minimum(new_len, e - s).astype(np.int64)), gpu_dur=gpu_dur),
        {"optimizer": name, "calls_per_step": int(np.median(n_top)), "op_kinds": kinds,
         "call_python_gap_ns": int(np.median(gap_per_call)), "profiler_overhead_ns": overhead.per_op_ns})


def _launches_inside(model: StepModel, s: np.ndarray, e: np.ndarray) -> bool:
    gpu = model.gpu
    if gpu.empty:
        return False
    return bool(covered((s, e), gpu["launch_ts_ns"].to_numpy(np.int64)).any())


def _fold_kernels(model: StepModel, s: np.ndarray, e: np.ndarray, calls: int) -> np.ndarray:
    """GPU durations with the kernels launched inside [s, e) folded into ``calls`` kernels per interval."""
    gpu = model.gpu
    dur = gpu["dur_ns"].to_numpy(np.int64).copy()
    pos = step_index(gpu["launch_ts_ns"].to_numpy(np.int64), s, e)
    inside = pos >= 0
    if not inside.any():
        return dur
    fixed = int(dur[inside].min())
    n = np.bincount(pos[inside])[pos[inside]]  # kernels launched in each interval
    dur[inside] = np.maximum(dur[inside] - fixed, 0) + (fixed * calls // np.maximum(n, 1))
    return dur


# --------------------------------------------------------------------------- elementwise fusion
def fuse_elementwise(model: StepModel, attr: Attribution) -> Estimate | None:
    """Chains of elementwise ops on the same tensor: one fused kernel reads the inputs and writes once."""
    leaf = _leaf_ops(model)
    if leaf.empty:
        return None
    leaf = leaf[_outside(model, leaf, "optimizer", "data_loading") & ~leaf["inside_other_op"].to_numpy()]
    leaf = leaf.reset_index(drop=True)
    loops = _loops(model)[0]
    if loops:  # a loop over elements is one cause (vectorise_loops), not chains to fuse
        spans = merge_intervals(np.array([c[0] for c in loops], np.int64), np.array([c[1] for c in loops], np.int64))
        leaf = leaf[~covered(spans, leaf["ts_ns"].to_numpy(np.int64))].reset_index(drop=True)
    # Args are decoded only for the ops that can form chains (outside the optimizer, loading and loops).
    leaf = _with_sizes(model, leaf)
    if leaf.empty or leaf["numel"].max() <= 0:
        return None  # no shapes recorded: no bytes model
    a = _dispatch_floor(leaf)
    # Views, allocations and the wrapping of Python scalars (``x * 0.5`` copies a 0-d tensor) sit
    # between a chain's ops and move no data: a fused kernel absorbs them, they do not break the chain.
    cat = leaf["category"].to_numpy(object)
    sized = np.isin(cat, (ELEMENTWISE, REDUCTION))
    transparent = (cat == LAYOUT) | (sized & (leaf["numel"].to_numpy() <= 1))
    transparent |= name_mask(leaf["name"], lambda n: n.str.match(_AUTOGRAD_NODE_RE))
    leaf = leaf[~transparent].reset_index(drop=True)
    if leaf.empty:
        return None
    # Pointwise ops and the reductions over the same tensor (a hand-written softmax's max/sum, a
    # layer norm's means): a compiler fuses both into one kernel per chain.
    elem = np.isin(leaf["category"].to_numpy(object), (ELEMENTWISE, REDUCTION)) & (leaf["numel"].to_numpy() > 0)
    elem &= ~name_mask(leaf["name"], lambda n: n.str.contains(_FOREACH_RE))
    numel = leaf["numel"].to_numpy(np.int64)
    tid = leaf["tid"].to_numpy(np.int64)
    ts, end = leaf["ts_ns"].to_numpy(np.int64), leaf["end_ns"].to_numpy(np.int64)
    # Same tensor family: equal sizes, or one a whole multiple of the other (a reduction's per-row
    # output, the per-row statistic broadcast back over the rows).
    lo, hi = np.minimum(numel[1:], numel[:-1]), np.maximum(numel[1:], numel[:-1])
    family = (lo > 0) & (hi % np.maximum(lo, 1) == 0)
    # Forward and backward are separate graphs to a compiler: a chain never spans the two.
    bwd = covered(_autograd_intervals(model), ts)
    link = elem[1:] & elem[:-1] & family & (tid[1:] == tid[:-1]) & (bwd[1:] == bwd[:-1])
    link &= (ts[1:] - end[:-1]) <= CHAIN_MAX_GAP_NS
    # Other work between two ops (a GEMM's wrapper, a compiled region whose kernels are not recorded
    # as operators) ends the chain.
    breaking = _breaking_starts(model)
    link &= np.searchsorted(breaking, ts[1:], side="left") == np.searchsorted(breaking, end[:-1], side="right")
    chain_id = np.cumsum(np.concatenate([[True], ~link]))
    bytes_ = (leaf["tensor_inputs"].to_numpy(np.int64) + 1) * numel * leaf["elem_bytes"].to_numpy(np.int64)
    dur = leaf["dur_ns"].to_numpy(np.int64)
    frame = pd.DataFrame({"chain": chain_id, "elem": elem, "ts": ts, "end": end, "dur": dur, "bytes": bytes_,
                          "name": leaf["name"].to_numpy(object)})
    frame = frame[frame["elem"] & (frame["bytes"] > 0)]
    # Each op's achieved bandwidth (bytes per ns past its dispatch); a chain's fused kernel streams at
    # the median of its own ops' (same tensors, same caches; one slow outlier does not move it).
    frame["bw"] = frame["bytes"] / np.maximum(frame["dur"] - a, 1)
    g = frame.groupby("chain", sort=False)
    chains = pd.DataFrame({"n": g.size(), "ts": g["ts"].min(), "end": g["end"].max(), "bw": g["bw"].median(),
                           "first_bytes": g["bytes"].max()})
    # A chain over tiny tensors saves dispatches, not bytes (loops over elements: vectorise_loops).
    chains = chains[(chains["n"] >= MIN_CHAIN_OPS) & (chains["first_bytes"] > 4 * TINY_OP_BYTES)]
    if chains.empty:
        return None
    fused = (a + chains["first_bytes"] / chains["bw"]).astype(np.int64).to_numpy()
    s, e = chains["ts"].to_numpy(np.int64), chains["end"].to_numpy(np.int64)
    order = np.argsort(s)
    s, e = s[order], e[order]
    # A fused chain is never longer than the chain itself without the profiler's bookkeeping.
    fused = np.minimum(fused[order], (e - s) - profiler_overhead(model).removed(s, e))
    bw = float(chains["bw"].median())
    gpu_dur = None
    if model.has_gpu:
        gpu_dur = _fold_kernels(model, s, e, 1)
    longest = chains.sort_values("n", ascending=False).index[:2]
    top = [" -> ".join(dict.fromkeys(str(v).split("::")[-1] for v in frame.loc[frame["chain"] == c, "name"]))
           for c in longest]
    return Estimate(
        "bottleneck.unfused_elementwise", "cpu_compute:elementwise" if not model.has_gpu else "gpu_compute:elementwise",
        f"{len(chains)} chains of elementwise ops run one op at a time ({int(chains['n'].sum())} ops)",
        "Fuse them: torch.compile the module (or write the chain as one op, e.g. F.gelu, F.layer_norm)",
        f"a fused chain reads its inputs and writes one output (the bytes of its largest op), at the bandwidth its own ops "
        f"reach (median {bw:.1f} GB/s), and pays one dispatch ({a / 1e3:.1f} µs) instead of one per op; "
        f"the Python between the ops goes (the profiler's bookkeeping there, "
        f"{profiler_overhead(model).per_op_ns / 1e3:.1f} µs per op, is not counted: the unprofiled run never pays it)",
        Change(cuts=(s, e, fused), gpu_dur=gpu_dur),
        {"chains": len(chains), "ops": int(chains["n"].sum()), "bandwidth_gbps": round(bw, 2),
         "dispatch_ns": a, "examples": top})


def _autograd_intervals(model: StepModel) -> tuple[np.ndarray, np.ndarray]:
    """Merged host intervals inside the autograd engine's node wrappers (backward), any host thread."""
    ops = model.ops
    bwd = ops[name_mask(ops["name"], lambda n: n.str.match(_AUTOGRAD_RE))]
    return merge_intervals(bwd["ts_ns"].to_numpy(np.int64), bwd["end_ns"].to_numpy(np.int64))


def _breaking_starts(model: StepModel) -> np.ndarray:
    """Sorted starts of host ops that are neither pointwise, reductions, views nor autograd bookkeeping."""
    ops = model.ops
    keep = ops["kind"].isin(("cpu_op", "annotation")).to_numpy() & _not_fusable(model)
    return np.sort(ops["ts_ns"].to_numpy(np.int64)[keep])


# --------------------------------------------------------------------------- dispatch-bound loops
def _loops(model: StepModel) -> tuple[list, list, list]:
    """The per-element loops of the steps: (start, end, new length) cuts, iteration counts, body op names."""
    if "loops" not in model.cache:
        model.cache["loops"] = _find_loops(model)
    return model.cache["loops"]


def _find_loops(model: StepModel) -> tuple[list, list, list]:
    ops = model.ops
    outer = ops[ops["main"].to_numpy() & ops["kind"].isin(("cpu_op",)).to_numpy()]
    outer = outer[outermost(outer) & _outside(model, outer, "optimizer", "data_loading")].reset_index(drop=True)
    if len(outer) < MIN_LOOP_ITERATIONS:
        return [], [], []
    names = outer["name"].to_numpy(object)
    marker = name_mask(outer["name"], lambda n: n.str.match(_LOOP_INDEX_RE)).astype(bool)
    at = np.flatnonzero(marker)
    if at.size < MIN_LOOP_ITERATIONS:
        return [], [], []
    ts, end = outer["ts_ns"].to_numpy(np.int64), outer["end_ns"].to_numpy(np.int64)
    new_loop = np.concatenate([[True], (np.diff(at) > MAX_LOOP_BODY_OPS) | (ts[at[1:]] - end[at[:-1]] > MAX_LOOP_GAP_NS)])
    loop_id = np.cumsum(new_loop)
    cuts, iterations, bodies = [], [], []
    for lid in np.unique(loop_id):
        m = at[loop_id == lid]
        if m.size < MIN_LOOP_ITERATIONS:
            continue
        counts = pd.Series(names[m[0]:m[-1] + 1]).value_counts()
        body = counts[counts >= MIN_LOOP_ITERATIONS]
        n_iter = int(body.min()) if not body.empty else 0
        if n_iter < MIN_LOOP_ITERATIONS:
            continue
        per_iter = max(1, (m[-1] - m[0]) // max(n_iter - 1, 1))
        last = min(len(outer) - 1, m[-1] + per_iter - 1)
        s0, e0 = int(ts[m[0]]), int(end[m[0]:last + 1].max())
        # One iteration of the loop as the unprofiled run pays it.
        traced = (e0 - s0) - int(profiler_overhead(model).removed(np.array([s0]), np.array([e0]))[0])
        cuts.append((s0, e0, max(traced, 0) // n_iter))
        iterations.append(n_iter)
        bodies.append(", ".join(str(x).split("::")[-1] for x in body.index[:6]))
    return cuts, iterations, bodies


def vectorise_loops(model: StepModel, attr: Attribution) -> Estimate | None:
    """A Python loop over a tensor's elements: the same few ops once per row, forward and backward.

    A loop shows as many indexing calls (``aten::select``/``slice``/``index``/``item``, and in backward
    their ``SelectBackward0``... nodes) among ops on small tensors, one or two per iteration. The
    ops between the first and the last of them, plus one iteration, are the loop; its iteration count
    is the least count of the op names that repeat at least ``MIN_LOOP_ITERATIONS`` times in it (each
    op of the body runs at least once per iteration). Vectorised, the body runs once over the whole
    batch and, its tensors being small, costs about one iteration: the loop keeps 1/iterations.
    """
    cuts, iterations, bodies = _loops(model)
    if not cuts:
        return None
    cs, ce, cl = (np.array(x, np.int64) for x in zip(*cuts))
    order = np.argsort(cs)
    return Estimate(
        "bottleneck.dispatch_bound", "other_host",
        f"{len(cuts)} Python loops over tensor elements ({int(np.median(iterations))} iterations each)",
        "Vectorise the loop: one op over the whole batch instead of one per row (e.g. F.cross_entropy, "
        "tensor indexing with an index tensor), or torch.compile it",
        "each loop's body runs once over the whole batch instead of once per row; its tensors being "
        "small, one vectorised pass costs about one iteration, so each loop keeps 1/iterations of its time",
        Change(cuts=(cs[order], ce[order], cl[order])),
        {"loops": len(cuts), "iterations": int(np.median(iterations)), "body": bodies[0]})


def cuda_graphs(model: StepModel, attr: Attribution) -> Estimate | None:
    """The GPU waits while the host issues work: capture the step's launches in a CUDA graph."""
    if not model.has_gpu:
        return None
    ops = model.ops
    launch = ops[ops["launches"].to_numpy()]
    seg = attr.segments
    bound = seg[(seg["cause"] == "launch_bound").to_numpy()]
    if launch.empty or bound.empty:
        return None
    # The host time the GPU waited on while operators were being issued: what a graph replaces.
    s, e = merge_intervals(bound["start_ns"].to_numpy(np.int64), bound["end_ns"].to_numpy(np.int64))
    pos = step_index(launch["ts_ns"].to_numpy(np.int64), s, e)
    inside = pos >= 0
    count = np.bincount(pos[inside], minlength=s.size)
    new = np.minimum(count * GRAPH_LAUNCH_PER_KERNEL_NS, (e - s) - profiler_overhead(model).removed(s, e))
    syncs_inside = len(model.syncs) > 0
    share = float(bound["time_ns"].sum()) / max(int(model.step_ns.sum()), 1)
    return Estimate(
        "bottleneck.dispatch_bound", "launch_bound",
        f"The GPU is idle {share:.0%} of each step waiting for the host to launch its kernels "
        f"({int(inside.sum())} launches)",
        "Capture the forward/backward in a CUDA graph (torch.compile(mode='reduce-overhead') or "
        "torch.cuda.graphs); it needs static shapes" + (" and no host syncs inside" if syncs_inside else ""),
        f"the host time the GPU waited on while operators were issued becomes graph replay, costing "
        f"{GRAPH_LAUNCH_PER_KERNEL_NS / 1e3:.1f} µs per kernel launched in it",
        Change(cuts=(s, e, new.astype(np.int64))),
        {"launches": int(inside.sum())})


# --------------------------------------------------------------------------- syncs and copies
def remove_syncs(model: StepModel, attr: Attribution) -> Estimate | None:
    """Host waits for the device (synchronize, .item()): read values less often, keep them on the device."""
    syncs = model.syncs
    if syncs.empty:
        return None
    is_sync = (syncs["kind"] == "device_sync").to_numpy() | syncs["site"].isin(_ITEM_SITES).to_numpy()
    if not is_sync.any():
        return None
    sites = syncs[is_sync].groupby("site", sort=False).size().sort_values(ascending=False)
    where = ", ".join(f"{s or 'Python'} x{int(n)}" for s, n in sites.head(3).items())
    return Estimate(
        "bottleneck.device_sync", "device_sync",
        f"The host waits for the GPU {int(is_sync.sum())} times ({where})",
        "Remove the synchronizations from the step: keep values on the device (loss.detach() into a running "
        "tensor) and read them every N steps; avoid .item(), .cpu(), print(tensor) and torch.cuda.synchronize()",
        "every device synchronization in the steps stops waiting (each keeps its own call cost); the host "
        "then runs ahead and the replay says what the GPU does with it",
        Change(free_syncs=is_sync), {"syncs": int(is_sync.sum()), "sites": where})


def pinned_copies(model: StepModel, attr: Attribution) -> Estimate | None:
    """Copies that block the host: pinned memory and non_blocking=True let the host carry on."""
    syncs = model.syncs
    if syncs.empty:
        return None
    is_copy = (syncs["kind"] == "blocking_copy").to_numpy() & ~syncs["site"].isin(_ITEM_SITES).to_numpy()
    if not is_copy.any():
        return None
    sites = syncs[is_copy].groupby("site", sort=False)["dur_ns"].sum().sort_values(ascending=False)
    where = ", ".join(f"{s or 'Python'}" for s in sites.head(3).index)
    return Estimate(
        "bottleneck.blocking_copy", "blocking_copy",
        f"{int(is_copy.sum())} host<->device copies block the host ({where})",
        "Copy from/to pinned memory with non_blocking=True (DataLoader(pin_memory=True); "
        "tensor.pin_memory(); x.to(device, non_blocking=True)) and synchronize only where the data is used",
        "each blocking copy stops waiting for the work queued before it (the copy itself is kept); the "
        "replay assumes the data is next needed at a later synchronization of the step",
        Change(free_syncs=is_copy), {"copies": int(is_copy.sum()), "sites": where})


# --------------------------------------------------------------------------- communication
def bucket_collectives(model: StepModel, attr: Attribution) -> Estimate | None:
    """Exposed communication: fewer, larger collectives (buckets), overlapped with backward."""
    coll = model.collectives
    if coll.empty or "bytes" not in coll.columns:
        return None
    coll = coll[coll["type"].astype(str).str.contains("allreduce|reduce_scatter|all_reduce", regex=True)]
    coll = coll[np.isfinite(coll["bytes"].to_numpy(float))]
    if len(coll) < 2:
        return None
    b = coll["bytes"].to_numpy(float)
    t = coll["dur_ns"].to_numpy(float)
    alpha, beta = _latency_bandwidth(b, t)
    n_win = len(model.windows)
    per_step = coll.groupby("window")
    calls = float(per_step.size().median())
    total = float(per_step["bytes"].sum().median())
    buckets = max(1, math.ceil(total / DDP_BUCKET_BYTES))
    comm_now = float(per_step["dur_ns"].sum().median())
    comm_new = buckets * alpha + total / beta
    ddp = bool(name_mask(model.ops["name"], lambda n: n.str.contains(_DDP_RE)).any())
    if calls <= buckets + (1 if ddp else 0) and (ddp or buckets < 2):
        # Already as few calls as buckets (DDP keeps a small first bucket on purpose), and nothing
        # to overlap: a single bucket can only start once backward has finished.
        return None
    backward = _backward_per_window(model)
    overlapped_now = _overlaps_backward(model, coll)
    table = attr.table
    exposed_now = (table[table["cause"] == "exposed_communication"].groupby("window")["time_ns"].sum()
                   .reindex(range(n_win), fill_value=0).to_numpy(float))
    if overlapped_now or ddp:
        exposed_new = exposed_now * min(1.0, comm_new / max(comm_now, 1.0))
        how_overlap = "the collectives already overlap backward; the exposed part shrinks with the total time"
    else:
        last = comm_new / buckets
        exposed_new = np.maximum(comm_new - backward, last)
        how_overlap = ("buckets are reduced while backward runs (as DDP does): exposed is what does not fit "
                       "behind backward, at least the last bucket")
    exposed_new = np.minimum(exposed_new, exposed_now)
    if not (exposed_now > 0).any():
        return None
    latency_bound = calls * alpha > total / beta
    loop = None if (overlapped_now or ddp or model.has_gpu) else _comm_loop(model, coll)
    if loop is not None:
        # The collectives are called one by one after backward: the whole stretch from the first call
        # to the last collective's end (waits and the Python loop between the calls) becomes the
        # bucketed, overlapped communication.
        ls, le, lw = loop
        new_len = exposed_new[lw] / np.maximum(np.bincount(lw, minlength=n_win)[lw], 1)
        change = Change(cuts=(ls, le, np.minimum(new_len.astype(np.int64), le - ls)))
        exposed_now = np.maximum(exposed_now, np.bincount(lw, weights=le - ls, minlength=n_win))
    else:
        change = _scale_comm(model, attr, exposed_now, exposed_new)
    kind = "latency-bound (many small calls)" if latency_bound else "bandwidth-bound"
    return Estimate(
        "bottleneck.exposed_communication", "exposed_communication",
        f"Communication is exposed and {kind}: {calls:.0f} collectives per step, {total / 2**20:.1f} MiB",
        ("Let DistributedDataParallel bucket the gradients and overlap their all-reduce with backward "
         "(or coalesce them yourself into ~25 MiB flat buffers)") if not ddp else
        "Raise DDP's bucket_cap_mb / use gradient_as_bucket_view, or reduce what is communicated",
        f"per-call latency {alpha / 1e3:.0f} µs and bandwidth {beta:.2f} GB/s fitted on this trace's own "
        f"{len(coll)} collectives; {calls:.0f} calls per step become {buckets} bucket(s) of at most 25 MiB; "
        + how_overlap,
        change,
        {"collectives_per_step": int(calls), "step_bytes": int(total), "latency_ns": int(alpha),
         "bandwidth_gbps": round(beta, 3), "buckets": buckets})


def _latency_bandwidth(b: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Per-call latency (ns) and bandwidth (bytes/ns) of t = alpha + b / beta, fitted on the fast calls.

    A collective's duration includes the wait for the slowest rank to join; the calls that did not
    wait show the transfer itself. So per message size (power-of-two bins) the 20th percentile
    duration is taken, and the line is fitted through those points by least squares.
    """
    bins = np.floor(np.log2(np.maximum(b, 1))).astype(np.int64)
    frame = pd.DataFrame({"bin": bins, "b": b, "t": t}).groupby("bin")
    pts = pd.DataFrame({"b": frame["b"].median(), "t": frame["t"].quantile(FAST_CALL_QUANTILE)})
    if len(pts) >= 2 and np.ptp(pts["b"]) > 0:
        slope, alpha = np.polyfit(pts["b"].to_numpy(float), pts["t"].to_numpy(float), 1)
        if slope > 0 and alpha >= 0:
            return float(alpha), float(1.0 / slope)
        if slope > 0:
            return 0.0, float(pts["b"].sum() / pts["t"].sum())
    return float(pts["t"].min()), math.inf


def _backward_per_window(model: StepModel) -> np.ndarray:
    """Backward time (the autograd engine's nodes) inside each window, ns."""
    return _per_window(model, _autograd_intervals(model))


def _overlaps_backward(model: StepModel, coll: pd.DataFrame) -> bool:
    """True when most collectives start while backward runs (they are already overlapped)."""
    return bool(len(coll)) and bool(covered(_autograd_intervals(model), coll["ts_ns"].to_numpy(np.int64)).mean() > 0.5)


def _comm_loop(model: StepModel, coll: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per window, the host stretch from the first collective call to the last collective's end."""
    ops = model.ops
    main = ops[ops["main"].to_numpy()]
    calls = main[name_mask(main["name"], lambda n: n.str.match(r"^c10d::"))]
    if len(calls) < 2:
        return None
    w = calls["window"].to_numpy(np.int64)
    first = pd.Series(calls["ts_ns"].to_numpy(np.int64)).groupby(w).min()
    last_call = pd.Series(calls["end_ns"].to_numpy(np.int64)).groupby(w).max()
    cw = coll["window"].to_numpy(np.int64)
    last_coll = pd.Series(coll["end_ns"].to_numpy(np.int64)).groupby(cw).max().reindex(first.index)
    end = np.maximum(last_call.to_numpy(np.int64), np.nan_to_num(last_coll.to_numpy(float), nan=0).astype(np.int64))
    windows = first.index.to_numpy(np.int64)
    keep = windows >= 0
    return first.to_numpy(np.int64)[keep], end[keep], windows[keep]


def _exposed_intervals(attr: Attribution) -> tuple[np.ndarray, np.ndarray]:
    """The host-side exposed communication of the steps (attribution segments), merged."""
    seg = attr.segments
    exp = seg[(seg["cause"] == "exposed_communication").to_numpy()]
    return merge_intervals(exp["start_ns"].to_numpy(np.int64), exp["end_ns"].to_numpy(np.int64))


def _scale_comm(model: StepModel, attr: Attribution, now: np.ndarray, new: np.ndarray) -> Change:
    """The change that shrinks each window's exposed communication from ``now`` to ``new``."""
    ratio = np.where(now > 0, new / np.maximum(now, 1), 1.0)
    if model.has_gpu:
        gpu = model.gpu
        dur = gpu["dur_ns"].to_numpy(np.int64).copy()
        comm = gpu["category"].to_numpy(object) == COMMUNICATION
        w = gpu["window"].to_numpy(np.int64)
        dur[comm] = (dur[comm] * ratio[w[comm]]).astype(np.int64)
        return Change(gpu_dur=dur)
    s, e = _exposed_intervals(attr)
    win = model.windows
    w = step_index(s, win["start_ns"].to_numpy(np.int64), win["end_ns"].to_numpy(np.int64))
    r = np.where(w >= 0, ratio[np.maximum(w, 0)], 1.0)
    return Change(cuts=(s, e, ((e - s) * r).astype(np.int64)))


# --------------------------------------------------------------------------- precision
def mixed_precision(model: StepModel, attr: Attribution) -> Estimate | None:
    """FP32 GEMMs on a GPU with faster low-precision units: autocast to bf16 (or fp16)."""
    if not model.has_gpu:
        return None
    gpu = model.gpu
    fp32 = (gpu["category"].to_numpy(object) == GEMM) & gpu["fp32_gemm"].to_numpy(bool)
    if not fp32.any():
        return None
    spec = spec_for_trace(model.trace)
    if spec is None:
        return None
    peaks = spec.peak_flops_per_s
    base = peaks.get("fp32") or 0
    low = "bf16" if peaks.get("bf16") else "fp16" if peaks.get("fp16") else None
    if not base or low is None or peaks[low] <= base:
        return None
    # Compute-bound GEMMs speed up by the peak ratio; memory-bound ones by the halved bytes. Without
    # each kernel's intensity the smaller of the two is taken: a floor on the gain.
    speedup = min(peaks[low] / base, 2.0)
    dur = gpu["dur_ns"].to_numpy(np.int64).copy()
    dur[fp32] = (dur[fp32] / speedup).astype(np.int64)
    how = (f"each FP32 GEMM runs {speedup:.1f}x faster in {low} on {spec.name}: bytes halve; compute-bound "
           f"GEMMs could gain up to the peak ratio {peaks[low] / base:.0f}x, so this is a floor")
    rec = ("Train under torch.autocast('cuda', dtype=torch.bfloat16)" if low == "bf16" else
           "Train under torch.autocast('cuda', dtype=torch.float16) with torch.amp.GradScaler "
           f"({spec.name} has no bf16 or TF32 units)")
    return Estimate("bottleneck.fp32_matmul", "gpu_compute:gemm/conv",
                    f"{int(fp32.sum())} GEMM/conv kernels run in FP32 on a GPU with {low} tensor cores",
                    rec, how, Change(gpu_dur=dur), {"fp32_gemms": int(fp32.sum()), "device": spec.name,
                                                    "dtype": low})


#: Every what-if, in the order findings are made (one finding per cause; the larger gain wins a tie).
TRANSFORMS: tuple[Callable[[StepModel, Attribution], Estimate | None], ...] = (
    hide_data_loading, remove_syncs, pinned_copies, bucket_collectives, foreach_optimizer,
    fuse_elementwise, vectorise_loops, cuda_graphs, mixed_precision,
)
