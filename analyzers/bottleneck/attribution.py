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


def _innermost(s: np.ndarray, e: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Position (in ``s``/``e``, one thread's properly nested spans) of the innermost span covering each point, -1 if none."""
    out = np.full(points.size, -1, np.int64)
    keep = e > s
    if not keep.any() or points.size == 0:
        return out
    rows = np.flatnonzero(keep)
    s, e = s[rows], e[rows]
    length = e - s
    # Start order, the longer of two spans starting together first (the step model's ops already are).
    if not ((s[1:] > s[:-1]) | ((s[1:] == s[:-1]) & (length[1:] <= length[:-1]))).all():
        order = np.lexsort((-length, s))
        rows, s, e = rows[order], s[order], e[order]
    # Depth of a span: spans opened before it (in start order) minus those that closed by its start.
    by_end = np.argsort(e, kind="stable")
    depth = np.arange(s.size) - np.searchsorted(e[by_end], s, side="right")
    depth = np.maximum(depth, 0)
    parent = _depth_parents(depth)
    has = parent >= 0
    if (has == (depth > 0)).all() and (e[parent[has]] >= e[has]).all():
        # Every span lies inside the span one level up that opened last before it: the thread nests
        # properly, and the spans open at a time are a chain of parents. After the starts at a time the
        # innermost open span is the last of them (of several starting together the innermost); after only
        # ends it is the parent of the outermost one ending (the first in start order). At a point, the later
        # of the last start time and the last end time at or before it decides (a start, on a tie).
        starts_at = np.concatenate([s[1:] != s[:-1], [True]])  # the last span starting at each start time
        t_start, inner_start = s[starts_at], np.flatnonzero(starts_at)
        e_sorted = e[by_end]
        ends_at = np.concatenate([[True], e_sorted[1:] != e_sorted[:-1]])  # the first (stable) ending at each time
        t_end, inner_end = e_sorted[ends_at], parent[by_end[ends_at]]
        i = np.searchsorted(t_start, points, side="right") - 1
        j = np.searchsorted(t_end, points, side="right") - 1
        after_end = (j >= 0) & (t_end[np.maximum(j, 0)] > t_start[np.maximum(i, 0)])
        inner = np.where(i < 0, -1, np.where(after_end, inner_end[np.maximum(j, 0)], inner_start[np.maximum(i, 0)]))
        found = inner >= 0
        out[found] = rows[inner[found]]
        return out
    todo = np.arange(points.size)
    for d in range(int(depth.max()), -1, -1):
        at = depth == d
        # Spans of one depth are disjoint: the window lookup finds the one holding each point; a point
        # found at a deeper level is done.
        pos = step_index(points[todo], s[at], e[at])
        hit = pos >= 0
        out[todo[hit]] = rows[at][pos[hit]]
        todo = todo[~hit]
        if todo.size == 0:
            break
    return out


def _depth_parents(depth: np.ndarray) -> np.ndarray:
    """Per span in start order, the last earlier span one level up (-1 at depth 0): its parent when spans nest."""
    n = depth.size
    # Spans by depth, then start order (a stable sort; small ints sort by radix).
    by_depth = np.argsort(depth.astype(np.int16) if depth.max(initial=0) < 2 ** 15 else depth, kind="stable")
    keys = depth[by_depth] * n + by_depth
    want = (depth - 1) * n + np.arange(n)
    pos = np.searchsorted(keys, want, side="left") - 1
    hit = (depth > 0) & (pos >= 0)
    got = keys[np.maximum(pos, 0)]
    hit &= got // n == depth - 1
    return np.where(hit, got % n, -1)


def _first_cover(seg_s: np.ndarray, sets: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per segment (sorted starts ``seg_s`` of segments no interval edge falls inside): the first of the interval
    sets ([start, end) each) that covers it, -1 for none. Per set, a count of its intervals open at each segment,
    from where each starts and ends, all sets in one pass."""
    m, k = seg_s.size, len(sets)
    if m == 0 or k == 0:
        return np.full(m, -1, np.int64)
    width = m + 1
    opens, closes = [], []
    for j, (starts, ends) in enumerate(sets):
        starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
        ok = ends > starts  # an empty (or reversed) interval covers nothing
        opens.append(np.searchsorted(seg_s, starts[ok], side="left") + j * width)
        closes.append(np.searchsorted(seg_s, ends[ok], side="left") + j * width)
    count = (np.bincount(np.concatenate(opens), minlength=k * width)
             - np.bincount(np.concatenate(closes), minlength=k * width)).reshape(k, width)[:, :m]
    covered = np.cumsum(count, axis=1) > 0
    first = np.full(m, -1, np.int64)
    for j in range(k - 1, -1, -1):  # the earlier set overrides
        first[covered[j]] = j
    return first


def covered(intervals: tuple[np.ndarray, np.ndarray], t: np.ndarray) -> np.ndarray:
    """True for the times (ns) inside a sorted, disjoint interval set (``timeline.steps.step_index``)."""
    return step_index(t, *intervals) >= 0


def _merged(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return merge_intervals(frame["ts_ns"].to_numpy(np.int64), frame["end_ns"].to_numpy(np.int64))


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    v = np.sort(values)
    return v[np.concatenate(([True], v[1:] != v[:-1]))] if v.size else v


def attribute(model: StepModel) -> Attribution:
    """Give every ns of every window one cause (see the module docstring)."""
    win = model.windows
    ops, gpu = model.ops, model.gpu
    w_start, w_end = win["start_ns"].to_numpy(np.int64), win["end_ns"].to_numpy(np.int64)
    o_ts, o_end = ops["ts_ns"].to_numpy(np.int64), ops["end_ns"].to_numpy(np.int64)
    edges = [w_start, w_end, o_ts, o_end]
    if not gpu.empty:
        g_ts, g_end = gpu["ts_ns"].to_numpy(np.int64), gpu["end_ns"].to_numpy(np.int64)
        edges += [g_ts, g_end]
    points = _sorted_unique(np.concatenate(edges))
    lo, hi = int(w_start.min()), int(w_end.max())
    points = points[(points >= lo) & (points <= hi)]
    seg_s, seg_e = points[:-1], points[1:]
    mid = seg_s + (seg_e - seg_s) // 2
    window = step_index(mid, w_start, w_end)
    keep = (window >= 0) & (seg_e > seg_s)
    seg_s, seg_e, mid, window = seg_s[keep], seg_e[keep], mid[keep], window[keep]

    # Causes as codes into ``names`` (0: not decided yet).
    names = [""]

    def code(cause: str) -> int:
        if cause not in names:
            names.append(cause)
        return names.index(cause)

    cause = np.zeros(mid.size, dtype=np.int32)
    if not gpu.empty:
        category = gpu["category"].to_numpy(object)
        comm = category == COMMUNICATION
        # Compute by category in order, then communication alone: the first set covering a segment decides.
        sets = [((category == cat) & ~comm) for cat in GPU_COMPUTE_ORDER] + [comm]
        first = _first_cover(seg_s, [(g_ts[pick], g_end[pick]) for pick in sets])
        given = np.array([code(f"gpu_compute:{cat}") for cat in GPU_COMPUTE_ORDER] + [code("exposed_communication")],
                         dtype=np.int32)
        hit = first >= 0
        cause[hit] = given[first[hit]]

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
        got = _innermost(o_ts[rows], o_end[rows], mid[fill])
        row = np.where(got >= 0, rows[np.maximum(got, 0)], -1)
        work = (row >= 0) & issues_work[np.maximum(row, 0)]
        take = work | ((inner_row[fill] < 0) & (row >= 0))
        inner_row[fill[take]] = row[take]
        inner_work[fill[take]] = work[take]
    has_op = inner_row >= 0

    syncs = model.syncs
    host_comm = name_mask(ops["name"], lambda n: n.str.match(_HOST_COMM_RE))
    s_kind = syncs["kind"].to_numpy(object)
    s_ts, s_end = syncs["ts_ns"].to_numpy(np.int64), syncs["end_ns"].to_numpy(np.int64)
    rules = (
        ("data_loading", lambda: model.regions["data_loading"]),
        ("device_sync", lambda: (s_ts[s_kind == "device_sync"], s_end[s_kind == "device_sync"])),
        ("blocking_copy", lambda: (s_ts[s_kind == "blocking_copy"], s_end[s_kind == "blocking_copy"])),
        ("exposed_communication", lambda: (o_ts[host_comm], o_end[host_comm])),
        ("optimizer_dispatch", lambda: model.regions["optimizer"]),
    )
    # Host ops (and so syncs and regions) start and end on segment edges; the first rule covering a segment decides.
    first = _first_cover(seg_s, [intervals() for _, intervals in rules])
    for k, (name, _) in enumerate(rules):
        hit = (cause == 0) & (first == k)
        if hit.any():
            cause[hit] = code(name)
    # The host inside no op while a collective it started runs on the backend's thread (gloo's
    # work.wait() records nothing): it waits for that collective.
    coll = model.collectives
    if not coll.empty and "end_ns" in coll.columns:
        waiting = (cause == 0) & ~has_op & covered(
            merge_intervals(coll["ts_ns"].to_numpy(np.int64), coll["end_ns"].to_numpy(np.int64)), mid)
        if waiting.any():
            cause[waiting] = code("exposed_communication")
    in_op = (cause == 0) & has_op
    if model.has_gpu:
        # Only operators and launch calls issue GPU work; an annotation with nothing inside is Python.
        launch = in_op & inner_work
        if launch.any():
            cause[launch] = code("launch_bound")
    elif in_op.any():
        op_cause = np.array([code(f"cpu_compute:{c}") for c in cpu_category(ops["name"])], dtype=np.int32)
        cause[in_op] = op_cause[inner_row[in_op]]
    rest = cause == 0
    if rest.any():
        cause[rest] = code("other_host")

    # As a categorical of the causes present, categories sorted (as pd.Categorical(strings) would be).
    used = np.flatnonzero(np.bincount(cause, minlength=len(names)))
    labels = sorted(names[i] for i in used)
    remap = np.full(len(names), -1, np.int32)
    remap[[names.index(n) for n in labels]] = np.arange(len(labels), dtype=np.int32)
    codes = remap[cause]
    time_ns = seg_e - seg_s
    seg = pd.DataFrame({"window": window, "cause": pd.Categorical.from_codes(codes, categories=labels),
                        "time_ns": time_ns, "op": inner_row, "start_ns": seg_s, "end_ns": seg_e})
    table = _step_table(model, window, codes, time_ns, labels)
    return Attribution(table, _evidence(model, seg, codes, labels), seg)


def _step_table(model: StepModel, window: np.ndarray, codes: np.ndarray, time_ns: np.ndarray,
                labels: list[str]) -> pd.DataFrame:
    """Per window and cause the time: windows in order, causes by time (first seen first on a tie)."""
    k = len(labels)
    key = window * k + codes
    total = np.bincount(key, weights=time_ns, minlength=len(model.windows) * k)
    present = np.flatnonzero(np.bincount(key, minlength=len(model.windows) * k))
    # First segment of each (window, cause): segments run in time order, so within a window this is
    # the order pandas' groupby(sort=False) met them in.
    first = np.full(total.size, np.iinfo(np.int64).max, np.int64)
    order = np.argsort(key, kind="stable")
    starts = np.concatenate(([True], key[order][1:] != key[order][:-1]))
    first[key[order][starts]] = order[starts]
    w, c = present // k, present % k
    t = total[present].astype(np.int64)
    pick = np.lexsort((first[present], -t, w))
    w, c, t = w[pick], c[pick], t[pick]
    step_len = model.step_ns[w]
    return pd.DataFrame({"step": model.windows["step"].to_numpy(np.int64)[w],
                         "cause": np.asarray(labels, dtype=object)[c], "time_ns": t,
                         "share": t / np.maximum(step_len, 1), "window": w})


def _top(codes: np.ndarray, weights: np.ndarray, n: int = 3) -> list[tuple[int, int, int]]:
    """The ``n`` codes of largest summed weight (first seen first on a tie): (code, sum, count)."""
    if codes.size == 0:
        return []
    size = int(codes.max()) + 1
    sums = np.bincount(codes, weights=weights, minlength=size)
    counts = np.bincount(codes, minlength=size)
    seen = np.flatnonzero(counts)
    if seen.size > n:
        cut = np.partition(sums[seen], seen.size - n)[seen.size - n]
        seen = seen[sums[seen] >= cut]
    first = np.array([int(np.argmax(codes == c)) for c in seen], dtype=np.int64)
    pick = np.lexsort((first, -sums[seen]))[:n]
    return [(int(seen[i]), int(sums[seen[i]]), int(counts[seen[i]])) for i in pick]


def _evidence(model: StepModel, seg: pd.DataFrame, codes: np.ndarray, labels: list[str]) -> dict[str, str]:
    """Per cause, the ops (or kernels, or call sites) that took its time, largest first."""
    out: dict[str, str] = {}
    gpu = model.gpu
    names = model.ops["name"]
    name_codes = names.cat.codes.to_numpy(np.int64)
    name_labels = names.cat.categories.to_numpy(object)
    op = seg["op"].to_numpy(np.int64)
    time_ns = seg["time_ns"].to_numpy(np.int64)
    if not gpu.empty:
        g_cat_codes, g_cats = pd.factorize(gpu["category"].to_numpy(object))
        g_cat_of = {str(c): i for i, c in enumerate(g_cats)}
        g_codes = gpu["name"].cat.codes.to_numpy(np.int64)
        g_labels = gpu["name"].cat.categories.to_numpy(object)
        g_dur = gpu["dur_ns"].to_numpy(np.int64)
    # Causes in the order the segments first meet them (as a groupby over them would).
    present = np.flatnonzero(np.bincount(codes, minlength=len(labels)))
    first = {int(c): int(np.argmax(codes == c)) for c in present}
    for c in sorted(first, key=first.get):
        cause = labels[c]
        if cause.startswith("gpu_compute:") and not gpu.empty:
            cat = cause.split(":", 1)[1]
            at = g_cat_codes == g_cat_of.get(cat, -2)
            out[cause] = "; ".join(f"{short_name(str(g_labels[n]), 60)} x{count}"
                                   for n, _, count in _top(g_codes[at], g_dur[at]))
            continue
        if cause == "exposed_communication" and not model.collectives.empty:
            coll = model.collectives
            kinds, kind_of = pd.factorize(coll["type"].to_numpy(object))  # a missing type is in no group
            typed = kinds >= 0
            out[cause] = "; ".join(f"{kind_of[k]} x{n}" for k, _, n in
                                   _top(kinds[typed], coll["dur_ns"].to_numpy(np.int64)[typed]))
            continue
        if cause in ("device_sync", "blocking_copy"):
            syncs = model.syncs
            at = np.flatnonzero((syncs["kind"].to_numpy(object) == cause) & syncs["name"].notna().to_numpy()
                                & syncs["site"].notna().to_numpy())
            # (call site, call) pairs in the order first seen, as a groupby over them would list them.
            pairs = list(zip(syncs["site"].to_numpy(object)[at].tolist(), syncs["name"].to_numpy(object)[at].tolist()))
            seen = dict.fromkeys(pairs)
            key = {p: i for i, p in enumerate(seen)}
            pair_of = list(seen)
            codes_at = np.array([key[p] for p in pairs], np.int64)
            out[cause] = "; ".join(f"{pair_of[k][1]} in {pair_of[k][0] or 'Python'} x{n}"
                                   for k, _, n in _top(codes_at, syncs["dur_ns"].to_numpy(np.int64)[at]))
            continue
        at = (codes == c) & (op >= 0)
        if not at.any():
            out[cause] = "no op recorded (Python or untraced host work)"
            continue
        out[cause] = "; ".join(short_name(str(name_labels[n]), 60)
                               for n, _, _ in _top(name_codes[op[at]], time_ns[at]))
    return out
