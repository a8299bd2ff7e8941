"""The launch<->GPU-work join: the runtime call (``cudaLaunchKernel``, ``hipMemcpyAsync``, ...) behind each kernel.

A GPU event and the runtime call that issued it share a correlation id. When several runtime events
carry the same id the first in the trace is the launch. GPU events without a matching call (a
correlation of -1, or a call outside the trace) get -1 times, pid and tid and an empty name.

By default only runtime calls count as launches (what HTA joins, so the HTA-compatible numbers
stay HTA's); ``calls=("runtime", "driver")`` also takes driver-API launches (``cuLaunchKernel``,
as CUDA graphs and some libraries issue them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers.core.trace import Trace

__all__ = ["launches", "gpu_work", "LAUNCH_COLUMNS"]

#: Columns ``launches`` adds: the launching call's start and end (ns), process, thread and name.
LAUNCH_COLUMNS = ("launch_ts_ns", "launch_end_ns", "launch_pid", "launch_tid", "launch_name")


def gpu_work(trace: Trace) -> pd.DataFrame:
    """``trace.gpu_events()`` (kernels, memcpys, memsets), selected once per trace and shared: read-only."""
    return trace.derived(("timeline.launches", "gpu_work"), trace.gpu_events)


def launches(trace: Trace, gpu: pd.DataFrame | None = None, *,
             calls: tuple[str, ...] = ("runtime",)) -> pd.DataFrame:
    """GPU work joined with its launching call: ``launch_ts_ns``/``launch_end_ns`` (ns), pid, tid, name."""
    gpu = gpu_work(trace) if gpu is None else gpu
    ev = trace.events
    rt = ev[ev["kind"].isin(calls) & (ev["correlation"] >= 0)]
    rt = rt.drop_duplicates("correlation", keep="first")
    corr = gpu["correlation"].to_numpy()
    pos = pd.Index(rt["correlation"].to_numpy()).get_indexer(corr)
    found = (pos >= 0) & (corr >= 0)
    at = np.maximum(pos, 0)

    def column(values: np.ndarray, missing) -> np.ndarray:
        return np.where(found, values[at], missing) if values.size else np.full(len(gpu), missing)

    rts = rt["ts_ns"].to_numpy(np.int64)
    out = gpu.copy()
    out["launch_ts_ns"] = column(rts, -1).astype(np.int64)
    out["launch_end_ns"] = column(rts + rt["dur_ns"].to_numpy(np.int64), -1).astype(np.int64)
    out["launch_pid"] = column(rt["pid"].to_numpy(np.int64), -1).astype(np.int64)
    out["launch_tid"] = column(rt["tid"].to_numpy(np.int64), -1).astype(np.int64)
    names = rt["name"].iloc[at].astype(str).to_numpy(object) if len(rt) else np.full(len(gpu), "", object)
    out["launch_name"] = np.where(found, names, "").astype(object)
    return out
