"""Memory: device allocator timeline and peaks, allocations by phase and op, host RSS, synchronous H2D copies.

Sources, all optional (the analyzer uses what the trace has):

* **allocator events** — Kineto's ``[memory]`` instants (``profile_memory=True``), one per
  allocation or free, args ``Bytes`` (signed), ``Total Allocated``, ``Total Reserved``,
  ``Device Type`` (c10 numbering: 0 CPU, 1 CUDA, ...) and ``Device Id``. Exact peaks.
* **our samples** — ``cuda_mem`` lines of the bundle's samples stream (``allocated_bytes``,
  ``reserved_bytes`` per device), ``nvml`` lines' ``mem_used_bytes`` (all memory used on the
  device, CUDA context and other processes included) and ``host`` lines' ``rss_bytes``. Periodic,
  so a short peak between two samples is missed. When a trace has no stream (a merged trace file
  opened on its own), the same values are read from its counters (``cuda_allocated_bytes``,
  ``cuda_reserved_bytes``, ``mem_used_bytes``, ``rss_bytes``).
* **host-to-device copies** — ``Memcpy HtoD`` GPU events and the runtime call that issued each
  (through the correlation id). A copy is *synchronous* for the host when its source is pageable
  memory (the driver stages it and the call returns only when the data is staged) or when it was
  issued with the blocking ``cudaMemcpy``/``hipMemcpy``; the host time it cost is the duration of
  that runtime call.

Allocations are attributed to the enclosing torchscope phase (any thread) and to the enclosing
top-level CPU op of the thread that allocated. The device capacity comes from the trace's
``deviceProperties`` (``totalGlobalMem``) or the bundle manifest's ``devices[].total_memory_bytes``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from torchscope.analyzers.core.args import decode_args
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.trace import Trace, name_mask
from torchscope.analyzers.timeline.launches import launch_columns
from torchscope.analyzers.timeline.nesting import enclosing, outermost
from torchscope.analyzers.timeline.steps import step_index, step_of, step_windows, windows_or_span

__all__ = [
    "analyze", "device_memory_timeline", "host_rss", "allocations_by_category", "h2d_copies",
    "device_capacity_bytes", "MEMORY_NEAR_CAPACITY_SHARE", "MEMORY_CRITICAL_SHARE", "FRAGMENTATION_MIN_SHARE",
    "SYNC_H2D_MIN_SHARE", "SYNC_H2D_CRITICAL_SHARE", "MEMORY_NEAR_CAPACITY", "SYNCHRONOUS_H2D_COPIES",
    "SUMMARY_KEYS",
]

#: Keys of the ``memory`` summary -> what each is, with its unit. Device keys cover CUDA/HIP devices
#: (the largest over devices); a key is absent when the trace has no data for it.
SUMMARY_KEYS: dict[str, str] = {
    "peak_allocated_bytes": "peak memory allocated by tensors (allocator events or samples), bytes",
    "peak_allocated_ts_ns": "when peak_allocated_bytes was reached, ns",
    "peak_reserved_bytes": "peak memory reserved by the caching allocator, bytes",
    "peak_reserved_ts_ns": "when peak_reserved_bytes was reached, ns",
    "peak_used_bytes": "peak device memory used (NVML: CUDA context and other processes included), bytes",
    "peak_used_ts_ns": "when peak_used_bytes was reached, ns",
    "peak_pct_of_capacity": "highest of the peaks as a share of the device's capacity, %",
    "peak_rss_bytes": "peak host resident set size, bytes",
    "peak_rss_ts_ns": "when peak_rss_bytes was reached, ns",
    "h2d_copies": "host-to-device copies in the trace",
    "h2d_synchronous": "host-to-device copies that block the host (pageable source or blocking call)",
    "h2d_host_blocked_ns": "host time blocked in synchronous host-to-device copies, ns",
}

#: Finding: device memory peaks near the device's capacity.
MEMORY_NEAR_CAPACITY = "memory.near_capacity"
#: Peak reserved (or used) memory at or above this share of the device's capacity raises a finding.
MEMORY_NEAR_CAPACITY_SHARE = 0.90
#: ... and at or above this share the finding is critical.
MEMORY_CRITICAL_SHARE = 0.97
#: Reserved-but-unallocated memory at the peak above this share of capacity points at fragmentation.
FRAGMENTATION_MIN_SHARE = 0.10
#: Share of a step's transient memory (activations, temporaries) that halving the micro-batch frees, for the gain.
HALVED_BATCH_TRANSIENT_SHARE = 0.5
#: Finding: synchronous host-to-device copies block the host inside the step.
SYNCHRONOUS_H2D_COPIES = "memory.synchronous_h2d_copies"
#: Host time blocked in synchronous host-to-device copies at or above this share of step time.
SYNC_H2D_MIN_SHARE = 0.02
#: ... and at or above this share the finding is critical.
SYNC_H2D_CRITICAL_SHARE = 0.10

#: c10::DeviceType numbering used by Kineto's ``Device Type`` arg.
_DEVICE_TYPES = {0: "cpu", 1: "cuda", 6: "hip", 12: "xpu", 13: "mps", 20: "privateuse1"}
_SYNC_COPY_CALLS = ("cudaMemcpy", "hipMemcpy", "cudaMemcpy2D", "hipMemcpy2D", "cudaMemcpy3D", "hipMemcpy3D")
_TIMELINE_COLUMNS = ["ts_ns", "device_type", "device", "source", "allocated_bytes", "reserved_bytes", "used_bytes"]


def _arg_column(args: np.ndarray, key: str) -> np.ndarray:
    """One numeric arg from an array of args dicts, NaN where missing."""
    out = np.full(len(args), np.nan)
    for i, a in enumerate(args):
        if isinstance(a, dict):
            v = a.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[i] = v
    return out


_ALLOCATOR_KEYS = ("Device Type", "Device Id", "Bytes", "Total Allocated", "Total Reserved")


def _allocator_events(trace: Trace) -> pd.DataFrame:
    """Kineto ``[memory]`` instants as ts_ns, pid, tid, device_type, device, bytes, allocated/reserved totals."""
    mem = trace.of_kind("memory")
    records = [a if isinstance(a, dict) else {} for a in decode_args(mem["args"])]
    raw = pd.DataFrame.from_records(records, columns=list(_ALLOCATOR_KEYS)) if records else \
        pd.DataFrame(columns=list(_ALLOCATOR_KEYS))
    values = np.column_stack([pd.to_numeric(raw[k], errors="coerce").to_numpy(float) for k in _ALLOCATOR_KEYS]) \
        if len(raw) else np.empty((0, len(_ALLOCATOR_KEYS)))
    useful = ~np.isnan(values[:, 2:]).all(axis=1)  # an event without any size says nothing
    mem, values = mem[useful], values[useful]
    codes = values[:, 0]
    names = np.full(len(codes), "unknown", dtype=object)
    for code in np.unique(codes[~np.isnan(codes)]):
        names[codes == code] = _DEVICE_TYPES.get(int(code), f"type{int(code)}")
    return pd.DataFrame({
        "ts_ns": mem["ts_ns"].to_numpy(np.int64), "pid": mem["pid"].to_numpy(np.int64),
        "tid": mem["tid"].to_numpy(np.int64), "device_type": pd.array(names, dtype="str"),
        "device": np.nan_to_num(values[:, 1], nan=-1).astype(np.int64), "bytes": values[:, 2],
        "allocated_bytes": values[:, 3], "reserved_bytes": values[:, 4],
    }).sort_values("ts_ns", kind="stable").reset_index(drop=True)


def _samples(trace: Trace, source: str) -> pd.DataFrame:
    """Rows of the samples stream from ``source`` ("nvml", "host", "cuda_mem"), without event lines."""
    samples = trace.streams.get("samples") if trace.streams else None
    if samples is None or samples.empty or "source" not in samples or "t_ns" not in samples:
        return pd.DataFrame()
    rows = samples[samples["source"] == source]
    if "event" in rows:
        rows = rows[rows["event"].isna()]
    return rows


def _counter_series(trace: Trace, name: str) -> pd.DataFrame:
    """Counter ``name`` as ts_ns, series, value."""
    c = trace.counters
    if c.empty:
        return pd.DataFrame(columns=["ts_ns", "series", "value"])
    rows = c[c["name"].astype(str) == name]
    return pd.DataFrame({"ts_ns": rows["ts_ns"].to_numpy(np.int64), "series": rows["series"].astype(str).to_numpy(),
                         "value": rows["value"].to_numpy(float)})


def _series_device(series: pd.Series) -> np.ndarray:
    """Device index from a counter series name like "cuda0" / "gpu1" (-1 when none)."""
    digits = series.astype(str).str.extract(r"(\d+)$")[0]
    return pd.to_numeric(digits, errors="coerce").fillna(-1).astype(np.int64).to_numpy()


def device_memory_timeline(trace: Trace, allocator: pd.DataFrame | None = None) -> pd.DataFrame:
    """Device memory over time (bytes): allocator events, cuda_mem and NVML samples (or their counters)."""
    parts = []
    alloc = _allocator_events(trace) if allocator is None else allocator
    if not alloc.empty:
        parts.append(pd.DataFrame({
            "ts_ns": alloc["ts_ns"], "device_type": alloc["device_type"], "device": alloc["device"],
            "source": "allocator", "allocated_bytes": alloc["allocated_bytes"],
            "reserved_bytes": alloc["reserved_bytes"], "used_bytes": np.nan}))
    cuda = _samples(trace, "cuda_mem")
    if not cuda.empty:
        parts.append(pd.DataFrame({
            "ts_ns": cuda["t_ns"].to_numpy(np.int64), "device_type": "cuda",
            "device": pd.to_numeric(cuda.get("device", pd.Series(0, index=cuda.index)), errors="coerce")
            .fillna(0).astype(np.int64).to_numpy(),
            "source": "samples",
            "allocated_bytes": pd.to_numeric(cuda.get("allocated_bytes"), errors="coerce").to_numpy(float)
            if "allocated_bytes" in cuda else np.nan,
            "reserved_bytes": pd.to_numeric(cuda.get("reserved_bytes"), errors="coerce").to_numpy(float)
            if "reserved_bytes" in cuda else np.nan,
            "used_bytes": np.nan}))
    else:
        allocated = _counter_series(trace, "cuda_allocated_bytes")
        reserved = _counter_series(trace, "cuda_reserved_bytes")
        if not allocated.empty or not reserved.empty:
            both = allocated.merge(reserved, on=["ts_ns", "series"], how="outer", suffixes=("_a", "_r"))
            parts.append(pd.DataFrame({
                "ts_ns": both["ts_ns"].to_numpy(np.int64), "device_type": "cuda",
                "device": _series_device(both["series"]), "source": "counters",
                "allocated_bytes": both["value_a"].to_numpy(float), "reserved_bytes": both["value_r"].to_numpy(float),
                "used_bytes": np.nan}))
    nvml = _samples(trace, "nvml")
    if not nvml.empty and "mem_used_bytes" in nvml:
        nvml = nvml[nvml["mem_used_bytes"].notna()]
        parts.append(pd.DataFrame({
            "ts_ns": nvml["t_ns"].to_numpy(np.int64), "device_type": "cuda",
            "device": pd.to_numeric(nvml.get("device", pd.Series(0, index=nvml.index)), errors="coerce")
            .fillna(0).astype(np.int64).to_numpy(),
            "source": "nvml", "allocated_bytes": np.nan, "reserved_bytes": np.nan,
            "used_bytes": nvml["mem_used_bytes"].to_numpy(float)}))
    elif nvml.empty:
        used = _counter_series(trace, "mem_used_bytes")
        if not used.empty:
            parts.append(pd.DataFrame({
                "ts_ns": used["ts_ns"], "device_type": "cuda", "device": _series_device(used["series"]),
                "source": "nvml", "allocated_bytes": np.nan, "reserved_bytes": np.nan, "used_bytes": used["value"]}))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in _TIMELINE_COLUMNS}).astype(
            {"ts_ns": np.int64, "device": np.int64, "device_type": "str", "source": "str"})
    out = pd.concat(parts, ignore_index=True)
    out["device_type"] = out["device_type"].astype("str")
    out["source"] = out["source"].astype("str")
    return out[_TIMELINE_COLUMNS].sort_values("ts_ns", kind="stable").reset_index(drop=True)


def host_rss(trace: Trace) -> pd.DataFrame:
    """Host resident set size over time (ts_ns, rss_bytes) from the samples stream or its counters."""
    host = _samples(trace, "host")
    if not host.empty and "rss_bytes" in host:
        host = host[host["rss_bytes"].notna()]
        rss = pd.DataFrame({"ts_ns": host["t_ns"].to_numpy(np.int64), "rss_bytes": host["rss_bytes"].to_numpy(float)})
        return rss.sort_values("ts_ns").reset_index(drop=True)
    rss = _counter_series(trace, "rss_bytes")
    return pd.DataFrame({"ts_ns": rss["ts_ns"].to_numpy(np.int64),
                         "rss_bytes": rss["value"].to_numpy(float)}).sort_values("ts_ns").reset_index(drop=True)


def device_capacity_bytes(trace: Trace, device: int) -> float:
    """Total memory of device ``device`` in bytes (deviceProperties, then the manifest); NaN if unknown."""
    props = list(trace.meta.device_properties or ())
    for i, p in enumerate(props):
        if isinstance(p, Mapping) and int(p.get("id", i)) == device and p.get("totalGlobalMem"):
            return float(p["totalGlobalMem"])
    manifest = trace.meta.manifest or {}
    for i, d in enumerate(manifest.get("devices") or ()):
        if isinstance(d, Mapping) and int(d.get("index", i)) == device and d.get("total_memory_bytes"):
            return float(d["total_memory_bytes"])
    return float("nan")


def _peaks(trace: Trace, timeline: pd.DataFrame) -> pd.DataFrame:
    """Per device and source: peak allocated/reserved/used bytes and when, capacity and share of it."""
    rows = []
    for (dtype, device, source), g in timeline.groupby(["device_type", "device", "source"], sort=True):
        row: dict = {"device_type": dtype, "device": int(device), "source": source, "samples": len(g)}
        for col in ("allocated_bytes", "reserved_bytes", "used_bytes"):
            vals = g[col].to_numpy(float)
            name = col[: -len("_bytes")]
            if np.isnan(vals).all():
                row[f"peak_{name}_bytes"], row[f"peak_{name}_ts_ns"] = np.nan, -1
            else:
                i = int(np.nanargmax(vals))
                row[f"peak_{name}_bytes"], row[f"peak_{name}_ts_ns"] = float(vals[i]), int(g["ts_ns"].iloc[i])
        cap = device_capacity_bytes(trace, int(device)) if dtype in ("cuda", "hip") else np.nan
        row["capacity_bytes"] = cap
        top = np.nanmax([row["peak_reserved_bytes"], row["peak_used_bytes"], row["peak_allocated_bytes"], -1.0])
        row["peak_pct_of_capacity"] = 100.0 * top / cap if cap and not np.isnan(cap) and top >= 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _top_level_ops(trace: Trace) -> pd.DataFrame:
    """CPU ops not nested in another op of the same thread (pid, tid, ts_ns, dur_ns, name)."""
    ev = trace.events  # the five columns first, then the rows: not a take of the wide frame
    ops = ev[["pid", "tid", "ts_ns", "dur_ns", "name"]].iloc[np.flatnonzero((ev["kind"] == "cpu_op").to_numpy())]
    return ops[outermost(ops)]


def _enclosing_name(points: pd.DataFrame, spans: pd.DataFrame, by: tuple[str, ...]) -> np.ndarray:
    """Name of the innermost span containing each point (matched on ``by`` columns), or None."""
    idx = enclosing(points, spans, by)
    names = spans["name"].astype(str).to_numpy()
    return np.where(idx >= 0, names[np.maximum(idx, 0)] if len(names) else None, None).astype(object)


def allocations_by_category(trace: Trace, allocator: pd.DataFrame | None = None) -> pd.DataFrame:
    """Allocator events grouped by enclosing phase and by enclosing top-level op: counts and bytes."""
    alloc = _allocator_events(trace) if allocator is None else allocator
    alloc = alloc[alloc["bytes"].notna()]
    if alloc.empty:
        return pd.DataFrame(columns=["by", "category", "device_type", "allocations", "allocated_bytes",
                                     "freed_bytes", "net_bytes"])
    phases = trace.of_kind("phase")
    groups = {"op": _enclosing_name(alloc, _top_level_ops(trace), ("pid", "tid"))}
    if not phases.empty:
        # Phases may nest (a user phase inside "forward"), on any thread: the innermost one wins.
        groups["phase"] = _enclosing_name(alloc, phases[["ts_ns", "dur_ns", "name"]], ())
    frames = []
    size = alloc["bytes"].to_numpy(float)
    for by, cats in groups.items():
        f = pd.DataFrame({"by": by, "category": pd.array([c if c is not None else "(none)" for c in cats], dtype="str"),
                          "device_type": alloc["device_type"].to_numpy(),
                          "alloc": np.where(size > 0, size, 0.0), "free": np.where(size < 0, -size, 0.0),
                          "is_alloc": size > 0})
        agg = f.groupby(["by", "category", "device_type"], sort=False).agg(
            allocations=("is_alloc", "sum"), allocated_bytes=("alloc", "sum"), freed_bytes=("free", "sum"))
        frames.append(agg.reset_index())
    out = pd.concat(frames, ignore_index=True)
    out["allocations"] = out["allocations"].astype(np.int64)
    out["net_bytes"] = out["allocated_bytes"] - out["freed_bytes"]
    return out.sort_values(["by", "allocated_bytes"], ascending=[True, False], kind="stable").reset_index(drop=True)


def h2d_copies(trace: Trace) -> pd.DataFrame:
    """Host-to-device copies: time, bytes, the issuing runtime call, host time blocked, and whether synchronous."""
    ev = trace.events
    htod = name_mask(ev["name"], lambda names: names.str.contains("HtoD", regex=False))
    copies = ev.iloc[np.flatnonzero((ev["kind"] == "memcpy").to_numpy() & htod)]
    if copies.empty:
        return pd.DataFrame(columns=["ts_ns", "dur_ns", "name", "bytes", "call", "call_ts_ns", "host_blocked_ns",
                                     "pageable", "synchronous", "step"])
    joined = launch_columns(trace, copies["correlation"].to_numpy())
    names = copies["name"].astype(str).to_numpy()
    call = joined["launch_name"].astype(str)
    pageable = np.char.find(names.astype(str), "Pageable") >= 0
    blocking_call = np.isin(call, _SYNC_COPY_CALLS)
    synchronous = pageable | blocking_call
    launch_ts, launch_end = joined["launch_ts_ns"], joined["launch_end_ns"]
    has_call = launch_ts >= 0
    ts = copies["ts_ns"].to_numpy(np.int64)
    dur = copies["dur_ns"].to_numpy(np.int64)
    call_ts = np.where(has_call, launch_ts, ts)
    blocked = np.where(has_call, launch_end - launch_ts, dur)
    return pd.DataFrame({
        "ts_ns": ts, "dur_ns": dur, "name": pd.array(names, dtype="str"),
        "bytes": _arg_column(decode_args(copies["args"]), "bytes"), "call": pd.array(call, dtype="str"),
        "call_ts_ns": call_ts, "host_blocked_ns": np.where(synchronous, blocked, 0).astype(np.int64),
        "pageable": pageable, "synchronous": synchronous, "step": step_of(call_ts, step_windows(trace)),
    })


def _per_step_memory(trace: Trace, timeline: pd.DataFrame, device_type: str, device: int, source: str) -> pd.DataFrame:
    """Per step: baseline allocated, peak allocated, transient (peak − baseline) and peak reserved, bytes.

    The baseline is the lowest allocation of the step or the value it started from (the last
    reading before the step): what stays resident (weights, optimizer state); the transient is
    what the step adds on top (activations, temporaries).
    """
    columns = ["step", "baseline_allocated_bytes", "peak_allocated_bytes", "transient_bytes", "peak_reserved_bytes"]
    w = step_windows(trace)
    tl = timeline[(timeline["device_type"] == device_type) & (timeline["device"] == device)
                  & (timeline["source"] == source) & timeline["allocated_bytes"].notna()]
    if w.empty or tl.empty:
        return pd.DataFrame(columns=columns)
    ts = tl["ts_ns"].to_numpy(np.int64)
    alloc = tl["allocated_bytes"].to_numpy(float)
    reserved = tl["reserved_bytes"].to_numpy(float)
    rows = []
    for step, lo, hi in w[["step", "start_ns", "end_ns"]].itertuples(index=False):
        i0, i1 = np.searchsorted(ts, lo, side="left"), np.searchsorted(ts, hi, side="left")
        if i1 <= i0:
            continue
        inside = alloc[i0:i1]
        baseline = min(float(inside.min()), float(alloc[i0 - 1]) if i0 > 0 else np.inf)
        peak = float(inside.max())
        res = reserved[i0:i1]
        rows.append((int(step), baseline, peak, peak - baseline,
                     float(np.nanmax(res)) if not np.isnan(res).all() else np.nan))
    return pd.DataFrame(rows, columns=columns)


def _main_series(peaks: pd.DataFrame) -> pd.Series:
    """The peaks row to follow per step: a GPU before the CPU, exact allocator events before samples."""
    order = {"allocator": 0, "samples": 1, "counters": 2, "nvml": 3}
    ranked = peaks.assign(_gpu=~peaks["device_type"].isin(("cuda", "hip", "xpu", "mps")),
                          _src=peaks["source"].map(order).fillna(9),
                          _peak=-peaks["peak_allocated_bytes"].fillna(-1))
    return ranked.sort_values(["_gpu", "_src", "_peak"], kind="stable").iloc[0]


def _capacity_finding(trace: Trace, peaks: pd.DataFrame, timeline: pd.DataFrame, share: float) -> Finding | None:
    """Memory near capacity → activation checkpointing / smaller micro-batch (and fragmentation advice)."""
    dev = peaks[peaks["peak_pct_of_capacity"].notna()]
    dev = dev[dev["peak_pct_of_capacity"] >= 100 * share]
    if dev.empty:
        return None
    # Prefer exact allocator numbers over periodic samples for the same device.
    order = {"allocator": 0, "samples": 1, "counters": 2, "nvml": 3}
    row = dev.assign(_o=dev["source"].map(order).fillna(9)).sort_values(["_o", "peak_pct_of_capacity"],
                                                                           ascending=[True, False]).iloc[0]
    cap = float(row["capacity_bytes"])
    per_step = _per_step_memory(trace, timeline, row["device_type"], int(row["device"]), row["source"])
    transient = float(per_step["transient_bytes"].median()) if not per_step.empty else np.nan
    peak_alloc = float(row["peak_allocated_bytes"]) if pd.notna(row["peak_allocated_bytes"]) else np.nan
    peak_res = float(row["peak_reserved_bytes"]) if pd.notna(row["peak_reserved_bytes"]) else np.nan
    gib = 1 << 30
    evidence = {"device": int(row["device"]), "source": row["source"], "capacity_gib": cap / gib,
                "peak_pct_of_capacity": float(row["peak_pct_of_capacity"]),
                "threshold_pct": 100 * share}
    if not np.isnan(peak_alloc):
        evidence["peak_allocated_gib"] = peak_alloc / gib
    if not np.isnan(peak_res):
        evidence["peak_reserved_gib"] = peak_res / gib
    if not np.isnan(transient):
        evidence["median_transient_per_step_gib"] = transient / gib
    recommendation = ("Free memory headroom before it turns into an out-of-memory error or allocator thrashing: "
                      "apply activation checkpointing to the largest blocks (torch.utils.checkpoint, or "
                      "FSDP/`checkpoint_wrapper`), or halve the micro-batch and keep the global batch with "
                      "gradient accumulation")
    fragmented = (not np.isnan(peak_res) and not np.isnan(peak_alloc)
                  and (peak_res - peak_alloc) >= FRAGMENTATION_MIN_SHARE * cap)
    if fragmented:
        evidence["reserved_unallocated_gib"] = (peak_res - peak_alloc) / gib
        recommendation += ("; the allocator also holds memory it does not use (fragmentation): set "
                           "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")
    if not np.isnan(transient) and transient > 0:
        freed = transient * HALVED_BATCH_TRANSIENT_SHARE
        gain = (f"about {freed / gib:.1f} GiB of headroom ({100 * freed / cap:.0f}% of capacity) "
                f"from halving the micro-batch: half the memory allocated within a step on top of its start "
                f"(median {transient / gib:.1f} GiB, activations and temporaries); checkpointing frees most of "
                "it for about one extra forward pass of compute")
    else:
        gain = ("headroom, not speed: no per-step allocator data to size it; activation memory scales with "
                "the micro-batch")
    return Finding(
        id=MEMORY_NEAR_CAPACITY, analyzer="memory",
        severity="critical" if float(row["peak_pct_of_capacity"]) >= 100 * MEMORY_CRITICAL_SHARE else "warning",
        title=f"Device {int(row['device'])} memory peaks at {float(row['peak_pct_of_capacity']):.0f}% of its capacity",
        evidence=evidence, recommendation=recommendation + ".", estimated_gain=gain, gain_fraction=0.0,
        rank=trace.rank, page="memory",
    )


def _sync_h2d_finding(trace: Trace, copies: pd.DataFrame, min_share: float) -> Finding | None:
    """Synchronous host-to-device copies in the step → pinned memory + non_blocking copies."""
    sync = copies[copies["synchronous"]]
    if sync.empty:
        return None
    traced = not step_windows(trace).empty
    w = windows_or_span(trace)
    in_steps = sync[step_index(sync["call_ts_ns"].to_numpy(np.int64), w["start_ns"], w["end_ns"]) >= 0]
    window_ns = float((w["end_ns"] - w["start_ns"]).median())
    n_windows = len(w)
    if in_steps.empty or window_ns <= 0:
        return None
    blocked_per_step = float(in_steps["host_blocked_ns"].sum()) / n_windows
    share = blocked_per_step / window_ns
    if share < min_share:
        return None
    pageable = int(in_steps["pageable"].sum())
    blocking = int((~in_steps["pageable"]).sum())
    why = []
    if pageable:
        why.append(f"{pageable} from pageable memory")
    if blocking:
        why.append(f"{blocking} issued with blocking cudaMemcpy")
    gain = min(share, 1.0)
    per = "step" if traced else "profiled window"
    return Finding(
        id=SYNCHRONOUS_H2D_COPIES, analyzer="memory",
        severity="critical" if share >= max(SYNC_H2D_CRITICAL_SHARE, min_share) else "warning",
        title=f"Synchronous host-to-device copies block the CPU for {100 * share:.1f}% of each {per}",
        evidence={"copies": int(len(in_steps)), "copies_per_step": len(in_steps) / n_windows,
                  "bytes_per_step": float(in_steps["bytes"].sum()) / n_windows,
                  "host_blocked_ms_per_step": blocked_per_step / 1e6, "window_ms": window_ns / 1e6,
                  "reasons": ", ".join(why), "threshold_pct": 100 * min_share},
        recommendation=("Make these copies asynchronous: create the DataLoader with `pin_memory=True` (or "
                        "allocate the host tensors with `.pin_memory()`), then copy with "
                        "`.to(device, non_blocking=True)` so the transfer overlaps compute instead of stalling "
                        "the host" + (", and replace blocking cudaMemcpy with cudaMemcpyAsync on a stream"
                                      if blocking else "") + "."),
        estimated_gain=(f"up to {100 * gain:.1f}% of step time: the host time spent inside these copy calls "
                        f"({blocked_per_step / 1e6:.2f} ms per {per}) over the {per} time ({window_ns / 1e6:.2f} ms); "
                        "a pinned non_blocking copy returns immediately"),
        gain_fraction=gain, rank=trace.rank, page="memory",
    )


@register("memory", description="Device memory peaks and timeline, allocations by phase/op, host RSS, sync H2D copies",
          scope="rank", page="memory", summary_keys=SUMMARY_KEYS)
def analyze(trace: Trace, *, near_capacity_share: float = MEMORY_NEAR_CAPACITY_SHARE,
            sync_h2d_min_share: float = SYNC_H2D_MIN_SHARE) -> Result:
    """Memory peaks (bytes, when), timeline, allocations by category, host RSS and H2D copy findings."""
    allocator = _allocator_events(trace)
    timeline = device_memory_timeline(trace, allocator)
    rss = host_rss(trace)
    copies = h2d_copies(trace)
    if timeline.empty and rss.empty and copies.empty:
        raise NotApplicable("no memory data: no allocator events (record with profile_memory=True), "
                            "no memory samples and no host-to-device copies")
    peaks = _peaks(trace, timeline) if not timeline.empty else pd.DataFrame()
    tables: dict[str, pd.DataFrame] = {"timeline": timeline, "peaks": peaks, "host_rss": rss, "h2d_copies": copies,
                                       "allocations_by_category": allocations_by_category(trace, allocator)}
    summary: dict[str, object] = {}
    if not peaks.empty:
        gpu = peaks[peaks["device_type"].isin(("cuda", "hip"))]
        for col in ("peak_allocated_bytes", "peak_reserved_bytes", "peak_used_bytes"):
            vals = gpu[col].dropna() if not gpu.empty else pd.Series(dtype=float)
            if not vals.empty:
                summary[col] = float(vals.max())
                summary[col.replace("_bytes", "_ts_ns")] = int(gpu.loc[vals.idxmax(), col.replace("_bytes", "_ts_ns")])
        if not gpu.empty and gpu["peak_pct_of_capacity"].notna().any():
            summary["peak_pct_of_capacity"] = float(gpu["peak_pct_of_capacity"].max())
        main = _main_series(peaks)
        per_step = _per_step_memory(trace, timeline, main["device_type"], int(main["device"]), main["source"])
        if not per_step.empty:
            tables["per_step"] = per_step
    if not rss.empty:
        i = int(rss["rss_bytes"].to_numpy().argmax())
        summary["peak_rss_bytes"] = float(rss["rss_bytes"].iloc[i])
        summary["peak_rss_ts_ns"] = int(rss["ts_ns"].iloc[i])
    if not copies.empty:
        summary["h2d_copies"] = int(len(copies))
        summary["h2d_synchronous"] = int(copies["synchronous"].sum())
        summary["h2d_host_blocked_ns"] = int(copies["host_blocked_ns"].sum())
    findings = []
    if not peaks.empty:
        f = _capacity_finding(trace, peaks, timeline, near_capacity_share)
        if f is not None:
            findings.append(f)
    f = _sync_h2d_finding(trace, copies, sync_h2d_min_share)
    if f is not None:
        findings.append(f)
    return Result(analyzer="memory", tables=tables, summary=summary, findings=tuple(findings), rank=trace.rank)
