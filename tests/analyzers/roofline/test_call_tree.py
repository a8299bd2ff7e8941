"""Tests for analyzers/roofline/call_tree.py: parents per thread, the op around each launch, its outermost operator."""

from __future__ import annotations

import pandas as pd

from torchscope.analyzers.roofline.call_tree import call_tree, launch_labels


def _frame(rows):
    return pd.DataFrame(rows, columns=["name", "pid", "tid", "ts_ns", "dur_ns"])


def test_parents_launchers_and_labels():
    ops = _frame([
        ("autograd::engine::evaluate_function", 1, 1, 0, 100),
        ("aten::linear", 1, 1, 10, 80),
        ("aten::addmm", 1, 1, 20, 50),
        ("aten::mul", 1, 2, 20, 50),  # another thread: never a parent of thread 1's ops
    ])
    runtime = _frame([("cudaLaunchKernel", 1, 1, 30, 1), ("cudaLaunchKernel", 1, 2, 30, 1),
                      ("cudaLaunchKernel", 1, 1, 200, 1)])
    tree = call_tree(ops, runtime)
    assert tree.parent.tolist() == [-1, 0, 1, -1]
    assert tree.launcher.tolist() == [2, 3, -1]
    assert list(tree.preorder[:3]) == [0, 1, 2]
    # autograd machinery is not an operator: the outermost named op around the first launch is aten::linear
    assert launch_labels(ops, runtime).tolist() == ["aten::linear", "aten::mul", None]
