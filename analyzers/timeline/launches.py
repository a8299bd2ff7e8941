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

__all__ = ["launches", "launch_columns", "gpu_work", "LAUNCH_COLUMNS"]

#: Columns ``launches`` adds: the launching call's start and end (ns), process, thread and name.
LAUNCH_COLUMNS = ("launch_ts_ns", "launch_end_ns", "launch_pid", "launch_tid", "launch_name")


def gpu_work(trace: Trace) -> pd.DataFrame:
    """``trace.gpu_events()`` (kernels, memcpys, memsets), selected once per trace and shared: read-only."""
    return trace.derived(("timeline.launches", "gpu_work"), trace.gpu_events)


def launches(trace: Trace, gpu: pd.DataFrame | None = None, *,
             calls: tuple[str, ...] = ("runtime",)) -> pd.DataFrame:
    """GPU work joined with its launching call: ``launch_ts_ns``/``launch_end_ns`` (ns), pid, tid, name."""
    gpu = gpu_work(trace) if gpu is None else gpu
    out = gpu.copy()
    for col, values in launch_columns(trace, gpu["correlation"].to_numpy(), calls=calls).items():
        out[col] = values
    return out


def launch_columns(trace: Trace, correlation: np.ndarray, *, calls: tuple[str, ...] = ("runtime",),
                   names: bool = True) -> dict[str, np.ndarray]:
    """``launches``' columns (``LAUNCH_COLUMNS``; without ``launch_name`` when not ``names``) for GPU work with
    these correlation ids, as arrays: for callers that need the join, not a copy of the frame."""
    index, rts, rte, rpid, rtid, rnames = _launch_calls(trace, tuple(calls))
    corr = np.asarray(correlation)
    pos = index.get_indexer(corr)
    found = (pos >= 0) & (corr >= 0)
    at = np.maximum(pos, 0)

    def column(values: np.ndarray, missing) -> np.ndarray:
        return np.where(found, values[at], missing) if values.size else np.full(corr.size, missing)

    out = {"launch_ts_ns": column(rts, -1).astype(np.int64), "launch_end_ns": column(rte, -1).astype(np.int64),
           "launch_pid": column(rpid, -1).astype(np.int64), "launch_tid": column(rtid, -1).astype(np.int64)}
    if names:
        name = rnames[at] if rnames.size else np.full(corr.size, "", object)
        out["launch_name"] = np.where(found, name, "").astype(object)
    return out


def _launch_calls(trace: Trace, calls: tuple[str, ...]) -> tuple:
    """The launching calls of ``calls`` kinds, first per correlation id, once per trace: (correlation index,
    start ns, end ns, pid, tid, name as str)."""
    # Kinds the trace has none of select nothing: ("runtime", "driver") on a trace without driver calls is
    # the same join as ("runtime",), built once.
    present = trace.derived(("timeline.launches", "kinds"), lambda: _kinds(trace.events["kind"]))
    calls = tuple(k for k in calls if k in present)

    def build() -> tuple:
        ev = trace.events
        corr_all = ev["correlation"].to_numpy()
        rows = np.flatnonzero(ev["kind"].isin(calls).to_numpy() & (corr_all >= 0))
        # The first call of each correlation id, in trace order (as drop_duplicates keeps them).
        _, first = np.unique(corr_all[rows], return_index=True)
        rows = rows[np.sort(first)]
        rts = ev["ts_ns"].to_numpy(np.int64)[rows]
        names = ev["name"]
        if isinstance(names.dtype, pd.CategoricalDtype):  # str per category, missing stays missing (astype(str))
            cats = np.append(names.cat.categories.astype(str).to_numpy(dtype=object), np.nan)
            name_str = cats[names.cat.codes.to_numpy()[rows]]
        else:
            name_str = names.iloc[rows].astype(str).to_numpy(object)
        return (pd.Index(corr_all[rows]), rts, rts + ev["dur_ns"].to_numpy(np.int64)[rows],
                ev["pid"].to_numpy(np.int64)[rows], ev["tid"].to_numpy(np.int64)[rows], name_str)
    return trace.derived(("timeline.launches", "calls", calls), build)


def _kinds(kind: pd.Series) -> frozenset:
    """The kinds a kind column holds (counted over a categorical's codes)."""
    if isinstance(kind.dtype, pd.CategoricalDtype):
        codes = kind.cat.codes.to_numpy()
        used = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(kind.cat.categories)))
        return frozenset(kind.cat.categories[used].tolist())
    return frozenset(kind.dropna().astype(str).unique().tolist())
