"""The launch<->GPU-work join: the runtime call (``cudaLaunchKernel``, ``hipMemcpyAsync``, ...) behind each kernel."""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers.core.trace import Trace

__all__ = ["launches"]


def launches(trace: Trace, gpu: pd.DataFrame | None = None) -> pd.DataFrame:
    """GPU work joined with the runtime call that launched it: ``launch_ts_ns``/``launch_end_ns`` (-1 if none)."""
    gpu = trace.gpu_events() if gpu is None else gpu
    ev = trace.events
    rt = ev[(ev["kind"] == "runtime") & (ev["correlation"] >= 0)]
    rt = rt.drop_duplicates("correlation", keep="first")
    pos = pd.Index(rt["correlation"].to_numpy()).get_indexer(gpu["correlation"].to_numpy())
    found = (pos >= 0) & (gpu["correlation"].to_numpy() >= 0)
    rts = rt["ts_ns"].to_numpy()
    rte = rts + rt["dur_ns"].to_numpy()
    out = gpu.copy()
    out["launch_ts_ns"] = np.where(found, rts[np.maximum(pos, 0)] if rts.size else -1, -1).astype(np.int64)
    out["launch_end_ns"] = np.where(found, rte[np.maximum(pos, 0)] if rte.size else -1, -1).astype(np.int64)
    return out

