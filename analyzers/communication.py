"""Collective communication: one row per collective, bandwidths, overlap with compute, stragglers.

Where a collective comes from
-----------------------------
* **GPU (NCCL/RCCL) jobs**: every kernel whose name starts with ``nccl``/``rccl``
  (``ncclKernel_AllReduce_…``, ``ncclDevKernel_…``) is one collective, timed by the kernel itself.
  Its type, message size, dtype and group size come, in this order, from the kernel's own args
  (``Collective name``, ``In msg nelems``, ``Out msg nelems``, ``dtype``, ``Group size``), from the
  ``record_param_comms`` op that encloses the kernel's launch, and from the enclosing ``nccl:<op>``
  annotation (``Input Dims`` × ``Input type``). The launch is found through the kernel's
  correlation id (the runtime ``cudaLaunchKernel`` event, ``timeline.launches``), and "enclosing"
  means the innermost CPU event on the launching thread whose interval contains the launch
  (``timeline.nesting``). The type from an annotation wins over the kernel name: NCCL may run an
  all-reduce as ``SendRecv`` kernels.
* **CPU (gloo, mpi, ucc) jobs**: every ``gloo:<op>`` (``mpi:``/``ucc:``) annotation is one
  collective, timed by its CPU duration (torch records it on the backend's worker thread around
  the actual transfer). ``nccl:<op>`` annotations without a kernel are *not* collectives: their
  CPU duration is only the launch.

Sizes and bandwidths (the nccl-tests conventions)
-------------------------------------------------
``bytes`` is the larger of the input and output buffers (for all-gather the gathered output, for
reduce-scatter the full input); an all-gather known only by its input shard counts
shard × group size. ``algbw_gbps = bytes / dur_ns`` (bytes per ns = GB/s) and
``busbw_gbps = algbw_gbps × factor`` with factor 2(n-1)/n for all-reduce, (n-1)/n for all-gather,
reduce-scatter and all-to-all, 1 for broadcast, reduce, send/recv (n = group size).

Overlap and exposed communication
---------------------------------
*Compute* is the union of all non-communication kernels (GPU jobs), or of the CPU ops on threads
that run no collective minus the time those threads spend inside communication ops such as a
blocking ``c10d::allreduce_`` (CPU jobs). ``overlap_pct`` is the share of communication time (union of
collective intervals) overlapped by compute, as Holistic Trace Analysis defines comm/comp overlap.
*Exposed* communication is communication time during which no compute runs. Per step it is taken
over the step windows of ``timeline.steps`` (a step runs until the next one starts); without steps
the whole trace is one window.

Stragglers (across the ranks of a job)
--------------------------------------
Each rank is reduced on its own to `StragglerInputs` (its collectives' type, size, step and start,
and its compute per step); the matching below runs on those parts only, never on the ranks' full
traces, so a job of many ranks is analyzed one rank at a time (``torchscope.analyzers.jobs``).
The n-th collective of a type (and, for types whose message is the same on every rank, of a size)
within a step is matched across ranks. A rank's *lateness* for a matched collective is its start
minus the earliest rank's start; the others wait that long inside the collective, so a rank whose
median lateness and lateness summed per step pass the thresholds is a straggler. Starts are
compared on the traces' own clocks: ranks on different hosts add their clock offset to the skew.
A rank whose compute per step (union of compute kernels) exceeds the median of the other ranks by
``SLOW_COMPUTE_MIN_EXCESS`` is reported as slow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from torchscope.analyzers.core.args import decode_args
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.trace import Trace, TraceSet, name_mask
from torchscope.analyzers.hardware.dtypes import dtype_bytes
from torchscope.analyzers.timeline.intervals import covered_ns, merge_intervals, subtract
from torchscope.analyzers.timeline.launches import launch_columns
from torchscope.analyzers.timeline.nesting import enclosing
from torchscope.analyzers.timeline.steps import step_of, step_windows, windows_or_span

__all__ = [
    "collectives", "busbw_factor", "exposed_per_step", "compute_per_step", "analyze",
    "analyze_stragglers", "stragglers_from_inputs", "straggler_inputs", "StragglerInputs", "match_collectives",
    "matched_collectives", "MATCH_COLUMNS", "EXPOSED_COMM_MIN_SHARE", "EXPOSED_COMM_CRITICAL_SHARE",
    "SMALL_MESSAGE_BYTES", "STRAGGLER_MIN_LATENESS_NS", "STRAGGLER_MIN_SHARE", "SLOW_COMPUTE_MIN_EXCESS",
    "EXPOSED_COMMUNICATION", "STRAGGLER_RANK", "SLOW_COMPUTE_RANK", "SUMMARY_KEYS", "STRAGGLERS_SUMMARY_KEYS",
]

#: Keys of the ``communication`` summary -> what each is, with its unit.
SUMMARY_KEYS: dict[str, str] = {
    "collectives": "number of collectives in the trace",
    "timed_on": "what times the collectives: 'gpu' (NCCL/RCCL kernels) or 'cpu' (gloo/mpi/ucc annotations)",
    "comm_ns": "communication time, union of all collective intervals, ns",
    "overlapped_ns": "communication time during which compute runs, ns",
    "exposed_ns": "communication time during which no compute runs (comm_ns - overlapped_ns), ns",
    "overlap_pct": "overlapped_ns as a share of comm_ns, %",
    "total_bytes": "message bytes summed over all collectives (nccl-tests size convention), bytes",
    "median_exposed_pct_per_step": "median over step windows of exposed communication / step time, %",
}
#: Keys of the ``stragglers`` summary -> what each is, with its unit.
STRAGGLERS_SUMMARY_KEYS: dict[str, str] = {
    "ranks": "number of ranks compared",
    "matched_collectives": "collectives matched across all ranks (step, type, size, occurrence)",
    "median_skew_ns": "median over matched collectives of latest minus earliest start, ns",
    "max_skew_ns": "largest start skew of a matched collective, ns",
    "straggler_ranks": "ranks with a stragglers.straggler_rank finding, list of int",
    "slow_compute_ranks": "ranks with a stragglers.slow_compute_rank finding, list of int",
}

#: Finding: communication not overlapped by compute takes a large share of each step.
EXPOSED_COMMUNICATION = "communication.exposed_communication"
#: Exposed communication above this share of step time raises a finding (warning).
EXPOSED_COMM_MIN_SHARE = 0.10
#: ... and above this share the finding is critical.
EXPOSED_COMM_CRITICAL_SHARE = 0.30
#: Collectives whose median message is below this are latency-bound: bigger buckets help most.
SMALL_MESSAGE_BYTES = 1 << 20
#: Finding: one rank starts its collectives late, the others wait for it.
STRAGGLER_RANK = "stragglers.straggler_rank"
#: Finding: one rank computes longer per step than the others.
SLOW_COMPUTE_RANK = "stragglers.slow_compute_rank"
#: A rank is a straggler when its collectives start at least this much later than the earliest rank
#: (median over matched collectives) ...
STRAGGLER_MIN_LATENESS_NS = 1_000_000
#: ... and that lateness, summed over a step, is at least this share of the step time.
STRAGGLER_MIN_SHARE = 0.05
#: A straggler whose lateness per step is at least this share of the step is critical.
STRAGGLER_CRITICAL_SHARE = 0.20
#: A rank's compute per step this much above the median of the other ranks makes it slow.
SLOW_COMPUTE_MIN_EXCESS = 0.10

_COMM_KERNEL_PREFIXES = ("nccl", "rccl")
#: Collective types whose message size may differ between ranks (not part of the match key).
_PER_RANK_SIZE_TYPES = ("alltoall", "sendrecv", "send", "recv", "gather", "scatter", "other")
_MATCH_KEY = ["step", "type", "size_key", "occurrence"]
_CPU_COLLECTIVE_PREFIXES = ("gloo:", "mpi:", "ucc:")
_GPU_COLLECTIVE_ANNOTATION = re.compile(r"^(nccl|rccl):")
_CPU_COMM_OP = re.compile(r"^(c10d::|record_param_comms|nccl:|rccl:|gloo:|mpi:|ucc:|aten::wait|c10d_functional::)")

#: Collective types, the substring that identifies each in a normalised name (order matters).
_TYPE_PATTERNS = (
    ("allreduce", "allreduce"), ("reducescatter", "reducescatter"), ("allgather", "allgather"),
    ("alltoall", "alltoall"), ("broadcast", "broadcast"), ("sendrecv", "sendrecv"),
    ("send", "send"), ("recv", "recv"), ("reduce", "reduce"), ("barrier", "barrier"),
    ("gather", "gather"), ("scatter", "scatter"),
)


_COLLECTIVE_COLUMNS = [
    "ts_ns", "dur_ns", "end_ns", "type", "name", "bytes", "group_size", "algbw_gbps", "busbw_gbps",
    "timed_on", "stream", "tid", "launch_ts_ns", "step", "rank", "process_group",
]


def collective_type(name: str) -> str:
    """Canonical collective type ("allreduce", "allgather", ...) from an op, annotation or kernel name."""
    norm = re.sub(r"[^a-z]", "", str(name).lower())
    for pattern, ctype in _TYPE_PATTERNS:
        if pattern in norm:
            return ctype
    return "other"


def busbw_factor(ctype: str, group_size: int) -> float:
    """nccl-tests bus-bandwidth factor for a collective type over ``group_size`` ranks."""
    n = max(int(group_size), 1)
    if ctype == "allreduce":
        return 2.0 * (n - 1) / n
    if ctype in ("allgather", "reducescatter", "alltoall", "gather", "scatter"):
        return (n - 1) / n
    return 1.0


def _dtype_bytes(dtype: object) -> float:
    """Bytes per element of a dtype spelled as in Kineto args (``hardware.dtypes``); NaN when unknown."""
    size = dtype_bytes(dtype)
    return float(size) if size is not None else np.nan


def _first_dims_bytes(args: object) -> tuple[float, float]:
    """(elements, bytes per element) of the first input of an annotation's Input Dims/Input type."""
    if not isinstance(args, Mapping):
        return (np.nan, np.nan)
    dims, types = args.get("Input Dims"), args.get("Input type")
    if not isinstance(dims, list) or not dims or not isinstance(dims[0], list) or not dims[0]:
        return (np.nan, np.nan)
    shapes = dims[0] if isinstance(dims[0][0], list) else [dims[0]]  # a TensorList: sum of its tensors
    try:
        nelems = float(sum(np.prod([int(d) for d in shape]) for shape in shapes))
    except (TypeError, ValueError):
        return (np.nan, np.nan)
    first_type = types[0] if isinstance(types, list) and types else None
    return (nelems, _dtype_bytes(first_type))


def _param_fields(args: object) -> dict:
    """Collective fields from ``record_param_comms``-style args (also carried by newer NCCL kernels)."""
    if not isinstance(args, Mapping) or "Collective name" not in args:
        return {}
    nelems = [float(args[k]) for k in ("In msg nelems", "Out msg nelems")
              if isinstance(args.get(k), (int, float)) and not isinstance(args.get(k), bool)]
    group = args.get("Group size")
    if not (isinstance(group, (int, float)) and group > 0):
        # "Process Group Ranks" is a string such as "[0, 1, 2, 3]".
        ranks = re.findall(r"\d+", str(args.get("Process Group Ranks", "")))
        group = len(ranks) if ranks else None
    pg = args.get("Process Group Name")
    desc = args.get("Process Group Description")
    return {
        "type": collective_type(args.get("Collective name", "")),
        "nelems": max(nelems) if nelems else np.nan,
        "elem_bytes": _dtype_bytes(args.get("dtype")),
        "group_size": float(group) if group else np.nan,
        "full_size": True,
        "process_group": f"{pg} ({desc})" if pg is not None and desc else ("" if pg is None else str(pg)),
    }


def _annotation_fields(name: str, args: object) -> dict:
    """Collective fields from a ``nccl:<op>`` / ``gloo:<op>`` annotation (shapes of its first input)."""
    nelems, elem_bytes = _first_dims_bytes(args)
    return {"type": collective_type(name.split(":", 1)[-1]), "nelems": nelems, "elem_bytes": elem_bytes,
            "group_size": np.nan, "full_size": False}


def _default_group_size(trace: Trace) -> int:
    """Group size when no event says: the only process group's size, or the world size."""
    pgs = (trace.meta.distributed or {}).get("pg_config") or []
    sizes = {int(pg.get("pg_size")) for pg in pgs if isinstance(pg, Mapping) and isinstance(pg.get("pg_size"), int)}
    if len(sizes) == 1:
        return sizes.pop()
    return max(int(trace.meta.world_size or 1), 1)


def _name_mask(events: pd.DataFrame, predicate: Callable[[str], bool]) -> np.ndarray:
    """``predicate(name)`` for every event, evaluated once per distinct name."""
    return name_mask(events["name"], lambda names: names.map(lambda n: bool(predicate(n))))


def _is_comm_kernel_name(name: str) -> bool:
    return name.lower().startswith(_COMM_KERNEL_PREFIXES)


def collectives(trace: Trace) -> pd.DataFrame:
    """One row per collective (times ns, bytes, group size, GB/s bandwidths); empty frame when none."""
    ev = trace.events
    is_kernel = (ev["kind"] == "kernel").to_numpy()
    comm_kernel = is_kernel & _name_mask(ev, _is_comm_kernel_name)
    if comm_kernel.any():
        table = _gpu_collectives(trace, ev[comm_kernel])
    else:
        is_cpu = ev["kind"].isin(("annotation", "cpu_op")).to_numpy()
        cpu_coll = is_cpu & _name_mask(ev, lambda n: n.lower().startswith(_CPU_COLLECTIVE_PREFIXES))
        table = _cpu_collectives(trace, ev[cpu_coll])
    if table.empty:
        return pd.DataFrame({c: pd.Series(dtype=_COLLECTIVE_DTYPES[c]) for c in _COLLECTIVE_COLUMNS})
    return table[_COLLECTIVE_COLUMNS].sort_values("ts_ns", kind="stable").reset_index(drop=True)


_COLLECTIVE_DTYPES = {
    "ts_ns": "int64", "dur_ns": "int64", "end_ns": "int64", "type": "str", "name": "str", "bytes": "float64",
    "group_size": "int64", "algbw_gbps": "float64", "busbw_gbps": "float64", "timed_on": "str",
    "stream": "int64", "tid": "int64", "launch_ts_ns": "int64", "step": "int64", "rank": "int64",
    "process_group": "str",
}


def _finish(trace: Trace, frame: pd.DataFrame, fields: list[dict], names: list[str]) -> pd.DataFrame:
    """Combine collected fields into the collective table columns (sizes, bandwidths, steps)."""
    default_group = _default_group_size(trace)
    ctype = np.array([f.get("type") or collective_type(n) for f, n in zip(fields, names)], dtype=object)
    nelems = np.array([f.get("nelems", np.nan) for f in fields], dtype=float)
    elem_bytes = np.array([f.get("elem_bytes", np.nan) for f in fields], dtype=float)
    group = np.array([f.get("group_size", np.nan) for f in fields], dtype=float)
    group = np.where(np.isnan(group), default_group, group).astype(np.int64)
    full = np.array([f.get("full_size", False) for f in fields], dtype=bool)
    nbytes = nelems * elem_bytes
    shard_only = (~full) & (ctype == "allgather")
    nbytes = np.where(shard_only, nbytes * group, nbytes)
    dur = frame["dur_ns"].to_numpy(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        algbw = np.where(dur > 0, nbytes / dur, np.nan)
    factor = np.array([busbw_factor(t, g) for t, g in zip(ctype, group)], dtype=float)
    ts = frame["ts_ns"].to_numpy(np.int64)
    return pd.DataFrame({
        "ts_ns": ts, "dur_ns": dur, "end_ns": ts + dur, "type": pd.array(ctype.astype(str), dtype="str"),
        "name": pd.array(names, dtype="str"), "bytes": nbytes, "group_size": group,
        "algbw_gbps": algbw, "busbw_gbps": algbw * factor,
        "stream": frame["stream"].to_numpy(np.int64), "tid": frame["tid"].to_numpy(np.int64),
        "rank": np.full(len(frame), trace.rank, dtype=np.int64),
        "process_group": pd.array([str(f.get("process_group", "")) for f in fields], dtype="str"),
    })


def _gpu_collectives(trace: Trace, kernels: pd.DataFrame) -> pd.DataFrame:
    """Collectives timed by NCCL/RCCL kernels, described by their args or their CPU-side context."""
    ev = trace.events
    joined = launch_columns(trace, kernels["correlation"].to_numpy(), names=False)
    has_launch = joined["launch_ts_ns"] >= 0
    points = pd.DataFrame({"pid": joined["launch_pid"], "tid": joined["launch_tid"], "ts_ns": joined["launch_ts_ns"]})
    cpu = ev["kind"].isin(("cpu_op", "annotation")).to_numpy()
    param_spans = ev[cpu & _name_mask(ev, lambda n: n == "record_param_comms")]
    annot_spans = ev[cpu & _name_mask(ev, lambda n: _GPU_COLLECTIVE_ANNOTATION.match(n.lower()) is not None)]
    param_idx = enclosing(points, param_spans)
    annot_idx = enclosing(points, annot_spans)
    param_args = decode_args(param_spans["args"])
    annot_args = decode_args(annot_spans["args"])
    annot_names = annot_spans["name"].astype(str).to_numpy()
    fields: list[dict] = []
    for i, kargs in enumerate(decode_args(kernels["args"])):
        merged: dict = {}
        sources = [_param_fields(kargs)]
        if param_idx[i] >= 0:
            sources.append(_param_fields(param_args[param_idx[i]]))
        if annot_idx[i] >= 0:
            sources.append(_annotation_fields(annot_names[annot_idx[i]], annot_args[annot_idx[i]]))
        # Type: an annotation names the collective the user asked for; kernels may be generic SendRecv.
        for src in reversed(sources):
            if src.get("type") and src["type"] != "other":
                merged["type"] = src["type"]
                break
        pg = next((src["process_group"] for src in sources if src.get("process_group")), "")
        if pg:
            merged["process_group"] = pg
        for key in ("nelems", "elem_bytes", "group_size"):
            src = next((src for src in sources if key in src and not np.isnan(src[key])), None)
            if src is not None:
                merged[key] = src[key]
                if key == "nelems":
                    merged["full_size"] = src["full_size"]
        fields.append(merged)
    kernel_names = kernels["name"].astype(str).tolist()
    table = _finish(trace, kernels, fields, kernel_names)
    table["timed_on"] = pd.array(["gpu"] * len(table), dtype="str")
    launch_ts = np.where(has_launch, points["ts_ns"].to_numpy(np.int64), table["ts_ns"].to_numpy(np.int64))
    table["launch_ts_ns"] = launch_ts
    table["step"] = step_of(launch_ts, step_windows(trace))
    return table


def _cpu_collectives(trace: Trace, spans: pd.DataFrame) -> pd.DataFrame:
    """Collectives of CPU backends, timed by their ``gloo:<op>``-style annotations."""
    if spans.empty:
        return pd.DataFrame()
    names = spans["name"].astype(str).tolist()
    # torchscope's profiler adds NCCL-style args to gloo annotations (profiler/comms.py): prefer them.
    fields = [_param_fields(a) or _annotation_fields(n, a) for n, a in zip(names, decode_args(spans["args"]))]
    table = _finish(trace, spans, fields, names)
    table["timed_on"] = pd.array(["cpu"] * len(table), dtype="str")
    table["launch_ts_ns"] = table["ts_ns"].to_numpy(np.int64)
    table["step"] = step_of(table["ts_ns"].to_numpy(np.int64), step_windows(trace))
    return table


def _compute_union(trace: Trace, comm: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Union of compute intervals: non-communication kernels, or CPU ops off the collective threads.

    It depends on the collectives only through where they are timed (and, on the CPU, their threads), so
    it is found once per trace and that key (the analysis and its per-step split both ask)."""
    on_gpu = bool((comm["timed_on"] == "gpu").any())
    threads = None if on_gpu else frozenset(comm["tid"].tolist())
    return trace.derived(("communication", "compute_union", on_gpu, threads),
                         lambda: _find_compute_union(trace, threads))


def _find_compute_union(trace: Trace, threads: frozenset | None) -> tuple[np.ndarray, np.ndarray]:
    ev = trace.events
    ts_all, dur_all = ev["ts_ns"].to_numpy(np.int64), ev["dur_ns"].to_numpy(np.int64)
    if threads is None:
        work = (ev["kind"] == "kernel").to_numpy() & ~_name_mask(ev, _is_comm_kernel_name)
        return merge_intervals(ts_all[work], ts_all[work] + dur_all[work])
    # CPU backends: ops of the threads that run no collective, except while such a thread sits in a
    # communication op (c10d::allreduce_ blocking on gloo, a wait): that time is waiting, not compute.
    off_comm = (ev["kind"] == "cpu_op").to_numpy() & ~ev["tid"].isin(set(threads)).to_numpy()
    is_comm_op = _name_mask(ev, lambda n: _CPU_COMM_OP.match(n) is not None)
    work, waiting = off_comm & ~is_comm_op, off_comm & is_comm_op
    return subtract(merge_intervals(ts_all[work], ts_all[work] + dur_all[work]),
                    merge_intervals(ts_all[waiting], ts_all[waiting] + dur_all[waiting]))


def exposed_per_step(trace: Trace, comm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per step window: step time, communication, overlapped and exposed communication, compute (ns)."""
    comm = collectives(trace) if comm is None else comm
    windows = windows_or_span(trace)
    cs, ce = merge_intervals(comm["ts_ns"].to_numpy(np.int64), comm["end_ns"].to_numpy(np.int64))
    ks, ke = _compute_union(trace, comm)
    w_start = windows["start_ns"].to_numpy(np.int64)
    w_end = windows["end_ns"].to_numpy(np.int64)
    comm_ns = covered_ns(w_start, w_end, (cs, ce))
    compute_ns = covered_ns(w_start, w_end, (ks, ke))
    # Overlapped: communication time during which compute runs, i.e. comm minus (comm minus compute).
    both = subtract((cs, ce), subtract((cs, ce), (ks, ke)))
    overlapped = covered_ns(w_start, w_end, both)
    # Collectives per step, by the step that launched them (all of them when the trace has no steps).
    count = comm["step"].value_counts().reindex(windows["step"].to_numpy(), fill_value=0).to_numpy()
    return pd.DataFrame({
        "step": windows["step"].to_numpy(np.int64), "start_ns": w_start, "step_ns": w_end - w_start,
        "collectives": count.astype(np.int64), "comm_ns": comm_ns, "overlapped_ns": overlapped,
        "exposed_ns": comm_ns - overlapped, "compute_ns": compute_ns,
        "exposed_pct": np.where(w_end > w_start, 100.0 * (comm_ns - overlapped) / np.maximum(w_end - w_start, 1), 0.0),
    })


def compute_per_step(trace: Trace, comm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per step window: busy compute time (union of non-communication kernels or CPU ops), ns."""
    comm = collectives(trace) if comm is None else comm
    windows = windows_or_span(trace)
    ks, ke = _compute_union(trace, comm)
    w_start = windows["start_ns"].to_numpy(np.int64)
    w_end = windows["end_ns"].to_numpy(np.int64)
    return pd.DataFrame({"step": windows["step"].to_numpy(np.int64), "step_ns": w_end - w_start,
                         "compute_ns": covered_ns(w_start, w_end, (ks, ke))})


def _per_type(comm: pd.DataFrame) -> pd.DataFrame:
    """Totals per collective type: count, bytes, time, median size and bandwidths."""
    g = comm.groupby("type", observed=True, sort=False)
    # Each column reduced on the one grouping (a named aggregation's result, without its per-call setup).
    out = pd.DataFrame({"count": g["dur_ns"].size(), "total_dur_ns": g["dur_ns"].sum(),
                        "total_bytes": g["bytes"].sum(), "median_bytes": g["bytes"].median(),
                        "median_dur_ns": g["dur_ns"].median(), "median_algbw_gbps": g["algbw_gbps"].median(),
                        "median_busbw_gbps": g["busbw_gbps"].median()})
    out["total_dur_ns"] = out["total_dur_ns"].astype(np.int64)
    total = max(int(out["total_dur_ns"].sum()), 1)
    out["time_pct"] = 100.0 * out["total_dur_ns"] / total
    return out.sort_values("total_dur_ns", ascending=False).reset_index()


def _exposed_finding(trace: Trace, comm: pd.DataFrame, per_type: pd.DataFrame, steps: pd.DataFrame,
                     min_share: float) -> Finding | None:
    """Exposed communication → bigger DDP buckets / overlap / gradient accumulation."""
    valid = steps[steps["step_ns"] > 0]
    if valid.empty:
        return None
    step_ns = float(valid["step_ns"].median())
    exposed_ns = float(valid["exposed_ns"].median())
    share = exposed_ns / step_ns if step_ns > 0 else 0.0
    if share < min_share:
        return None
    # Overlap can only hide communication behind compute not already overlapping it.
    spare_compute_ns = float((valid["compute_ns"] - valid["overlapped_ns"]).clip(lower=0).median())
    hideable_ns = min(exposed_ns, spare_compute_ns)
    gain = min(max(hideable_ns / step_ns, 0.0), 1.0)
    top = per_type.iloc[0]
    per_step_count = float(valid["collectives"].median())
    small = float(top["median_bytes"]) < SMALL_MESSAGE_BYTES if pd.notna(top["median_bytes"]) else False
    if top["type"] in ("allreduce",):
        advice = ("This is data-parallel gradient all-reduce: raise DDP `bucket_cap_mb` (default 25) so "
                  "fewer, larger all-reduces start during backward" if small else
                  "This is data-parallel gradient all-reduce: make sure it overlaps backward (DDP buckets, "
                  "no `find_unused_parameters`, `static_graph=True`)")
        advice += ("; with gradient accumulation, wrap the first k-1 micro-steps in `model.no_sync()` "
                   "so gradients are all-reduced once per k micro-batches")
    elif top["type"] in ("allgather", "reducescatter"):
        advice = ("This is sharded-data-parallel traffic: enable FSDP `forward_prefetch`/`backward_prefetch` "
                  "(or FSDP2 prefetching) so the next all-gather runs under the current layer's compute, "
                  "and use larger wrapping units if messages are small")
    elif top["type"] == "alltoall":
        advice = ("Start the all-to-alls earlier so they run under independent compute (async_op=True and "
                  "wait right before use); for embedding or MoE token exchange, pipeline the next batch's "
                  "input distribution behind the current batch (e.g. TorchRec's TrainPipelineSparseDist) "
                  "and batch small exchanges together")
    else:
        advice = (f"Start `{top['type']}` collectives earlier (async_op=True, wait right before use) so "
                  "they run under independent compute, and batch small ones together")
    return Finding(
        id=EXPOSED_COMMUNICATION, analyzer="communication",
        severity="critical" if share >= EXPOSED_COMM_CRITICAL_SHARE else "warning",
        title=f"{100 * share:.0f}% of each step waits on communication not overlapped by compute",
        evidence={
            "median_step_ms": step_ns / 1e6, "median_exposed_comm_ms": exposed_ns / 1e6,
            "exposed_share_pct": 100 * share, "collectives_per_step": per_step_count,
            "top_type": str(top["type"]), "top_type_time_pct": float(top["time_pct"]),
            "top_type_median_bytes": float(top["median_bytes"]) if pd.notna(top["median_bytes"]) else None,
            "threshold_pct": 100 * min_share,
        },
        recommendation=advice + ".",
        estimated_gain=(f"up to {100 * gain:.0f}% of step time: the exposed communication per step "
                        f"({exposed_ns / 1e6:.2f} ms) capped by the compute time not yet overlapped with "
                        f"communication ({spare_compute_ns / 1e6:.2f} ms), over the median step "
                        f"({step_ns / 1e6:.2f} ms)") if spare_compute_ns > 0 else
                       ("unknown: the trace shows no compute in the step for the communication to hide "
                        "under, so overlap cannot be estimated from it (fewer, larger collectives may "
                        "still help)"),
        gain_fraction=gain, rank=trace.rank, page="communication",
    )


@register("communication", description="Collectives: sizes, bandwidths, overlap with compute, exposed time per step",
          scope="rank", page="communication", summary_keys=SUMMARY_KEYS)
def analyze(trace: Trace, *, exposed_min_share: float = EXPOSED_COMM_MIN_SHARE) -> Result:
    """Collective table, per-type totals, comm/compute overlap and exposed communication per step."""
    comm = collectives(trace)
    if comm.empty:
        ev = trace.events
        calls = int(_name_mask(ev, lambda n: _GPU_COLLECTIVE_ANNOTATION.match(n) is not None).sum())
        extra = f" ({calls} nccl:* calls without GPU kernels in the trace)" if calls else ""
        raise NotApplicable(f"no collectives: no NCCL/RCCL kernels and no gloo:* annotations{extra}")
    per_type = _per_type(comm)
    steps = exposed_per_step(trace, comm)
    cs, ce = merge_intervals(comm["ts_ns"].to_numpy(np.int64), comm["end_ns"].to_numpy(np.int64))
    ks, ke = _compute_union(trace, comm)
    comm_total = int((ce - cs).sum())
    overlapped_total = int(covered_ns(cs, ce, (ks, ke)).sum())
    summary = {
        "collectives": int(len(comm)), "timed_on": str(comm["timed_on"].iloc[0]),
        "comm_ns": comm_total, "overlapped_ns": overlapped_total, "exposed_ns": comm_total - overlapped_total,
        "overlap_pct": 100.0 * overlapped_total / comm_total if comm_total else 0.0,
        "total_bytes": float(comm["bytes"].sum(skipna=True)),
        "median_exposed_pct_per_step": float(steps["exposed_pct"].median()),
    }
    findings = []
    finding = _exposed_finding(trace, comm, per_type, steps, exposed_min_share)
    if finding is not None:
        findings.append(finding)
    return Result(analyzer="communication", tables={"collectives": comm, "per_type": per_type, "per_step": steps},
                  summary=summary, findings=tuple(findings), rank=trace.rank)


# --- stragglers across ranks ---------------------------------------------------------------------

#: Columns of a collective table that matching across ranks uses (``StragglerInputs.collectives``).
MATCH_COLUMNS = ["rank", "step", "type", "ts_ns", "dur_ns", "bytes"]


@dataclass(frozen=True)
class StragglerInputs:
    """What one rank contributes to the straggler analysis: its collectives' starts and its compute per step.

    ``collectives``: ``MATCH_COLUMNS`` of `collectives` (times ns, bytes); ``compute_per_step``: the
    columns of `compute_per_step` (``step``, ``step_ns``, ``compute_ns``). Small and picklable: a job's
    ranks are reduced to these one at a time and matched afterwards.
    """

    rank: int
    collectives: pd.DataFrame
    compute_per_step: pd.DataFrame


def straggler_inputs(trace: Trace, communication_result: Result | None = None) -> StragglerInputs:
    """One rank's part of the straggler analysis, from its communication result when there is one."""
    if communication_result is not None:
        comm = communication_result.table("collectives")
        steps = communication_result.table("per_step")[["step", "step_ns", "compute_ns"]]
    else:  # no collectives (or the analyzer failed): compute per step still compares the ranks
        comm = collectives(trace)
        steps = compute_per_step(trace, comm)
    return StragglerInputs(rank=trace.rank, collectives=comm[MATCH_COLUMNS].reset_index(drop=True),
                           compute_per_step=steps.reset_index(drop=True))


def match_collectives(comm_by_rank: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Collectives matched across ranks by (step, type, size, n-th such in the step); start lateness and skew, ns.

    The size is part of the key only for types whose message is the same on every rank (all but
    all-to-all and send/recv), so that a collective missing from one rank's (sampled) trace does
    not shift every later match. ``lateness_ns`` is the start after the earliest rank's start.
    """
    frames = []
    for rank in sorted(comm_by_rank):
        comm = comm_by_rank[rank]
        if comm.empty:
            continue
        comm = comm[MATCH_COLUMNS].copy()
        same_size = ~comm["type"].isin(_PER_RANK_SIZE_TYPES) & comm["bytes"].notna()
        comm["size_key"] = np.where(same_size, comm["bytes"].fillna(-1), -1.0)
        comm["occurrence"] = comm.groupby(["step", "type", "size_key"], sort=False).cumcount()
        frames.append(comm)
    if len(frames) < 2:
        return pd.DataFrame()
    allc = pd.concat(frames, ignore_index=True)
    key = _MATCH_KEY
    counts = allc.groupby(key, sort=False)["rank"].transform("nunique")
    allc = allc[counts == len(frames)].copy()
    allc["earliest_ns"] = allc.groupby(key, sort=False)["ts_ns"].transform("min")
    allc["lateness_ns"] = allc["ts_ns"] - allc["earliest_ns"]
    allc["skew_ns"] = allc.groupby(key, sort=False)["ts_ns"].transform("max") - allc["earliest_ns"]
    return allc.sort_values(["ts_ns", "rank"], kind="stable").reset_index(drop=True)


def matched_collectives(traces: TraceSet, comm_by_rank: Mapping[int, pd.DataFrame] | None = None) -> pd.DataFrame:
    """`match_collectives` over the ranks of a TraceSet (their `collectives` unless given)."""
    return match_collectives({trace.rank: comm_by_rank[trace.rank] if comm_by_rank is not None
                              else collectives(trace) for trace in traces})


def analyze_stragglers(traces: TraceSet) -> Result:
    """Start skew of matched collectives, per-rank lateness and compute per step, straggler findings."""
    return stragglers_from_inputs({trace.rank: straggler_inputs(trace) for trace in traces})


@register("stragglers", description="Ranks whose collectives start late or whose compute per step is slow",
          scope="set", page="communication", summary_keys=STRAGGLERS_SUMMARY_KEYS, needs=("communication",),
          reduce=straggler_inputs)
def stragglers_from_inputs(parts: Mapping[int, StragglerInputs]) -> Result:
    """The straggler analysis over every rank's `StragglerInputs` (never the ranks' full traces)."""
    if len(parts) < 2:
        raise NotApplicable("single rank")
    ranks = sorted(parts)
    matched = match_collectives({rank: parts[rank].collectives for rank in ranks})
    compute = []
    for rank in ranks:
        per_step = parts[rank].compute_per_step.copy()
        per_step["rank"] = rank
        compute.append(per_step)
    compute_df = pd.concat(compute, ignore_index=True)
    if matched.empty and compute_df["compute_ns"].sum() == 0:
        raise NotApplicable("no collectives matched across ranks and no compute to compare")
    per_rank = pd.DataFrame({"rank": ranks})
    if not matched.empty:
        lat = matched.groupby("rank").agg(matched_collectives=("lateness_ns", "size"),
                                          median_lateness_ns=("lateness_ns", "median"),
                                          max_lateness_ns=("lateness_ns", "max"))
        last = matched.groupby(_MATCH_KEY, sort=False)["ts_ns"].idxmax()
        last_counts = matched.loc[last, "rank"].value_counts()
        last_arrivals = last_counts.reindex(lat.index).fillna(0).to_numpy()
        lat["last_arrival_pct"] = 100.0 * last_arrivals / lat["matched_collectives"]
        late_per_step = matched[matched["step"] >= 0].groupby(["rank", "step"])["lateness_ns"].sum()
        lat["lateness_per_step_ns"] = late_per_step.groupby("rank").median().reindex(lat.index).fillna(
            matched.groupby("rank")["lateness_ns"].sum())
        per_rank = per_rank.merge(lat.reset_index(), on="rank", how="left")
    comp = compute_df.groupby("rank").agg(median_compute_ns=("compute_ns", "median"),
                                          median_step_ns=("step_ns", "median")).reset_index()
    per_rank = per_rank.merge(comp, on="rank", how="left")
    findings = _straggler_findings(per_rank)
    summary = {
        "ranks": len(ranks), "matched_collectives": int(matched[_MATCH_KEY].drop_duplicates().shape[0])
        if not matched.empty else 0,
        "median_skew_ns": float(matched["skew_ns"].median()) if not matched.empty else 0.0,
        "max_skew_ns": int(matched["skew_ns"].max()) if not matched.empty else 0,
        "straggler_ranks": sorted({f.rank for f in findings if f.id == STRAGGLER_RANK}),
        "slow_compute_ranks": sorted({f.rank for f in findings if f.id == SLOW_COMPUTE_RANK}),
    }
    tables = {"per_rank": per_rank, "matched": matched, "compute_per_step": compute_df}
    return Result(analyzer="stragglers", tables=tables, summary=summary, findings=tuple(findings))


def _straggler_findings(per_rank: pd.DataFrame) -> list[Finding]:
    """Late-arriving ranks and ranks with slow compute → investigate that rank's data/placement."""
    findings = []
    step_ns = float(per_rank["median_step_ns"].median()) if "median_step_ns" in per_rank else 0.0
    if "median_lateness_ns" in per_rank and step_ns > 0:
        for row in per_rank.itertuples(index=False):
            lateness = float(row.median_lateness_ns) if pd.notna(row.median_lateness_ns) else 0.0
            per_step = float(row.lateness_per_step_ns) if pd.notna(row.lateness_per_step_ns) else 0.0
            share = per_step / step_ns
            if lateness < STRAGGLER_MIN_LATENESS_NS or share < STRAGGLER_MIN_SHARE:
                continue
            gain = min(share, 1.0)
            findings.append(Finding(
                id=STRAGGLER_RANK, analyzer="stragglers",
                severity="critical" if share >= STRAGGLER_CRITICAL_SHARE else "warning",
                title=(f"Rank {row.rank} starts its collectives late "
                       f"(median {lateness / 1e6:.2f} ms after the first rank)"),
                evidence={"rank": int(row.rank), "median_lateness_ms": lateness / 1e6,
                          "lateness_per_step_ms": per_step / 1e6, "median_step_ms": step_ns / 1e6,
                          "last_to_arrive_pct": float(row.last_arrival_pct),
                          "matched_collectives": int(row.matched_collectives),
                          "threshold_ms": STRAGGLER_MIN_LATENESS_NS / 1e6,
                          "threshold_share_pct": 100 * STRAGGLER_MIN_SHARE},
                recommendation=(f"Every other rank waits for rank {row.rank} inside each collective. Investigate that "
                                "rank: its input pipeline (slower data loading, uneven batch/sequence lengths), its "
                                "host (CPU contention, NUMA/GPU affinity, thermal or power throttling) and its "
                                "placement (a slower link or a shared node); compare its compute per step below."),
                estimated_gain=(f"up to {100 * gain:.0f}% of step time on the other ranks: the lateness summed over "
                                f"a step ({per_step / 1e6:.2f} ms) over the median step ({step_ns / 1e6:.2f} ms)"),
                gain_fraction=gain, rank=int(row.rank), page="communication",
            ))
    if "median_compute_ns" in per_rank and len(per_rank) >= 2 and step_ns > 0:
        values = per_rank["median_compute_ns"].to_numpy(float)
        for i, row in enumerate(per_rank.itertuples(index=False)):
            others = np.delete(values, i)
            ref = float(np.median(others))
            own = float(values[i])
            if ref <= 0 or own < ref * (1 + SLOW_COMPUTE_MIN_EXCESS):
                continue
            extra = own - ref
            gain = min(extra / step_ns, 1.0)
            findings.append(Finding(
                id=SLOW_COMPUTE_RANK, analyzer="stragglers", severity="warning",
                title=f"Rank {row.rank} computes {100 * (own / ref - 1):.0f}% longer per step than the other ranks",
                evidence={"rank": int(row.rank), "median_compute_ms": own / 1e6,
                          "other_ranks_median_compute_ms": ref / 1e6, "median_step_ms": step_ns / 1e6,
                          "threshold_excess_pct": 100 * SLOW_COMPUTE_MIN_EXCESS},
                recommendation=(f"Rank {row.rank} does more (or slower) compute per step: check for uneven work "
                                "(sequence lengths, routing imbalance, uneven sharding), and for a slower or "
                                "throttled GPU on that node (clocks, power, temperature)."),
                estimated_gain=(f"up to {100 * gain:.0f}% of step time: the extra compute of this rank "
                                f"({extra / 1e6:.2f} ms per step) which the others wait for, over the median step"),
                gain_fraction=gain, rank=int(row.rank), page="communication",
            ))
    return findings
