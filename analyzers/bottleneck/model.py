"""The step model: what ran where during each step, and what waited on what.

One `StepModel` per trace holds, for every step window of ``timeline.steps.windows_or_span``:

* **host work**: the ops (``cpu_op``, user annotations, runtime and driver calls) of the *host
  threads*: the step's main thread (the one that holds ``ProfilerStep``; without steps, the
  thread with the most op time) and the threads of its process that ran the autograd engine
  (``autograd::engine::evaluate_function: ...``; on GPU jobs backward runs there, in the old schema
  and the new). Time on a host thread covered by no op is Python (or other untraced) work.
* **regions**: the host intervals that belong to one part of a training loop: waiting for the
  next batch (``enumerate(DataLoader)#...``), the optimizer (``Optimizer.step#``/``zero_grad#``).
* **GPU work**: every kernel, memcpy and memset with its stream, category (``kernels.category_of``)
  and the runtime call that launched it (correlation ids, ``timeline.launches``). Each stream runs
  its work in order.
* **synchronizations**: host calls that wait for the device: ``cuda/hipDeviceSynchronize``,
  ``StreamSynchronize``, ``EventSynchronize``, and *blocking copies*: a runtime memcpy whose host
  call returns only after its own GPU copy has finished and lasts longer than that copy by
  ``BLOCKING_COPY_MIN_WAIT_NS`` (a pageable copy, or a ``cudaMemcpy`` that waits for the stream).
* **collectives**: the job's collectives (``communication.collectives``: NCCL kernels, gloo ops).

Everything is held as flat numpy/pandas columns over all steps at once, so attribution and replay
are vectorised over events; loops run over streams and synchronizations only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torchscope.analyzers.core.trace import Trace, name_mask
from torchscope.analyzers.kernels import fp32_gemm_kernels, kernel_categories
from torchscope.analyzers.timeline.intervals import merge_intervals
from torchscope.analyzers.timeline.launches import gpu_work, launch_columns
from torchscope.analyzers.timeline.nesting import parents, time_order
from torchscope.analyzers.timeline.steps import step_index, windows_or_span

__all__ = ["BLOCKING_COPY_MIN_WAIT_NS", "HOST_KINDS", "REGION_PATTERNS", "StepModel", "build", "op_parents"]

#: A runtime memcpy is a blocking copy when its host call returns after its GPU copy ends and outlasts it by this much.
BLOCKING_COPY_MIN_WAIT_NS = 20_000
#: Event kinds that are host work.
HOST_KINDS = ("cpu_op", "annotation", "runtime", "driver")
#: Host regions recognised by name (the names torch itself records).
REGION_PATTERNS: dict[str, re.Pattern] = {
    "data_loading": re.compile(r"^enumerate\(DataLoader\)#"),
    "optimizer": re.compile(r"^Optimizer\.(?:step|zero_grad)#"),
}
_STEP_RE = re.compile(r"^ProfilerStep#")
_AUTOGRAD_RE = re.compile(r"^autograd::engine::evaluate_function: ")
_SYNC_RE = re.compile(r"^(?:cuda|hip)(?:Device|Stream|Event)Synchronize$")
_MEMCPY_CALL_RE = re.compile(r"^(?:cuda|hip)Memcpy", re.IGNORECASE)
_LAUNCH_RE = re.compile(r"^(?:cuda|hip)(?:LaunchKernel|LaunchCooperativeKernel|ExtModuleLaunchKernel|"
                        r"ModuleLaunchKernel|GraphLaunch|MemsetAsync|Memset)|^cuLaunchKernel", re.IGNORECASE)


@dataclass(frozen=True)
class StepModel:
    """Host work, regions, GPU work and synchronizations of each step window (all times int ns)."""

    trace: Trace
    #: step, start_ns, end_ns (half-open windows, sorted, disjoint).
    windows: pd.DataFrame
    #: (pid, tid) of the main thread, and of every host thread considered (main first).
    main: tuple[int, int]
    host_threads: tuple[tuple[int, int], ...]
    #: Host ops on the host threads inside the windows: ts_ns, end_ns, dur_ns, name (str), kind, pid, tid,
    #: window (index into windows), main (bool), launches (bool: a runtime call that issued GPU work),
    #: issues_work (bool: an operator or a launch call, the host work that feeds the device), row (position in
    #: ``trace.events``, where its args are).
    ops: pd.DataFrame
    #: region name -> merged (starts, ends) on the main thread.
    regions: dict[str, tuple[np.ndarray, np.ndarray]]
    #: GPU work inside or launched inside the windows: ts_ns, end_ns, dur_ns, stream, category, name,
    #: launch_ts_ns (-1 unknown), launch_tid, window, correlation, fp32_gemm (``kernels.is_fp32_gemm`` of the name).
    #: Sorted by stream, then start.
    gpu: pd.DataFrame
    #: Host calls that wait for the device: ts_ns, end_ns, name, kind ("device_sync" | "blocking_copy"),
    #: window, and site (outermost op on the thread around the call).
    syncs: pd.DataFrame
    #: Collectives of the trace (``communication.collectives`` columns) inside the windows, with ``window``.
    collectives: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: What the what-ifs derive from the model and share (leaf ops, loops), computed once.
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def has_gpu(self) -> bool:
        """True when the trace holds GPU work inside its windows."""
        return not self.gpu.empty

    @property
    def step_ns(self) -> np.ndarray:
        """Measured length of each window, ns."""
        return (self.windows["end_ns"] - self.windows["start_ns"]).to_numpy(np.int64)


def op_parents(model: StepModel) -> np.ndarray:
    """``timeline.nesting.parents`` of ``model.ops``: each op's enclosing op on its thread (-1: none); cached."""
    cached = model.cache.get("parents")
    if cached is None:
        cached = model.cache["parents"] = parents(model.ops)
    return cached


def _categorical(names: pd.Series) -> pd.Categorical:
    """A name column as a categorical of plain str categories (rules then run once per distinct name)."""
    if isinstance(names.dtype, pd.CategoricalDtype):
        codes = names.cat.codes.to_numpy()
        cats = names.cat.categories
        # The categories in use, in their order (what remove_unused_categories keeps), by a count, not a sort.
        used = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(cats))) if len(cats) else np.zeros(0, np.int64)
        remap = np.full(len(cats) + 1, -1, np.int64)
        remap[used] = np.arange(used.size)
        return pd.Categorical.from_codes(remap[codes], categories=pd.Index(
            cats.to_numpy(object)[used].astype(str), dtype=object))
    return pd.Categorical(names.to_numpy(object).astype(str))


def _main_thread(pid: np.ndarray, tid: np.ndarray, dur: np.ndarray, is_step: np.ndarray) -> tuple[int, int]:
    """The thread that holds ProfilerStep, else the one with the most op time (ties: the lowest pid, tid)."""
    pick = is_step if is_step.any() else np.ones(pid.size, dtype=bool)
    if not pick.any():
        return (-1, -1)
    pairs = pd.DataFrame({"pid": pid[pick], "tid": tid[pick], "dur": dur[pick]})
    time = pairs.groupby(["pid", "tid"])["dur"].sum()
    p, t = time.idxmax()
    return int(p), int(t)


def _window_of(ts: np.ndarray, windows: pd.DataFrame) -> np.ndarray:
    return step_index(np.asarray(ts, np.int64), windows["start_ns"].to_numpy(np.int64),
                      windows["end_ns"].to_numpy(np.int64))


def build(trace: Trace, collectives: pd.DataFrame | None = None) -> StepModel:
    """The step model of a trace (see the module docstring)."""
    windows = windows_or_span(trace).reset_index(drop=True)
    ev = trace.events
    w0, w1 = int(windows["start_ns"].min()), int(windows["end_ns"].max())
    ts_all, dur_all = ev["ts_ns"].to_numpy(np.int64), ev["dur_ns"].to_numpy(np.int64)
    pick = (ev["kind"].isin(HOST_KINDS).to_numpy() & (ev["ph"] == "X").to_numpy()
            & (ts_all < w1) & (ts_all + dur_all > w0))
    # The columns the model reads, as arrays over the host rows (the events frame is wide).
    idx = np.flatnonzero(pick)
    names = pd.Series(_categorical(ev["name"].iloc[idx]))
    pid, tid = ev["pid"].to_numpy(np.int64)[idx], ev["tid"].to_numpy(np.int64)[idx]
    dur = dur_all[idx]
    is_step = name_mask(names, lambda n: n.str.match(_STEP_RE))
    main = _main_thread(pid, tid, dur, is_step)
    auto = name_mask(names, lambda n: n.str.match(_AUTOGRAD_RE)) & (pid == main[0])
    pairs = pd.DataFrame({"pid": pid[auto], "tid": tid[auto]}).drop_duplicates()
    others = sorted({(int(p), int(t)) for p, t in zip(pairs["pid"], pairs["tid"])} - {main})
    threads = (main, *others)
    on = np.zeros(idx.size, dtype=bool)
    for p, t in threads:
        on |= (pid == p) & (tid == t)
    keep = np.flatnonzero(on & ~is_step)
    ts = ts_all[idx[keep]]
    # Time order, the longer of two ops starting together first (a stable sort).
    order = keep[time_order(ts, dur[keep])]
    rows = idx[order]
    ops = pd.DataFrame({
        "ts_ns": ts_all[rows],
        "dur_ns": dur[order],
        "name": _categorical(names.iloc[order]),
        "kind": _categorical(ev["kind"].iloc[rows]),
        "pid": pid[order], "tid": tid[order],
        "correlation": ev["correlation"].to_numpy(np.int64)[rows],
        "row": rows,
    })
    ops["end_ns"] = ops["ts_ns"] + ops["dur_ns"]
    ops["main"] = (ops["pid"] == main[0]) & (ops["tid"] == main[1])
    ops["window"] = _window_of(ops["ts_ns"].to_numpy(), windows)

    regions = {}
    o_main, o_ts, o_end = ops["main"].to_numpy(), ops["ts_ns"].to_numpy(np.int64), ops["end_ns"].to_numpy(np.int64)
    for region, pattern in REGION_PATTERNS.items():
        hit = o_main & name_mask(ops["name"], lambda n, p=pattern: n.str.match(p))
        regions[region] = merge_intervals(o_ts[hit], o_end[hit])

    gpu = _gpu_work(trace, windows)
    g_corr = gpu["correlation"].to_numpy(np.int64)
    runtime = ops["kind"].isin(("runtime", "driver")).to_numpy()
    ops["launches"] = runtime & np.isin(ops["correlation"].to_numpy(np.int64), g_corr[g_corr >= 0])
    # Operators and launch calls issue device work; annotations and other runtime calls (cudaFree,
    # cudaGetDevice, context creation) do not.
    ops["issues_work"] = ((ops["kind"] == "cpu_op").to_numpy()
                          | (runtime & name_mask(ops["name"], lambda n: n.str.match(_LAUNCH_RE))))
    syncs = _syncs(ops, gpu)
    coll = pd.DataFrame() if collectives is None else collectives.copy()
    if not coll.empty:
        coll["window"] = _window_of(coll["ts_ns"].to_numpy(np.int64), windows)
        coll = coll[coll["window"] >= 0].reset_index(drop=True)
    return StepModel(trace=trace, windows=windows, main=main, host_threads=threads, ops=ops, regions=regions,
                     gpu=gpu, syncs=syncs, collectives=coll)


def _gpu_work(trace: Trace, windows: pd.DataFrame) -> pd.DataFrame:
    """GPU work joined with its launch, with category, stream and window (by launch time, else start)."""
    gpu = gpu_work(trace)
    cols = ["ts_ns", "end_ns", "dur_ns", "stream", "category", "name", "launch_ts_ns", "launch_end_ns",
            "launch_tid", "window", "correlation", "kind", "fp32_gemm"]
    if gpu.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    ts, dur = gpu["ts_ns"].to_numpy(np.int64), gpu["dur_ns"].to_numpy(np.int64)
    corr = gpu["correlation"].to_numpy(np.int64)
    launch = launch_columns(trace, corr, calls=("runtime", "driver"), names=False)
    stream = gpu["stream"].to_numpy(np.int64)
    at = np.where(launch["launch_ts_ns"] >= 0, launch["launch_ts_ns"], ts).astype(np.int64)
    window = _window_of(at, windows)
    rows = np.flatnonzero(window >= 0)
    # By stream, then start (a stable sort: the trace's order among equal starts).
    rows = rows[np.lexsort((ts[rows], np.where(stream >= 0, stream, gpu["tid"].to_numpy(np.int64))[rows]))]
    sub = gpu.iloc[rows]
    return pd.DataFrame({
        "ts_ns": ts[rows], "end_ns": ts[rows] + dur[rows], "dur_ns": dur[rows],
        "stream": np.where(stream >= 0, stream, gpu["tid"].to_numpy(np.int64))[rows],
        "category": kernel_categories(trace, sub).to_numpy(object),
        # Categories over all the GPU work (as they were before the rows outside the windows went).
        "name": _categorical(gpu["name"])[rows],
        "launch_ts_ns": launch["launch_ts_ns"][rows], "launch_end_ns": launch["launch_end_ns"][rows],
        "launch_tid": launch["launch_tid"][rows], "window": window[rows], "correlation": corr[rows],
        "kind": _categorical(gpu["kind"])[rows],
        "fp32_gemm": fp32_gemm_kernels(trace, sub["name"]).to_numpy(bool),
    }, columns=cols)


_SYNC_KINDS = np.array(["", "device_sync", "blocking_copy"])


def _syncs(ops: pd.DataFrame, gpu: pd.DataFrame) -> pd.DataFrame:
    """Host calls that wait for the device, with the outermost op around each (its call site)."""
    names = ops["name"]
    runtime = ops["kind"].isin(("runtime", "driver")).to_numpy()
    is_sync = runtime & name_mask(names, lambda n: n.str.match(_SYNC_RE))
    is_copy = runtime & name_mask(names, lambda n: n.str.match(_MEMCPY_CALL_RE))
    kind = is_sync.astype(np.int8)  # 1: device_sync, 2: blocking_copy (_SYNC_KINDS), 0: neither
    if is_copy.any() and not gpu.empty:
        copies = gpu[gpu["kind"].isin(("memcpy", "memset")).to_numpy()].drop_duplicates("correlation")
        by_corr = copies.set_index("correlation")
        at = np.flatnonzero(is_copy)
        corr = ops["correlation"].to_numpy(np.int64)[at]
        own = np.nan_to_num(by_corr["dur_ns"].reindex(corr).to_numpy(np.float64), nan=0.0)
        copy_end = by_corr["end_ns"].reindex(corr).to_numpy(np.float64)
        # Blocking: the call returned only once its copy had finished, and waited well beyond the copy.
        returned_after = np.nan_to_num(ops["end_ns"].to_numpy(np.float64)[at] - copy_end, nan=-1.0) >= 0
        waited = ops["dur_ns"].to_numpy(np.int64)[at] - own > BLOCKING_COPY_MIN_WAIT_NS
        blocking = np.zeros(len(ops), dtype=bool)
        blocking[at[returned_after & waited]] = True
        kind[blocking] = 2
    rows = np.flatnonzero(kind > 0)
    out = ops[["ts_ns", "end_ns", "dur_ns", "name", "pid", "tid", "window", "correlation"]].iloc[rows]
    out["kind"] = _SYNC_KINDS[kind[rows]]
    out["site"] = _outermost_names(ops, out)
    return out[out["window"] >= 0].sort_values("ts_ns", kind="stable").reset_index(drop=True)


def _outermost_names(ops: pd.DataFrame, calls: pd.DataFrame) -> np.ndarray:
    """Name of the outermost cpu_op of the same thread enclosing each call ('' when none)."""
    if calls.empty:
        return np.zeros(0, dtype=object)
    o_pid, o_tid = ops["pid"].to_numpy(np.int64), ops["tid"].to_numpy(np.int64)
    o_ts, o_end = ops["ts_ns"].to_numpy(np.int64), ops["end_ns"].to_numpy(np.int64)
    is_cpu = (ops["kind"] == "cpu_op").to_numpy()
    codes = ops["name"].cat.codes.to_numpy()
    labels = np.append(ops["name"].cat.categories.to_numpy(object), np.nan)  # code -1: a missing name
    c_pid, c_tid, c_ts = calls["pid"].to_numpy(np.int64), calls["tid"].to_numpy(np.int64), calls["ts_ns"].to_numpy(np.int64)
    out = np.full(len(calls), "", dtype=object)
    # Outermost is decided per thread: only the threads that made the calls are needed. The ops are in
    # nesting order (time, the longer first), so an op is nested when an earlier one of its thread ends
    # no earlier than it does.
    for p, t in dict.fromkeys(zip(c_pid.tolist(), c_tid.tolist())):
        rows = np.flatnonzero(is_cpu & (o_pid == p) & (o_tid == t))
        end = o_end[rows]
        top = rows[np.concatenate(([True], end[1:] > np.maximum.accumulate(end)[:-1]))] if rows.size else rows
        mine = np.flatnonzero((c_pid == p) & (c_tid == t))
        pos = step_index(c_ts[mine], o_ts[top], o_end[top])
        hit = pos >= 0
        if hit.any():
            out[mine[hit]] = labels[codes[top[pos[hit]]]]
    return out
