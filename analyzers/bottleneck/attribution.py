"""Attribution: every ns of every step goes to exactly one cause.

The causes (``CAUSES``), and how a ns is given one
--------------------------------------------------
The windows are cut at every start and end of host ops, GPU work and regions into elementary
segments; each segment gets one cause, so the causes of a step sum exactly to its length.

1. **The GPU is busy** (any kernel, copy or set on any stream): the work that runs decides, in this
   order: compute kernels by category (``gpu_compute:gemm/conv``, ``:attention``, ``:elementwise``,
   ``:reduction/norm``, ``:other``), then copies and sets (``gpu_compute:memcpy/memset``), then
   collectives alone (``exposed_communication``: communication no compute hides).
2. **The GPU is idle, or the run has no GPU**: what the host was doing meanwhile, in this order:
   ``data_loading`` (inside ``enumerate(DataLoader)#...``: the step waits for its batch),
   ``device_sync`` (inside a device/stream/event synchronize), ``blocking_copy`` (inside a runtime
   memcpy that waits: pageable or synchronous copies), ``exposed_communication`` (inside a host
   collective: gloo ops, ``c10d::`` calls; or inside no op while a collective runs on the backend's
   thread, as gloo's ``work.wait()`` records nothing), ``optimizer_dispatch`` (inside
   ``Optimizer.step``/``zero_grad``), then the innermost host op: on a GPU run ``launch_bound`` (the
   host is busy issuing work while the GPU waits for it), on a CPU run ``cpu_compute:<category>``
   (``categories.cpu_category``). Host time inside no op is ``other_host`` (Python, untraced work).

The host is the main thread and the autograd engine's threads (``model.StepModel``): when the main
thread is inside no op, the innermost op of an autograd thread counts.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from torchscope.analyzers.bottleneck.categories import cpu_category
from torchscope.analyzers.bottleneck.model import StepModel
from torchscope.analyzers.core.trace import name_mask
from torchscope.analyzers.kernels import (
    ATTENTION,
    COMMUNICATION,
    ELEMENTWISE,
    GEMM,
    MEMORY,
    OTHER,
    REDUCTION,
)
from torchscope.analyzers.report.names import short_name
from torchscope.analyzers.timeline.intervals import merge_intervals
from torchscope.analyzers.timeline.steps import step_index

__all__ = ["CAUSES", "CAUSE_LABELS", "GPU_COMPUTE_ORDER", "Attribution", "attribute", "cause_label"]

#: GPU categories in the order a busy ns is given to them.
GPU_COMPUTE_ORDER = (GEMM, ATTENTION, ELEMENTWISE, REDUCTION, OTHER, MEMORY)
#: Fixed causes and what each means (``gpu_compute:<category>`` and ``cpu_compute:<category>`` add to these).
CAUSE_LABELS: dict[str, str] = {
    "data_loading": "waiting for data",
    "blocking_copy": "blocking host<->device copy",
    "device_sync": "device synchronization",
    "launch_bound": "launch-bound host (GPU waits for the host to issue work)",
    "exposed_communication": "exposed communication",
    "optimizer_dispatch": "optimizer dispatch",
    "other_host": "other host work (Python, untraced)",
}
CAUSES = tuple(CAUSE_LABELS)
_HOST_COMM_RE = re.compile(r"^(?:c10d::|gloo:|mpi:|ucc:|record_param_comms$|ProcessGroup|nccl:)", re.IGNORECASE)


def cause_label(cause: str) -> str:
    """Words for a cause id."""
    if cause.startswith("gpu_compute:"):
        return f"GPU compute: {cause.split(':', 1)[1]}"
    if cause.startswith("cpu_compute:"):
        return f"CPU compute: {cause.split(':', 1)[1]}"
    return CAUSE_LABELS.get(cause, cause)


class Attribution:
    """Per step and cause the time (ns); per cause the evidence."""

    def __init__(self, table: pd.DataFrame, evidence: dict[str, str], segments: pd.DataFrame) -> None:
        self.table = table
        self.evidence = evidence
        self.segments = segments

    def per_cause(self) -> pd.DataFrame:
        """One row per cause over all steps: cause, label, time_ns, share, evidence (largest first)."""
        if getattr(self, "_per_cause", None) is None:
            self._per_cause = self._causes()
        return self._per_cause

    def _causes(self) -> pd.DataFrame:
        if self.table.empty:
            return pd.DataFrame(columns=["cause", "label", "time_ns", "share", "evidence"])
        by = self.table.groupby("cause", sort=False)["time_ns"].sum()
        total = max(int(by.sum()), 1)
        out = pd.DataFrame({"cause": by.index.astype(str), "time_ns": by.to_numpy(np.int64)})
        out["label"] = [cause_label(c) for c in out["cause"]]
        out["share"] = out["time_ns"] / total
        out["evidence"] = [self.evidence.get(c, "") for c in out["cause"]]
        return out.sort_values("time_ns", ascending=False, kind="stable").reset_index(drop=True)[
            ["cause", "label", "time_ns", "share", "evidence"]]


def _innermost(ops: pd.DataFrame, points: np.ndarray) -> np.ndarray:
    """Row (in ``ops``, one thread's properly nested spans) of the innermost op covering each point, -1 if none."""
    out = np.full(points.size, -1, np.int64)
    keep = ops["dur_ns"].to_numpy(np.int64) > 0
    if not keep.any() or points.size == 0:
        return out
    rows = np.flatnonzero(keep)
    s = ops["ts_ns"].to_numpy(np.int64)[rows]
    e = ops["end_ns"].to_numpy(np.int64)[rows]
    order = np.lexsort((-(e - s), s))
    rows, s, e = rows[order], s[order], e[order]
    # Depth of a span: spans opened before it (in start order) minus those that closed by its start.
    depth = np.arange(s.size) - np.searchsorted(np.sort(e), s, side="right")
    depth = np.maximum(depth, 0)
    for d in range(int(depth.max()), -1, -1):
        at = depth == d
        # Spans of one depth are disjoint: the window lookup finds the one holding each point.
        pos = step_index(points, s[at], e[at])
        hit = (out < 0) & (pos >= 0)
        out[hit] = rows[at][pos[hit]]
    return out


def covered(intervals: tuple[np.ndarray, np.ndarray], t: np.ndarray) -> np.ndarray:
    """True for the times (ns) inside a sorted, disjoint interval set (``timeline.steps.step_index``)."""
    return step_index(t, *intervals) >= 0


def _merged(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return merge_intervals(frame["ts_ns"].to_numpy(np.int64), frame["end_ns"].to_numpy(np.int64))


def attribute(model: StepModel) -> Attribution:
    """Give every ns of every window one cause (see the module docstring)."""
    win = model.windows
    ops, gpu = model.ops, model.gpu
    edges = [win["start_ns"].to_numpy(np.int64), win["end_ns"].to_numpy(np.int64),
             ops["ts_ns"].to_numpy(np.int64), ops["end_ns"].to_numpy(np.int64)]
    if not gpu.empty:
        edges += [gpu["ts_ns"].to_numpy(np.int64), gpu["end_ns"].to_numpy(np.int64)]
    points = np.unique(np.concatenate(edges))
    lo, hi = int(win["start_ns"].min()), int(win["end_ns"].max())
    points = points[(points >= lo) & (points <= hi)]
    seg_s, seg_e = points[:-1], points[1:]
    mid = seg_s + (seg_e - seg_s) // 2
    window = step_index(mid, win["start_ns"].to_numpy(np.int64), win["end_ns"].to_numpy(np.int64))
    keep = (window >= 0) & (seg_e > seg_s)
    seg_s, seg_e, mid, window = seg_s[keep], seg_e[keep], mid[keep], window[keep]

    cause = np.full(mid.size, "", dtype=object)
    if not gpu.empty:
        comm = gpu["category"].to_numpy(object) == COMMUNICATION
        for category in GPU_COMPUTE_ORDER:
            pick = gpu[(gpu["category"].to_numpy(object) == category) & ~comm]
            hit = (cause == "") & covered(_merged(pick), mid)
            cause[hit] = f"gpu_compute:{category}"
        hit = (cause == "") & covered(_merged(gpu[comm]), mid)
        cause[hit] = "exposed_communication"

    # The innermost op on the host at each segment, as a row of ``ops`` (-1: none).
    inner_row = np.full(mid.size, -1, dtype=np.int64)
    inner_work = np.zeros(mid.size, dtype=bool)
    issues_work = ops["issues_work"].to_numpy(bool)
    pid_all, tid_all = ops["pid"].to_numpy(np.int64), ops["tid"].to_numpy(np.int64)
    for pid, tid in model.host_threads:
        rows = np.flatnonzero((pid_all == pid) & (tid_all == tid))
        # A thread inside only an annotation (main waiting in "## backward ##") yields to one doing work.
        fill = np.flatnonzero(~inner_work)
        if fill.size == 0 or rows.size == 0:
            continue
        got = _innermost(ops.iloc[rows].reset_index(drop=True), mid[fill])
        row = np.where(got >= 0, rows[np.maximum(got, 0)], -1)
        work = (row >= 0) & issues_work[np.maximum(row, 0)]
        take = work | ((inner_row[fill] < 0) & (row >= 0))
        inner_row[fill[take]] = row[take]
        inner_work[fill[take]] = work[take]
    has_op = inner_row >= 0

    syncs = model.syncs
    host_comm = ops[name_mask(ops["name"], lambda n: n.str.match(_HOST_COMM_RE))]
    idle = cause == ""
    rules = (
        ("data_loading", covered(model.regions["data_loading"], mid)),
        ("device_sync", covered(_merged(syncs[syncs["kind"] == "device_sync"]), mid)),
        ("blocking_copy", covered(_merged(syncs[syncs["kind"] == "blocking_copy"]), mid)),
        ("exposed_communication", covered(_merged(host_comm), mid)),
        ("optimizer_dispatch", covered(model.regions["optimizer"], mid)),
    )
    for name, hit in rules:
        hit = idle & (cause == "") & hit
        cause[hit] = name
    # The host inside no op while a collective it started runs on the backend's thread (gloo's
    # work.wait() records nothing): it waits for that collective.
    coll = model.collectives
    if not coll.empty and "end_ns" in coll.columns:
        waiting = (cause == "") & ~has_op & covered(
            merge_intervals(coll["ts_ns"].to_numpy(np.int64), coll["end_ns"].to_numpy(np.int64)), mid)
        cause[waiting] = "exposed_communication"
    in_op = (cause == "") & has_op
    if model.has_gpu:
        # Only operators and launch calls issue GPU work; an annotation with nothing inside is Python.
        cause[in_op & inner_work] = "launch_bound"
    else:
        op_cause = np.array([f"cpu_compute:{c}" for c in cpu_category(ops["name"])], dtype=object) \
            if len(ops) else np.zeros(0, object)
        cause[in_op] = op_cause[inner_row[in_op]]
    cause[cause == ""] = "other_host"

    seg = pd.DataFrame({"window": window, "cause": pd.Categorical(cause), "time_ns": seg_e - seg_s,
                        "op": inner_row, "start_ns": seg_s, "end_ns": seg_e})
    table = seg.groupby(["window", "cause"], sort=False, observed=True)["time_ns"].sum().reset_index()
    table["cause"] = table["cause"].astype(str)
    table["step"] = win["step"].to_numpy(np.int64)[table["window"].to_numpy(np.int64)]
    step_len = model.step_ns[table["window"].to_numpy(np.int64)]
    table["share"] = table["time_ns"] / np.maximum(step_len, 1)
    table = table.sort_values(["window", "time_ns"], ascending=[True, False], kind="stable")
    table = table[["step", "cause", "time_ns", "share", "window"]].reset_index(drop=True)
    return Attribution(table, _evidence(model, seg), seg)


def _evidence(model: StepModel, seg: pd.DataFrame) -> dict[str, str]:
    """Per cause, the ops (or kernels, or call sites) that took its time, largest first."""
    out: dict[str, str] = {}
    gpu = model.gpu
    names = model.ops["name"].to_numpy(object)
    for cause, group in seg.groupby("cause", sort=False, observed=True):
        cause = str(cause)
        if cause.startswith("gpu_compute:") and not gpu.empty:
            cat = cause.split(":", 1)[1]
            k = gpu[gpu["category"].to_numpy(object) == cat]
            top = k.groupby("name", sort=False, observed=True)["dur_ns"].agg(["sum", "size"]).nlargest(3, "sum")
            out[cause] = "; ".join(f"{short_name(str(n), 60)} x{int(c)}" for n, (_, c) in zip(top.index, top.to_numpy()))
            continue
        if cause == "exposed_communication" and not model.collectives.empty:
            c = model.collectives
            top = c.groupby("type", sort=False)["dur_ns"].agg(["sum", "size"]).nlargest(3, "sum")
            out[cause] = "; ".join(f"{kind} x{int(n)}" for kind, (_, n) in zip(top.index, top.to_numpy()))
            continue
        if cause in ("device_sync", "blocking_copy"):
            s = model.syncs[model.syncs["kind"] == cause]
            top = s.groupby(["site", "name"], sort=False, observed=True)["dur_ns"].agg(["sum", "size"]).nlargest(3, "sum")
            out[cause] = "; ".join(f"{name} in {site or 'Python'} x{int(c)}"
                                   for (site, name), (_, c) in zip(top.index, top.to_numpy()))
            continue
        named = group[group["op"].to_numpy() >= 0]
        if named.empty:
            out[cause] = "no op recorded (Python or untraced host work)"
            continue
        by_name = pd.Series(named["time_ns"].to_numpy(), index=names[named["op"].to_numpy()])
        top = by_name.groupby(level=0, sort=False).sum().nlargest(3)
        out[cause] = "; ".join(short_name(str(n), 60) for n in top.index)
    return out
