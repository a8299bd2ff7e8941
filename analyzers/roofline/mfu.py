"""Model FLOPs utilisation per step: counted FLOPs and the dense-transformer estimate, against the device peak.

Steps are ``timeline.steps.step_windows`` (each ``ProfilerStep`` until the next one starts, the last
to its end). Without steps the trace is one step 0 spanning the measured work: on a CPU trace from
the first point for the points' summed time; on a GPU trace from the first point or GPU event to
the end of the last GPU event.

Counted MFU: FLOPs of the points that start inside the step ÷ step time ÷ the peak of the dtype
carrying most of the matrix FLOPs. Model MFU, when the run reports tokens per step and the
parameter count (manifest ``user_counts`` ``tokens_per_step`` and ``parameters``, or
``model.parameters``; tokens per step also from the ``steps`` stream):
``6 × parameters × tokens ÷ step time ÷ peak`` (forward 2, backward 4 FLOPs per parameter per token).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.hardware.device_specs import DeviceSpec
from torchscope.analyzers.roofline.roofs import dominant_dtype
from torchscope.analyzers.timeline.launches import gpu_work
from torchscope.analyzers.timeline.steps import step_windows

__all__ = ["step_mfu", "MODEL_FLOPS_PER_PARAM_TOKEN"]

#: Training FLOPs per parameter per token of a dense transformer: forward 2, backward 4.
MODEL_FLOPS_PER_PARAM_TOKEN = 6.0

_COLUMNS = ["step", "ts_ns", "dur_ns", "flops", "achieved_flops_per_s", "mfu", "tokens", "model_flops", "model_mfu"]


def _steps(trace: Trace, points: pd.DataFrame) -> pd.DataFrame:
    """Step windows as (step, ts_ns, dur_ns); one step 0 over the measured work when the trace has none."""
    windows = step_windows(trace)
    if not windows.empty:
        return pd.DataFrame({"step": windows["step"], "ts_ns": windows["start_ns"],
                             "dur_ns": windows["end_ns"] - windows["start_ns"]})
    if points.empty:
        return pd.DataFrame(columns=["step", "ts_ns", "dur_ns"])
    lo = int(points["ts_ns"].min())
    gpu = gpu_work(trace)
    if gpu.empty:
        hi = lo + int(max(points["time_ns"].sum(), 1))
    else:  # the GPU's span, widened to the first launching operator
        lo, hi = min(lo, int(gpu["ts_ns"].min())), int((gpu["ts_ns"] + gpu["dur_ns"]).max())
    return pd.DataFrame({"step": [0], "ts_ns": [lo], "dur_ns": [hi - lo]})


def _model_counts(trace: Trace) -> tuple[float | None, float | None, dict[int, float]]:
    """(parameters, default tokens per step, tokens per step number from the steps stream)."""
    manifest = trace.meta.manifest or {}
    counts = manifest.get("user_counts") or {}
    params = counts.get("parameters") if isinstance(counts, Mapping) else None
    if not params and isinstance(manifest.get("model"), Mapping):
        params = manifest["model"].get("parameters")
    default_tokens = counts.get("tokens_per_step") if isinstance(counts, Mapping) else None
    tokens_by_step: dict[int, float] = {}
    stream = trace.streams.get("steps") if trace.streams else None
    if stream is not None and "tokens" in stream and "step" in stream:
        for s, tok in zip(stream["step"], stream["tokens"]):
            if pd.notna(tok) and pd.notna(s):
                tokens_by_step[int(s)] = float(tok)
    return params, default_tokens, tokens_by_step


def step_mfu(trace: Trace, points: pd.DataFrame, spec: DeviceSpec | None, dominant: str | None = None) -> pd.DataFrame:
    """Per step: time (ns), counted FLOPs, achieved FLOP/s, MFU (counted) and MFU from 6·params·tokens.

    ``dominant``: ``roofs.dominant_dtype(points, spec)`` when the caller already has it."""
    steps = _steps(trace, points)
    if steps.empty:
        return pd.DataFrame(columns=_COLUMNS)
    if spec is not None and not points.empty:
        peak = spec.peak(dominant if dominant is not None else dominant_dtype(points, spec))
    else:
        peak = math.nan
    params, default_tokens, tokens_by_step = _model_counts(trace)
    p_ts = points["ts_ns"].to_numpy() if not points.empty else np.empty(0, np.int64)
    p_fl = points["flops"].to_numpy(dtype=float) if not points.empty else np.empty(0)
    rows = []
    for step, t0, dur in zip(steps["step"], steps["ts_ns"], steps["dur_ns"]):
        t0, dur = int(t0), int(dur)
        inside = (p_ts >= t0) & (p_ts < t0 + dur)
        fl = float(p_fl[inside].sum())
        rate = fl / (dur / 1e9) if dur > 0 else math.nan
        tokens = tokens_by_step.get(int(step), default_tokens)
        model_flops = MODEL_FLOPS_PER_PARAM_TOKEN * float(params) * float(tokens) if params and tokens else math.nan
        rows.append({
            "step": int(step), "ts_ns": t0, "dur_ns": dur, "flops": fl, "achieved_flops_per_s": rate,
            "mfu": rate / peak if peak and peak > 0 else math.nan,
            "tokens": float(tokens) if tokens else math.nan, "model_flops": model_flops,
            "model_mfu": (model_flops / (dur / 1e9) / peak) if dur > 0 and peak > 0 else math.nan,
        })
    return pd.DataFrame(rows, columns=_COLUMNS)
