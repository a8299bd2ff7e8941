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
    # The first runtime call of each correlation id is the launch; each GPU event finds its launch's position.
    first = np.flatnonzero(~pd.Index(corr).duplicated(keep="first"))
    kcorr = gpu["correlation"].to_numpy()
    at = pd.Index(corr[first]).get_indexer(kcorr)
    found = at >= 0
    launch = np.where(found, first[np.maximum(at, 0)], 0) if first.size else np.zeros(kcorr.size, np.int64)
    op_of_call = np.where(launcher >= 0, owner[np.maximum(launcher, 0)], -1)
    kernel_owner = np.where(found, op_of_call[launch], -1).astype(np.int64) if first.size \
        else np.full(kcorr.size, -1, np.int64)
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
    label = np.where(found, np.asarray(labels, dtype=object)[launch], None) if first.size \
        else np.full(kcorr.size, None, dtype=object)
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
    dur = gpu["dur_ns"].to_numpy()[loose].astype(np.int64)
    ts = gpu["ts_ns"].to_numpy()[loose].astype(np.int64)
    # One row per (label, category), in the order first met (as a groupby with sort=False lists them).
    index: dict = {}
    names = [n if n == n else _MISSING for n in label.tolist()]  # every missing name in one group, as groupby does
    group = np.fromiter((index.setdefault(key, len(index)) for key in zip(names, category.tolist())),
                        dtype=np.int64, count=label.size)
    time_ns = np.zeros(len(index), np.int64)
    np.add.at(time_ns, group, dur)
    kernels = np.bincount(group, minlength=len(index))
    first_ts = np.zeros(len(index), np.int64)
    first_ts[group[::-1]] = ts[::-1]  # the first row of each group written last
    return [{"name": np.nan if name is _MISSING else name, "category": cat, "time_ns": int(t), "kernels": int(k),
             "ts_ns": int(f)} for (name, cat), t, k, f in zip(index, time_ns.tolist(), kernels.tolist(), first_ts.tolist())]


_MISSING = object()
