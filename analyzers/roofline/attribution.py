"""GPU work -> the roofline point that launched it: the time, kernel count and tensor-core use of each point.

A kernel (or memcpy/memset) is joined to its runtime call by correlation id, the runtime call to the
innermost ``cpu_op`` around it (``call_tree``), and that op to the point owning it. Host<->device
and peer copies run over PCIe/NVLink, not device memory: they are never a point's time. GPU work no
point owns is grouped into "loose" rows by the outermost named operator that launched it (else the
kernel's own name) and a category: transfer, communication or other (time without a cost model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from torchscope.analyzers import kernels as kernel_rules
from torchscope.analyzers.core.trace import Trace, name_mask
from torchscope.analyzers.roofline.call_tree import CallTree

__all__ = ["GpuAttribution", "attribute_gpu_work", "TRANSFER_RE", "UNMODELLED_CATEGORIES"]

#: Copies that move data over PCIe/NVLink (host<->device, peer), not through device memory.
TRANSFER_RE = r"HtoD|DtoH|HtoH|PtoP|H2D|D2H|P2P"
#: Categories of the loose rows: GPU time without a cost model (no intensity, no bound).
UNMODELLED_CATEGORIES = ("other", "communication", "transfer")


@dataclass(frozen=True)
class GpuAttribution:
    """Per op: GPU time (ns), kernels and tensor-core kernels it owns; per GPU event: its owner; loose rows."""

    time_ns: np.ndarray
    kernels: np.ndarray
    tensor_core_kernels: np.ndarray
    #: Per GPU event (row of ``trace.gpu_events()``): position of the owning point's op, -1 if none.
    kernel_owner: np.ndarray
    #: GPU work without a point: one dict per (label, category) with time_ns, kernels, first ts_ns.
    loose: list[dict]


def _first_by_correlation(values: np.ndarray, correlation: np.ndarray) -> pd.Series:
    s = pd.Series(values, index=correlation)
    return s[~s.index.duplicated(keep="first")]


def attribute_gpu_work(gpu: pd.DataFrame, runtime: pd.DataFrame, tree: CallTree, owner: np.ndarray,
                       labels: np.ndarray, *, trace: Trace | None = None) -> GpuAttribution:
    """Charge each GPU event to the point owning the op that launched it; group the rest per label and category.

    ``owner`` is the point owning each op (-1: none); ``labels`` the outermost named operator around
    each runtime call (None: none, ``call_tree.launch_labels``), used to name the loose rows. With the
    ``trace`` the GPU events come from, kernel name rules are its per-trace ones (``kernels.kernel_categories``).
    """
    n_ops = owner.size
    time_ns = np.zeros(n_ops, dtype=np.int64)
    n_kernels = np.zeros(n_ops, dtype=np.int64)
    n_tensor_core = np.zeros(n_ops, dtype=np.int64)
    launcher = tree.launcher
    corr = runtime["correlation"].to_numpy()
    corr_to_op = _first_by_correlation(np.where(launcher >= 0, owner[np.maximum(launcher, 0)], -1), corr)
    corr_to_label = _first_by_correlation(labels, corr)
    kcorr = gpu["correlation"].to_numpy()
    kernel_owner = corr_to_op.reindex(kcorr).fillna(-1).to_numpy().astype(np.int64)
    kinds = gpu["kind"].astype(str).to_numpy() if not isinstance(gpu["kind"].dtype, pd.CategoricalDtype) \
        else gpu["kind"].to_numpy(dtype=object)
    transfer = (kinds == "memcpy") & name_mask(gpu["name"], lambda names: names.str.contains(TRANSFER_RE, regex=True))
    kernel_owner[transfer] = -1
    kdur = gpu["dur_ns"].to_numpy()
    owned = kernel_owner >= 0
    np.add.at(time_ns, kernel_owner[owned], kdur[owned])
    np.add.at(n_kernels, kernel_owner[owned], 1)
    tc = (kernel_rules.is_tensor_core(gpu["name"]) if trace is None
          else kernel_rules.tensor_core_kernels(trace, gpu["name"])).to_numpy(dtype=bool)
    np.add.at(n_tensor_core, kernel_owner[owned], tc[owned].astype(np.int64))
    label = corr_to_label.reindex(kcorr).to_numpy(dtype=object)
    loose = _loose_rows(gpu, kinds, transfer, kernel_owner, label, trace)
    return GpuAttribution(time_ns, n_kernels, n_tensor_core, kernel_owner, loose)


def _loose_rows(gpu: pd.DataFrame, kinds: np.ndarray, transfer: np.ndarray, kernel_owner: np.ndarray,
                launch_label: np.ndarray, trace: Trace | None) -> list[dict]:
    """GPU work with no point, summed per (label, category): time_ns, kernels, first ts_ns."""
    loose = np.nonzero(kernel_owner < 0)[0]
    if loose.size == 0:
        return []
    sub = gpu.iloc[loose]
    kcat = (kernel_rules.category_of(sub["name"], sub["kind"]) if trace is None
            else kernel_rules.kernel_categories(trace, sub)).to_numpy()
    category = np.where(transfer[loose], "transfer",
                        np.where(kcat == kernel_rules.COMMUNICATION, "communication", "other")).astype(object)
    knames = np.asarray(sub["name"].astype(str).to_numpy(dtype=object), dtype=object)
    # Copies are named without their " (Device -> Device)"-style suffix; kernels by their full name.
    own = np.array([n if k == "kernel" else str(n).split(" (")[0] for n, k in zip(knames, kinds[loose])],
                   dtype=object) if knames.size else knames
    label = launch_label[loose]
    named = np.array([isinstance(x, str) for x in label], dtype=bool) & (category != "transfer")
    label = np.where(named, label, own)
    frame = pd.DataFrame({"name": label, "category": category, "dur": gpu["dur_ns"].to_numpy()[loose].astype(np.int64),
                          "ts": gpu["ts_ns"].to_numpy()[loose].astype(np.int64)})
    g = frame.groupby(["name", "category"], sort=False, dropna=False)
    out = pd.DataFrame({"time_ns": g["dur"].sum(), "kernels": g["dur"].size(), "ts_ns": g["ts"].first()})
    return [{"name": name, "category": cat, "time_ns": int(t), "kernels": int(k), "ts_ns": int(ts)}
            for (name, cat), t, k, ts in zip(out.index, out["time_ns"], out["kernels"], out["ts_ns"])]
