"""The launch<->kernel join: each GPU event gets its runtime call's start and end, or -1 without one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers.core.trace import Trace, TraceMeta
from torchscope.analyzers.timeline.launches import launches


def test_kernels_join_the_first_runtime_call_of_their_correlation():
    rows = [  # name, kind, ts, dur, correlation
        ("cudaLaunchKernel", "runtime", 100, 5, 1), ("cudaLaunchKernel", "runtime", 200, 7, 2),
        ("cudaLaunchKernel", "runtime", 900, 1, 2), ("k1", "kernel", 110, 50, 1), ("k2", "kernel", 210, 50, 2),
        ("k3", "kernel", 300, 10, 3), ("m", "memcpy", 400, 10, -1),
    ]
    events = pd.DataFrame({
        "name": pd.Categorical([r[0] for r in rows]), "kind": pd.Categorical([r[1] for r in rows]),
        "ts_ns": np.array([r[2] for r in rows], np.int64), "dur_ns": np.array([r[3] for r in rows], np.int64),
        "correlation": np.array([r[4] for r in rows], np.int64),
        "pid": np.zeros(len(rows), np.int64), "tid": np.zeros(len(rows), np.int64),
    })
    trace = Trace(events=events, counters=pd.DataFrame(), flows=pd.DataFrame(), meta=TraceMeta(path="t"))
    out = launches(trace, events[events["kind"].isin(("kernel", "memcpy"))])
    assert out["name"].astype(str).tolist() == ["k1", "k2", "k3", "m"]
    assert out["launch_ts_ns"].tolist() == [100, 200, -1, -1]
    assert out["launch_end_ns"].tolist() == [105, 207, -1, -1]
    assert out["launch_name"].tolist() == ["cudaLaunchKernel", "cudaLaunchKernel", "", ""]
    assert out["launch_tid"].tolist() == [0, 0, -1, -1]


def test_driver_launches_join_only_when_asked_for():
    rows = [("cuLaunchKernel", "driver", 100, 4, 5), ("graph_kernel", "kernel", 120, 30, 5)]
    events = pd.DataFrame({
        "name": pd.Categorical([r[0] for r in rows]), "kind": pd.Categorical([r[1] for r in rows]),
        "ts_ns": np.array([r[2] for r in rows], np.int64), "dur_ns": np.array([r[3] for r in rows], np.int64),
        "correlation": np.array([r[4] for r in rows], np.int64),
        "pid": np.zeros(2, np.int64), "tid": np.zeros(2, np.int64),
    })
    trace = Trace(events=events, counters=pd.DataFrame(), flows=pd.DataFrame(), meta=TraceMeta(path="t"))
    gpu = events[events["kind"] == "kernel"]
    assert launches(trace, gpu)["launch_ts_ns"].tolist() == [-1]  # HTA's join: runtime calls only
    both = launches(trace, gpu, calls=("runtime", "driver"))
    assert both["launch_ts_ns"].tolist() == [100] and both["launch_name"].tolist() == ["cuLaunchKernel"]
