"""Where the GPU's time goes: compute, communication, memcpy/memset and idle, per rank.

Definitions (default mode; all times int64 ns, per rank):

* **GPU work** is every kernel, memcpy and memset (``Trace.gpu_events()``), on any stream.
* **Window** — the profiled window the shares are taken over. With ``ProfilerStep#N``
  annotations it runs from the start of the first step to the later of the end of the last step
  and the end of the last GPU event launched inside the steps (the GPU finishes a step after the
  CPU does). Without steps it is the span of the GPU work. GPU work outside it is clipped.
* The window is split into four exclusive parts by priority, from the union of each class's
  intervals over all streams:
  ``compute`` — at least one compute kernel runs (any kernel that is not communication);
  ``communication`` — a communication kernel (NCCL/RCCL, see ``kernels.category_of``) runs and no
  compute kernel does (the *exposed* communication; ``comm_overlapped_ns`` is the rest);
  ``memory`` — only memcpy/memset run (``memset_ns``: only memsets run; ``memcpy_ns``: the rest);
  ``idle`` — nothing runs on any stream.
  The ``steps`` table applies the same split to each step window of ``timeline.steps`` (from a
  ``ProfilerStep``'s CPU start until the next one starts).
* **Idle** is split by looking at the GPU work that ends each idle gap (the earliest event to
  start after it) and at the runtime call that launched it (matched by correlation id):
  ``host_wait`` — the part of the gap before that launch call started: the GPU had nothing to do
  because the host had not issued the work yet (launch overhead, Python, data loading, syncs on
  the CPU side). A gap at the end of the window counts as host wait too (no more work was issued).
  ``kernel_wait`` — the remainder of a gap, when it is shorter than ``KERNEL_WAIT_MAX_NS``: the
  launch latency between back-to-back work already queued.
  ``other`` — the remainder when longer (waiting on an event, another stream, a collective
  partner), or gaps whose next work has no matching launch call.

``hta_compatible=True`` follows Holistic Trace Analysis 0.5.0 instead (``hta_temporal``,
``hta_idle_by_stream`` and the overlap share in the summary):

* time is in whole microseconds, starts rounded up and ends rounded down, like HTA's parser;
* with at least two distinct ``ProfilerStep`` names, only GPU events whose launching CPU event
  starts before the last step do count (HTA drops the last, usually incomplete, step);
* GPU events are those with a stream and a correlation id (kernels, memcpy, memset and
  ``cuda_sync`` events; GPU user annotations are not);
* temporal breakdown: ``kernel_time`` = end of the last merged interval − start of the first,
  ``idle`` = kernel_time − union of all GPU events, ``compute`` = union of compute kernels
  (names not matching NCCL/Memcpy/Memset/Sync), ``non_compute`` = the rest;
* idle per stream: each gap between consecutive events of a stream is host wait when the
  launching runtime call started after the previous event ended, else kernel wait when shorter
  than ``HTA_CONSECUTIVE_KERNEL_DELAY_US`` (HTA's default, 30, applied to µs timestamps), else other;
* comm/comp overlap = time where merged communication and merged compute kernels both run,
  divided by the merged communication time.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from torchscope.analyzers.core.args import decode_args
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.kernels import COMMUNICATION, MEMORY, kernel_categories
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.timeline.intervals import clip as _clip
from torchscope.analyzers.timeline.intervals import covered_ns, merge_intervals, overlap_ns, union_ns
from torchscope.analyzers.timeline.launches import gpu_work, launch_columns
from torchscope.analyzers.timeline.steps import step_windows

__all__ = [
    "analyze",
    "KERNEL_WAIT_MAX_NS", "HOST_WAIT_FINDING_FRACTION", "HOST_WAIT_CRITICAL_FRACTION",
    "HTA_CONSECUTIVE_KERNEL_DELAY_US", "GPU_IDLE_HOST_LAUNCH", "SUMMARY_KEYS",
]

#: Keys of the ``gpu_time`` summary -> what each is, with its unit. The default mode fills the first
#: group (shares of the profiled window), ``hta_compatible=True`` the second (``mode`` says which).
SUMMARY_KEYS: dict[str, str] = {
    "window_ns": "profiled window the shares are taken over, ns",
    "compute_pct": "window time with a compute kernel running (hta mode: union of compute kernels), %",
    "communication_pct": "window time with only communication kernels running (exposed communication), %",
    "memcpy_pct": "window time with only memcpy (or memcpy and memset) running, %",
    "memset_pct": "window time with only memsets running, %",
    "idle_pct": "window time with nothing running on any stream (hta mode: of kernel_ns), %",
    "idle_host_wait_pct": "idle time before the host issued the next work, %",
    "idle_kernel_wait_pct": "idle remainder shorter than KERNEL_WAIT_MAX_NS (launch latency), %",
    "idle_other_pct": "the rest of the idle time, %",
    "comm_overlap_pct": "communication time overlapped by compute over all communication time, % (NaN if none)",
    "mode": "'hta_compatible' when computed as Holistic Trace Analysis does (absent in the default mode)",
    "idle_ns": "hta mode: kernel_ns minus the union of all GPU events, ns",
    "compute_ns": "hta mode: union of compute kernels, ns",
    "non_compute_ns": "hta mode: kernel_ns minus compute and idle, ns",
    "kernel_ns": "hta mode: end of the last GPU event minus start of the first, ns",
    "non_compute_pct": "hta mode: non_compute_ns over kernel_ns, %",
    "comm_comp_overlap_pct": "hta mode: merged communication overlapped by merged compute over communication, %",
}

#: Remainder of an idle gap (after the launch was issued) shorter than this is launch latency (ns).
KERNEL_WAIT_MAX_NS = 30_000
#: HTA's default ``consecutive_kernel_delay``; HTA compares it with µs gaps.
HTA_CONSECUTIVE_KERNEL_DELAY_US = 30
#: Finding: the GPU idles waiting for the host to launch work.
GPU_IDLE_HOST_LAUNCH = "gpu_time.gpu_idle_host_launch"
#: Raise the launch-overhead finding when host wait is at least this share of the window.
HOST_WAIT_FINDING_FRACTION = 0.10
#: ... and critical from this share on.
HOST_WAIT_CRITICAL_FRACTION = 0.30

_HTA_COMM_RE = re.compile(r"^nccl.*Kernel")
_HTA_MEMORY_RE = re.compile(r"(^Memcpy)|(^Memset)|(^dma)")
_HTA_NOT_COMPUTE_RE = re.compile(r"(^nccl.*Kernel)|(.*(Memcpy)|(Memset))|(.*Sync)")
_HTA_SYNC_NAMES = ("Event Sync", "Context Sync")


# --------------------------------------------------------------------------- default mode
def _window(trace: Trace, gpu: pd.DataFrame) -> tuple[int, int, str]:
    """The profiled window (start ns, end ns, what it comes from)."""
    steps = step_windows(trace)
    g_s = gpu["ts_ns"].to_numpy()
    g_e = g_s + gpu["dur_ns"].to_numpy()
    if steps.empty:
        return int(g_s.min()), int(g_e.max()), "gpu span"
    start = int(steps["start_ns"].iloc[0])
    step_end = int(steps["end_ns"].iloc[-1])
    launched = gpu["launch_ts_ns"].to_numpy()
    inside = (launched >= start) & (launched <= step_end)
    end = max(step_end, int(g_e[inside].max())) if inside.any() else step_end
    return start, end, "ProfilerStep"


def _per_step(trace: Trace, comp, comp_or_comm, busy) -> pd.DataFrame:
    """Per step window (``timeline.steps``), GPU compute / exposed communication / memory / idle, ns."""
    steps = step_windows(trace)
    cols = ["step", "start_ns", "step_ns", "compute_ns", "communication_ns", "memory_ns", "idle_ns", "busy_pct"]
    if steps.empty:
        return pd.DataFrame(columns=cols)
    t0 = steps["start_ns"].to_numpy()
    t1 = steps["end_ns"].to_numpy()

    def within(merged) -> np.ndarray:
        return covered_ns(t0, t1, merged)

    c, cc, b = within(comp), within(comp_or_comm), within(busy)
    dur = t1 - t0
    return pd.DataFrame({"step": steps["step"].to_numpy(), "start_ns": t0, "step_ns": dur,
                         "compute_ns": c, "communication_ns": cc - c, "memory_ns": b - cc, "idle_ns": dur - b,
                         "busy_pct": np.where(dur > 0, 100.0 * b / np.maximum(dur, 1), 0.0)})


def _breakdown(trace: Trace) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    # The columns read here, with the launch time: not a copy of the whole GPU frame.
    work = gpu_work(trace)
    gpu = work[["ts_ns", "dur_ns", "stream", "name", "kind"]].copy()
    gpu["launch_ts_ns"] = launch_columns(trace, work["correlation"].to_numpy(), names=False)["launch_ts_ns"]
    w0, w1, source = _window(trace, gpu)
    cat = kernel_categories(trace, gpu)
    s_all = gpu["ts_ns"].to_numpy()
    e_all = s_all + gpu["dur_ns"].to_numpy()
    is_comm = (cat == COMMUNICATION).to_numpy()
    is_mem = (cat == MEMORY).to_numpy()
    is_comp = ~is_comm & ~is_mem
    is_memset = (gpu["kind"] == "memset").to_numpy(dtype=bool)

    def merged(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, e = _clip(s_all[mask], e_all[mask], w0, w1)
        return merge_intervals(s, e)

    comp = merged(is_comp)
    comm = merged(is_comm)
    busy = merged(np.ones(len(gpu), dtype=bool))
    comp_ns = int((comp[1] - comp[0]).sum())
    comm_total = int((comm[1] - comm[0]).sum())
    comm_overlap = overlap_ns(comm, comp)
    comm_exposed = comm_total - comm_overlap
    busy_ns = int((busy[1] - busy[0]).sum())
    memory_ns = busy_ns - comp_ns - comm_exposed
    # Memory-only time: memset where nothing but memsets run, memcpy the rest (memcpy wins a tie).
    not_memset = merged(~(is_mem & is_memset))
    memset_ns = busy_ns - int((not_memset[1] - not_memset[0]).sum())
    memcpy_ns = memory_ns - memset_ns
    window_ns = w1 - w0
    idle_ns = window_ns - busy_ns

    gaps = _idle_gaps(gpu, s_all, e_all, busy, w0, w1)
    host = int(gaps["host_wait_ns"].sum())
    kwait = int(gaps["kernel_wait_ns"].sum())
    other = idle_ns - host - kwait
    row = {
        "rank": trace.rank, "window_start_ns": w0, "window_ns": window_ns, "window_from": source,
        "compute_ns": comp_ns, "communication_ns": comm_exposed, "comm_overlapped_ns": comm_overlap,
        "memcpy_ns": memcpy_ns, "memset_ns": memset_ns, "idle_ns": idle_ns,
        "idle_host_wait_ns": host, "idle_kernel_wait_ns": kwait, "idle_other_ns": other,
    }
    for key in ("compute", "communication", "memcpy", "memset", "idle", "idle_host_wait",
                "idle_kernel_wait", "idle_other"):
        row[f"{key}_pct"] = 100.0 * row[f"{key}_ns"] / window_ns if window_ns else 0.0
    row["comm_overlap_pct"] = 100.0 * comm_overlap / comm_total if comm_total else float("nan")

    streams = _per_stream(gpu, s_all, e_all, is_comm, is_mem, w0, w1)
    steps = _per_step(trace, comp, merged(is_comp | is_comm), busy)
    return row, streams, gaps, steps


def _idle_gaps(gpu: pd.DataFrame, s_all: np.ndarray, e_all: np.ndarray,
               busy: tuple[np.ndarray, np.ndarray], w0: int, w1: int) -> pd.DataFrame:
    """One row per idle gap of the whole GPU inside the window, with its host/kernel/other split."""
    b_s, b_e = busy
    if b_s.size == 0:
        return pd.DataFrame({"gap_start_ns": [w0], "gap_end_ns": [w1], "host_wait_ns": [w1 - w0],
                             "kernel_wait_ns": [0], "other_ns": [0]})
    g_start = np.concatenate(([w0], b_e))
    g_end = np.concatenate((b_s, [w1]))
    # The work that ends each gap: among the events starting at the next busy start, the one
    # launched first (events without a known launch last).
    launch = gpu["launch_ts_ns"].to_numpy()
    order = np.lexsort((np.where(launch < 0, np.iinfo(np.int64).max, launch), s_all))
    s_sorted = s_all[order]
    launch_sorted = launch[order]
    idx = np.searchsorted(s_sorted, b_s, side="left")
    idx = np.clip(idx, 0, max(s_sorted.size - 1, 0))
    next_launch = np.concatenate((launch_sorted[idx], [-1]))
    gap = g_end - g_start
    valid = gap > 0
    has_launch = next_launch >= 0
    host = np.where(has_launch, np.clip(next_launch - g_start, 0, gap), 0)
    host[-1] = gap[-1]  # trailing gap: no more work was issued in the window
    rest = gap - host
    kwait = np.where(has_launch & (rest < KERNEL_WAIT_MAX_NS), rest, 0)
    other = rest - kwait
    out = pd.DataFrame({"gap_start_ns": g_start, "gap_end_ns": g_end, "host_wait_ns": host,
                        "kernel_wait_ns": kwait, "other_ns": other})
    return out[valid].reset_index(drop=True)


def _per_stream(gpu: pd.DataFrame, s_all, e_all, is_comm, is_mem, w0: int, w1: int) -> pd.DataFrame:
    rows = []
    streams = gpu["stream"].to_numpy()
    for stream in np.unique(streams):  # a handful of streams, not events
        m = streams == stream
        s, e = _clip(s_all[m], e_all[m], w0, w1)
        busy = union_ns(s, e)
        rows.append({"stream": int(stream), "events": int(m.sum()), "busy_ns": busy,
                     "busy_pct": 100.0 * busy / (w1 - w0) if w1 > w0 else 0.0,
                     "communication_events": int((m & is_comm).sum()),
                     "memory_events": int((m & is_mem).sum())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- HTA-compatible mode
def _hta_frames(trace: Trace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """HTA's kernel set (after its last-step filter) with µs ts/end and the launch start, µs."""
    ev = trace.events
    ev = ev[(ev["kind"] != "gpu_annotation") & (ev["ph"].astype(str) == "X")]
    names = ev["name"].astype(str)
    base = trace.meta.base_time_ns
    rel = ev["ts_ns"].to_numpy() - base
    # HTA holds µs as float64 and computes end = ts + dur in float64 before rounding: do the same.
    ts_f = (rel // 1000).astype(np.float64) + (rel % 1000) / 1000.0
    end_f = ts_f + ev["dur_ns"].to_numpy() / 1000.0
    ts_us = np.ceil(ts_f).astype(np.int64)
    end_us = np.floor(end_f).astype(np.int64)
    stream = _hta_stream(ev)
    is_gpu = ((stream >= 0) & (ev["correlation"] >= 0).to_numpy()) | names.isin(_HTA_SYNC_NAMES).to_numpy()
    frame = pd.DataFrame({"name": names.to_numpy(), "kind": ev["kind"].astype(str).to_numpy(),
                          "stream": stream, "correlation": ev["correlation"].to_numpy(),
                          "ts": ts_us, "end": end_us, "is_gpu": is_gpu})
    cpu = frame[~frame["is_gpu"]]
    gpu = frame[frame["is_gpu"]]
    step_names = pd.Index(names.unique())
    step_names = step_names[step_names.str.contains("ProfilerStep", regex=False)]
    cpu_corr = cpu[cpu["correlation"] != -1]
    launch_ts = cpu_corr.drop_duplicates("correlation", keep="last").set_index("correlation")["ts"]
    if len(step_names) >= 2:
        cpu_steps = cpu[cpu["name"].isin(step_names)]
        last_start = cpu_steps["ts"].max()
        kept_cpu = cpu[cpu["ts"] < last_start]
        # HTA inner-joins GPU events with every CPU event of the same correlation id (duplicates kept).
        counts = kept_cpu["correlation"].value_counts()
        reps = counts.reindex(gpu["correlation"]).fillna(0).astype(np.int64).to_numpy()
        gpu = gpu.loc[gpu.index.repeat(reps)]
    gpu = gpu.copy()
    gpu["ts_runtime"] = launch_ts.reindex(gpu["correlation"]).to_numpy()
    return gpu, frame


def _hta_stream(ev: pd.DataFrame) -> np.ndarray:
    """Stream as HTA reads it: ``int(args["stream"])``, so a hex string such as "0x0" becomes -1."""
    stream = ev["stream"].to_numpy().copy()
    has = np.flatnonzero(stream != -1)
    raw = [(a or {}).get("stream") for a in decode_args(ev["args"].to_numpy()[has])]  # events with a stream
    stream[has] = [_int_or_minus_one(v) for v in raw]
    return stream


def _int_or_minus_one(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1


def _hta_temporal(gpu: pd.DataFrame) -> dict:
    k = gpu[gpu["stream"] != -1]
    names = k["name"]
    s, e = merge_intervals(k["ts"].to_numpy(), k["end"].to_numpy())
    if s.size == 0:
        raise NotApplicable("no GPU events in HTA's window")
    kernel_time = int(e[-1] - s[0])
    idle = kernel_time - int((e - s).sum())
    is_compute = (~names.str.match(_HTA_COMM_RE) & ~names.str.match(_HTA_MEMORY_RE)
                  & ~names.str.match(_HTA_NOT_COMPUTE_RE))
    comp = merge_intervals(k["ts"].to_numpy()[is_compute.to_numpy()], k["end"].to_numpy()[is_compute.to_numpy()])
    compute = int((comp[1] - comp[0]).sum())
    is_comm = names.str.match(_HTA_COMM_RE).to_numpy()
    comm = merge_intervals(k["ts"].to_numpy()[is_comm], k["end"].to_numpy()[is_comm])
    comm_total = int((comm[1] - comm[0]).sum())
    overlap = overlap_ns(comm, comp)
    return {
        "idle_ns": idle * 1000, "compute_ns": compute * 1000,
        "non_compute_ns": (kernel_time - compute - idle) * 1000, "kernel_ns": kernel_time * 1000,
        "idle_pct": 100.0 * idle / kernel_time if kernel_time else 0.0,
        "compute_pct": 100.0 * compute / kernel_time if kernel_time else 0.0,
        "non_compute_pct": 100.0 * (kernel_time - compute - idle) / kernel_time if kernel_time else 0.0,
        "comm_comp_overlap_pct": 100.0 * overlap / comm_total if comm_total else float("nan"),
    }


def _hta_idle_by_stream(gpu: pd.DataFrame) -> pd.DataFrame:
    k = gpu[(gpu["stream"] != -1) & gpu["kind"].isin(("kernel", "memcpy", "memset"))]
    k = k.sort_values(["stream", "ts"], kind="stable")
    prev_end = k.groupby("stream", sort=False)["end"].shift(1)
    interval = k["ts"] - prev_end
    host = k["ts_runtime"] > prev_end
    kernel_wait = ~host & (interval < HTA_CONSECUTIVE_KERNEL_DELAY_US)
    category = np.where(host, "host_wait", np.where(kernel_wait, "kernel_wait", "other"))
    df = pd.DataFrame({"stream": k["stream"].to_numpy(), "idle_category": category,
                       "idle_us": interval.to_numpy()})
    out = df.groupby(["stream", "idle_category"], sort=True)["idle_us"].sum(min_count=0).reset_index()
    total = out.groupby("stream")["idle_us"].transform("sum")
    out["idle_ns"] = (out["idle_us"] * 1000).round().astype(np.int64)
    out["idle_ratio"] = out["idle_us"] / total.where(total != 0)
    return out.drop(columns="idle_us")


# --------------------------------------------------------------------------- analyzer
@register("gpu_time", description="GPU time split into compute, communication, memcpy/memset and idle",
          page="overview", summary_keys=SUMMARY_KEYS)
def analyze(trace: Trace, *, hta_compatible: bool = False) -> Result:
    """Per-rank GPU time breakdown over the profiled window (ns and % of the window)."""
    if gpu_work(trace).empty:
        raise NotApplicable("no GPU events")
    if hta_compatible:
        hta_gpu, _ = _hta_frames(trace)
        temporal = _hta_temporal(hta_gpu)
        temporal = {"rank": trace.rank, **temporal}
        idle = _hta_idle_by_stream(hta_gpu)
        idle.insert(0, "rank", trace.rank)
        return Result(analyzer="gpu_time", rank=trace.rank,
                      tables={"hta_temporal": pd.DataFrame([temporal]), "hta_idle_by_stream": idle},
                      summary={"mode": "hta_compatible", **{k: v for k, v in temporal.items() if k != "rank"}})
    row, streams, gaps, steps = _breakdown(trace)
    findings = tuple(_findings(trace, row))
    summary = {k: row[k] for k in ("window_ns", "compute_pct", "communication_pct", "memcpy_pct",
                                   "memset_pct", "idle_pct", "idle_host_wait_pct",
                                   "idle_kernel_wait_pct", "idle_other_pct", "comm_overlap_pct")}
    return Result(analyzer="gpu_time", rank=trace.rank,
                  tables={"breakdown": pd.DataFrame([row]), "steps": steps, "streams": streams,
                          "idle_gaps": gaps},
                  summary=summary, findings=findings)


def _findings(trace: Trace, row: dict) -> list[Finding]:
    window = row["window_ns"]
    if not window:
        return []
    host_share = row["idle_host_wait_ns"] / window
    if host_share < HOST_WAIT_FINDING_FRACTION:
        return []
    severity = "critical" if host_share >= HOST_WAIT_CRITICAL_FRACTION else "warning"
    return [Finding(
        id=GPU_IDLE_HOST_LAUNCH,
        analyzer="gpu_time",
        severity=severity,
        title=f"GPU idle {100 * host_share:.1f}% of the time waiting for the host to launch work",
        evidence={"host_wait_ns": row["idle_host_wait_ns"], "window_ns": window,
                  "host_wait_pct": round(100 * host_share, 3), "idle_pct": round(row["idle_pct"], 3),
                  "threshold_pct": 100 * HOST_WAIT_FINDING_FRACTION},
        recommendation=("The GPU runs out of queued work because the CPU issues it too slowly. Capture "
                        "the step with CUDA graphs (torch.cuda.graphs / torch.compile(mode=\"reduce-overhead\")), "
                        "fuse small ops with torch.compile, or raise the batch size so each launch carries "
                        "more work; also check for CPU-side stalls (data loading, .item() syncs) inside the step."),
        estimated_gain=(f"up to {100 * host_share:.1f}% of GPU time: the measured host-wait idle, "
                        "recoverable if the host kept the GPU queue non-empty"),
        gain_fraction=float(min(host_share, 1.0)),
        rank=trace.rank,
        page="timeline",
    )]
