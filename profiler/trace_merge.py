"""One Chrome trace per rank: Kineto's events plus our counters and annotations, on Kineto's clock.

Clock: Kineto writes ``ts`` in µs such that ``ts * 1000 + baseTimeNanoseconds`` is wall-clock
nanoseconds (``time.time_ns()``); this was checked empirically (tests/profiler/test_clock.py
brackets a record_function with time.time_ns()). Our events carry wall-clock ns and are placed at
``(t_ns - baseTimeNanoseconds) / 1000``. Without a Kineto trace the base is 0 (ts = epoch µs).

Our annotations go on two named pseudo-threads of the process ("torchscope phases" and
"torchscope modules") so they nest cleanly in Perfetto; counters are "ph": "C" events named after
the metric with one series per device ("gpu0", "cuda0") or "host". Annotations are kept when they
overlap a Kineto recording window; counters within COUNTER_MARGIN_NS of one.
"""

from __future__ import annotations

import os
from typing import Iterable

from torchscope.profiler.annotations import MODULE_CAT, PHASE_CAT
from torchscope.profiler.comms import enrich_gloo_events

__all__ = ["merge_traces", "PHASE_TID", "MODULE_TID", "COUNTER_MARGIN_NS", "counter_events"]

PHASE_TID = 0x75C0_0001  # pseudo thread ids of our annotation tracks
MODULE_TID = 0x75C0_0002
COUNTER_MARGIN_NS = 1_000_000_000
_TIDS = {PHASE_CAT: PHASE_TID, MODULE_CAT: MODULE_TID}

# sample-line key -> (counter name, scale applied to the value)
_NVML_COUNTERS = {
    "power_mw": ("power_w", 1e-3), "energy_mj": ("energy_j", 1e-3), "sm_clock_mhz": ("sm_clock_mhz", 1),
    "mem_clock_mhz": ("mem_clock_mhz", 1), "gpu_util_pct": ("gpu_util_pct", 1),
    "mem_util_pct": ("mem_util_pct", 1), "mem_used_bytes": ("mem_used_bytes", 1), "temp_c": ("temp_c", 1),
    "pcie_tx_kbps": ("pcie_tx_kbps", 1), "pcie_rx_kbps": ("pcie_rx_kbps", 1),
    "power_limit_mw": ("power_limit_w", 1e-3),
}
_HOST_COUNTERS = {"cpu_util_pct": ("cpu_util_pct", 1), "rss_bytes": ("rss_bytes", 1),
                  "rapl_energy_uj": ("rapl_energy_j", 1e-6)}
_CUDA_COUNTERS = {"allocated_bytes": ("cuda_allocated_bytes", 1), "reserved_bytes": ("cuda_reserved_bytes", 1)}


def _us(t_ns: int, base_ns: int) -> float:
    return round((t_ns - base_ns) / 1000.0, 3)


def _windows(events: Iterable[dict], base_ns: int) -> tuple[int, int] | None:
    lo = hi = None
    for e in events:
        if e.get("ph") != "X":
            continue
        try:
            ts = float(e["ts"])
            dur = float(e.get("dur", 0))
        except (KeyError, TypeError, ValueError):
            continue
        lo = ts if lo is None or ts < lo else lo
        hi = ts + dur if hi is None or ts + dur > hi else hi
    if lo is None:
        return None
    return int(lo * 1000) + base_ns, int(hi * 1000) + base_ns


def counter_events(lines: Iterable[dict], *, pid: int, base_ns: int,
                   window: tuple[int, int] | None = None) -> list[dict]:
    """"ph": "C" events for sample lines (event lines and lines outside `window` are skipped)."""
    out = []
    for line in lines:
        if "event" in line:
            continue
        t = line.get("t_ns")
        if t is None or (window is not None and not (window[0] <= t <= window[1])):
            continue
        src = line.get("source")
        if src == "nvml":
            table, series = _NVML_COUNTERS, f"gpu{line.get('device', 0)}"
        elif src == "cuda_mem":
            table, series = _CUDA_COUNTERS, f"cuda{line.get('device', 0)}"
        elif src == "host":
            table, series = _HOST_COUNTERS, "host"
        else:
            continue
        ts = _us(t, base_ns)
        for key, (name, scale) in table.items():
            if key in line and line[key] is not None:
                value = line[key] * scale if scale != 1 else line[key]
                out.append({"ph": "C", "name": name, "pid": pid, "tid": 0, "ts": ts, "cat": "torchscope.counter",
                            "args": {series: value}})
    return out


def merge_traces(kineto: list[dict], *, annotations: list[tuple[str, str, int, int, dict | None]],
                 sample_lines: list[dict], pid: int | None = None,
                 distributed: dict | None = None, extra: dict | None = None) -> dict:
    """The merged per-rank trace: Kineto cycles concatenated, our counters and annotations added."""
    pid = os.getpid() if pid is None else pid
    if kineto:
        trace = {k: v for k, v in kineto[0].items() if k != "traceEvents"}
        events: list[dict] = list(kineto[0].get("traceEvents", []))
        seen_meta = {(e.get("name"), e.get("pid"), e.get("tid")) for e in events if e.get("ph") == "M"}
        for later in kineto[1:]:
            for e in later.get("traceEvents", []):
                if e.get("ph") == "M":
                    key = (e.get("name"), e.get("pid"), e.get("tid"))
                    if key in seen_meta:
                        continue
                    seen_meta.add(key)
                events.append(e)
        base_ns = int(trace.get("baseTimeNanoseconds", 0) or 0)
        windows = [w for t in kineto if (w := _windows(t.get("traceEvents", []), base_ns)) is not None]
    else:
        trace = {"schemaVersion": 1, "displayTimeUnit": "ms", "baseTimeNanoseconds": 0}
        events = []
        base_ns = 0
        windows = []
    if distributed and "distributedInfo" not in trace:
        trace["distributedInfo"] = distributed

    def overlaps(t0: int, t1: int) -> bool:
        return not windows or any(t1 >= lo and t0 <= hi for lo, hi in windows)

    ours: list[dict] = []
    for name, cat, t0, t1, args in annotations:
        if not overlaps(t0, t1):
            continue
        ev = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": _TIDS.get(cat, PHASE_TID),
              "ts": _us(t0, base_ns), "dur": round(max(0, t1 - t0) / 1000.0, 3)}
        if args:
            ev["args"] = args
        ours.append(ev)
    if windows:
        span = (min(w[0] for w in windows) - COUNTER_MARGIN_NS, max(w[1] for w in windows) + COUNTER_MARGIN_NS)
    else:
        span = None
    counters = counter_events(sample_lines, pid=pid, base_ns=base_ns, window=span)
    meta_ts = min((e["ts"] for e in ours), default=0)
    meta = [
        {"ph": "M", "name": "thread_name", "pid": pid, "tid": PHASE_TID, "ts": meta_ts,
         "args": {"name": "torchscope phases"}},
        {"ph": "M", "name": "thread_name", "pid": pid, "tid": MODULE_TID, "ts": meta_ts,
         "args": {"name": "torchscope modules"}},
        {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": PHASE_TID, "ts": meta_ts,
         "args": {"sort_index": -2}},
        {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": MODULE_TID, "ts": meta_ts,
         "args": {"sort_index": -1}},
    ]
    if not kineto:
        meta.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": meta_ts,
                     "args": {"name": "python"}})
    enrich_gloo_events(events, trace.get("distributedInfo"))
    trace["traceEvents"] = events + meta + ours + counters
    trace["torchscope"] = dict(extra or {}, annotation_events=len(ours), counter_events=len(counters),
                               kineto_cycles=len(kineto))
    return trace
