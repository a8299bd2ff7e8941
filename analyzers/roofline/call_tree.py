"""The operator call tree of each CPU thread, the op each runtime call was made from, and its outermost operator.

On every thread the ``cpu_op`` events nest: ``aten::linear`` encloses ``aten::addmm``, which encloses
the ``cudaLaunchKernel`` of its GEMM. Nesting is ``timeline.nesting``'s, per (pid, tid): an op's
parent is the innermost op containing it; a runtime call's launcher is the innermost op containing
its start. A runtime call's *label* is the outermost named operator (``ns::op``, not autograd
machinery or a ``ProfilerStep``) around it: it names GPU work that no roofline point owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from torchscope.analyzers.core.trace import name_mask
from torchscope.analyzers.timeline.nesting import enclosing, outermost, parents

__all__ = ["CallTree", "call_tree", "launch_labels"]


@dataclass(frozen=True)
class CallTree:
    """Parents of the ops of a trace, the innermost op around each runtime call, and a parents-first order."""

    #: Per op (position in the ``ops`` frame): position of the innermost op containing it, -1 at a root.
    parent: np.ndarray
    #: Per runtime call (position in the ``runtime`` frame): the innermost op containing it, -1 if none.
    launcher: np.ndarray
    #: The ops the tree is of (for ``preorder``, worked out only when asked for).
    ops: pd.DataFrame = field(repr=False, compare=False)

    @cached_property
    def preorder(self) -> np.ndarray:
        """Op positions ordered by (pid, tid, start, longer first): every parent before its children."""
        ops = self.ops
        ts = ops["ts_ns"].to_numpy(np.int64)
        return np.lexsort((np.arange(ts.size), -ops["dur_ns"].to_numpy(np.int64), ts, ops["tid"].to_numpy(np.int64),
                           ops["pid"].to_numpy(np.int64)))


def call_tree(ops: pd.DataFrame, runtime: pd.DataFrame) -> CallTree:
    """Call tree of ``ops`` (cpu_op events, ts_ns/dur_ns in ns) per (pid, tid), with the op around each runtime call."""
    parent = parents(ops)
    return CallTree(parent=parent, launcher=enclosing(runtime, ops, span_parents=parent), ops=ops)


def _is_operator_name(name: str) -> bool:
    """A named operator ("ns::op"), not autograd machinery or a step annotation."""
    return "::" in name and not name.startswith("autograd::") and not name.startswith("ProfilerStep")


def launch_labels(ops: pd.DataFrame, runtime: pd.DataFrame) -> np.ndarray:
    """Per runtime call: the outermost named operator on its thread around it, None when there is none."""
    named = ops[name_mask(ops["name"], lambda names: names.map(_is_operator_name).astype(bool))]
    top = named[outermost(named)]
    # Outermost spans contain none of each other: every parent is -1.
    pos = enclosing(runtime, top, span_parents=np.full(len(top), -1, np.int64))
    names = top["name"]
    if isinstance(names.dtype, pd.CategoricalDtype):  # str per category, a missing name as astype(str) leaves it
        top_names = np.append(names.cat.categories.astype(str).to_numpy(dtype=object), np.nan)[names.cat.codes.to_numpy()]
    else:
        top_names = names.astype(str).to_numpy(dtype=object)
    out = np.full(len(runtime), None, dtype=object)
    found = pos >= 0
    out[found] = top_names[pos[found]]
    return out
