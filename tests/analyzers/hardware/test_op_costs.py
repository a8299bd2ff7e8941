"""Tests for analyzers/hardware/op_costs.py: FLOPs and bytes of one operator call from its recorded shapes."""

from __future__ import annotations

import numpy as np
import pytest

from torchscope.analyzers.hardware.op_costs import estimate_op_cost


def test_gemm_models():
    mm = estimate_op_cost("aten::mm", [[64, 128], [128, 32]], ["c10::BFloat16", "c10::BFloat16"])
    assert mm.category == "gemm" and mm.dtype == "bf16"
    assert mm.flops == 2 * 64 * 128 * 32
    assert mm.bytes == (64 * 128 + 128 * 32 + 64 * 32) * 2
    addmm = estimate_op_cost("aten::addmm", [[32], [64, 128], [128, 32], [], []],
                             ["float", "float", "float", "Scalar", "Scalar"])
    assert addmm.flops == 2 * 64 * 128 * 32 and addmm.dtype == "fp32"
    bmm = estimate_op_cost("aten::bmm", [[8, 64, 32], [8, 32, 16]], ["float", "float"])
    assert bmm.flops == 2 * 8 * 64 * 32 * 16
    # matmul broadcasts a batched activation against a 2-D weight
    mt = estimate_op_cost("aten::matmul", [[4, 10, 64], [64, 48]], ["float", "float"])
    assert mt.flops == 2 * 40 * 64 * 48
    lin = estimate_op_cost("aten::linear", [[4, 8, 64, 32], [64, 32], [64]], ["float", "float", "float"])
    assert lin.flops == 2 * (4 * 8 * 64) * 32 * 64
    assert "M=2048 K=32 N=64" in lin.detail


def test_conv_model_uses_stride_padding_from_concrete_inputs():
    c = estimate_op_cost(
        "aten::convolution", [[2, 3, 32, 32], [16, 3, 3, 3], [16], [], [], [], [], [], []],
        ["float", "float", "float", "ScalarList", "ScalarList", "ScalarList", "Scalar", "ScalarList", "Scalar"],
        ["", "", "", "[2, 2]", "[1, 1]", "[1, 1]", "False", "[0, 0]", "1"])
    assert c.category == "conv"
    assert c.flops == 2 * 2 * 16 * 16 * 16 * 3 * 9  # output 16x16 at stride 2, padding 1
    # mkldnn_convolution orders padding before stride: same answer
    m = estimate_op_cost("aten::mkldnn_convolution", [[2, 3, 32, 32], [16, 3, 3, 3], [16], [], [], [], []],
                         ["float"] * 3 + ["ScalarList"] * 3 + ["Scalar"], ["", "", "", "[1, 1]", "[2, 2]", "[1, 1]", "1"])
    assert m.flops == c.flops
    # depthwise: groups = channels
    d = estimate_op_cost("aten::conv2d", [[1, 8, 10, 10], [8, 1, 3, 3], [], [], [], [], []],
                         ["float", "float", "", "ScalarList", "ScalarList", "ScalarList", "Scalar"],
                         ["", "", "", "[1, 1]", "[1, 1]", "[1, 1]", "8"])
    assert d.flops == 2 * 1 * 8 * 100 * 1 * 9


def test_attention_models_layouts_and_causal():
    q = [2, 4, 128, 64]  # B H L E
    full = estimate_op_cost("aten::_scaled_dot_product_flash_attention", [q, q, q, [], [], [], []],
                            ["c10::BFloat16"] * 3 + ["Scalar", "Scalar", "", ""], ["", "", "", "0.", "False", "", ""])
    assert full.category == "attention" and full.flops == 4 * 2 * 4 * 128 * 128 * 64
    causal = estimate_op_cost("aten::_scaled_dot_product_flash_attention", [q, q, q, [], [], [], []],
                              ["c10::BFloat16"] * 3 + ["Scalar", "Scalar", "", ""], ["", "", "", "0.", "True", "", ""])
    assert causal.flops == full.flops / 2
    # _efficient_attention_forward takes B L H E; K/V may have another sequence length
    qb, kb = [2, 128, 4, 64], [2, 256, 4, 64]
    eff = estimate_op_cost("aten::_efficient_attention_forward", [qb, kb, kb], ["c10::Half"] * 3)
    assert eff.flops == 4 * 2 * 4 * 128 * 256 * 64
    # the score matrix is not counted in bytes: fused attention keeps it on chip
    assert full.bytes == 4 * (2 * 4 * 128 * 64) * 2
    bwd = estimate_op_cost("aten::_scaled_dot_product_flash_attention_backward", [q, q, q, q, q],
                           ["c10::BFloat16"] * 5)
    assert bwd.flops == pytest.approx(2.5 * full.flops)


def test_elementwise_norm_softmax_and_copies():
    add = estimate_op_cost("aten::add", [[16, 1, 32], [1, 8, 32], []], ["float", "float", "Scalar"])
    assert add.category == "elementwise" and add.flops == 16 * 8 * 32
    assert add.bytes == (16 * 32 + 8 * 32 + 16 * 8 * 32) * 4
    inplace = estimate_op_cost("aten::mul_", [[100], [100]], ["c10::Half", "c10::Half"])
    assert inplace.flops == 100 and inplace.bytes == 2 * 100 * 2  # no separate output write
    gelu = estimate_op_cost("aten::gelu", [[10, 10], []], ["float", ""])
    assert gelu.flops == 8 * 100
    ln = estimate_op_cost("aten::native_layer_norm", [[4, 32], [], [32], [32], []],
                          ["float", "ScalarList", "float", "float", "Scalar"])
    assert ln.category == "norm" and ln.flops == 5 * 128
    sm = estimate_op_cost("aten::_softmax", [[4, 8, 8], [], []], ["float", "Scalar", "Scalar"])
    assert sm.category == "softmax" and sm.flops == 5 * 256
    cp = estimate_op_cost("aten::copy_", [[10, 10], [10, 10], []], ["c10::BFloat16", "float", "Scalar"])
    assert cp.category == "memory" and cp.flops == 0 and cp.bytes == 100 * 2 + 100 * 4
    assert estimate_op_cost("aten::frobnicate", [[3]], ["float"]) is None
    assert estimate_op_cost("aten::mm", [[], []], ["", ""]) is None


def test_has_cost_model_agrees_with_estimate_op_cost() -> None:
    # Every op estimate_op_cost models is one has_cost_model names, so callers may skip the others' shapes.
    from torchscope.analyzers.hardware.op_costs import has_cost_model
    dims = [[4, 8], [8, 16]]
    types = ["float", "float"]
    for name in ("aten::mm", "aten::add", "aten::add_", "aten::relu", "aten::softmax", "aten::sum", "aten::copy_",
                 "aten::layer_norm", "aten::view", "aten::empty", "aten::foo", "custom::mm", "mm"):
        if estimate_op_cost(name, dims, types) is not None:
            assert has_cost_model(name), name
    assert has_cost_model("aten::mm") and not has_cost_model("aten::empty") and not has_cost_model("custom::mm")


def test_op_shapes_reads_raw_args_once_per_distinct_shape_and_as_dicts_alike():
    from torchscope.analyzers.hardware.op_costs import op_shapes
    raw = [b'{"External id": 1, "Input Dims": [[4, 8], [8]], "Input type": ["float", "float"], "flops": 64}',
           b'{"External id": 2, "Input Dims": [[4, 8], [8]], "Input type": ["float", "float"]}',
           b'{"External id": 3, "Input Dims": [[2]], "Concrete Inputs": ["", "1"]}',
           b'{"External id": 4}']
    got = op_shapes(raw)
    assert got.code.tolist() == [0, 0, 1, 2]
    assert got.distinct == [([[4, 8], [8]], ["float", "float"], None), ([[2]], None, ["", "1"]), (None, None, None)]
    assert got.flops == [64, None, None, None]
    # Dicts (a frame built by hand) and raw text the strict decoder refuses (NaN) give the same values.
    import json
    for other in ([json.loads(r) for r in raw] + [None], raw + [b'{"Input Dims": [[1]], "x": NaN}']):
        alt = op_shapes(other)
        assert [alt.distinct[c] if c >= 0 else None for c in alt.code[:4]] == [got.distinct[c] for c in got.code]
        assert alt.flops[:4] == got.flops
    assert op_shapes([None]).code.tolist() == [-1]


def test_trace_op_shapes_reads_each_event_once_and_answers_as_op_shapes():
    import pandas as pd

    from torchscope.analyzers.core.trace import Trace, TraceMeta
    from torchscope.analyzers.hardware.op_costs import op_shapes, trace_op_shapes
    raw = [b'{"Input Dims": [[%d, 8]], "Input type": ["float"], "External id": %d}' % (i % 3, i) for i in range(9)]
    raw[4] = b'{"External id": 4}'
    trace = Trace(events=pd.DataFrame({"args": pd.Series(raw, dtype=object)}), counters=pd.DataFrame(),
                  flows=pd.DataFrame(), meta=TraceMeta(path="synthetic"))
    whole = op_shapes(raw)
    first = trace_op_shapes(trace, np.array([7, 1, 4]))
    second = trace_op_shapes(trace, np.arange(9))
    for got, rows in ((first, [7, 1, 4]), (second, list(range(9)))):
        assert [got.distinct[c] for c in got.code] == [whole.distinct[whole.code[r]] for r in rows]
    # Rows read by the first call keep their code; the same shape met again shares it.
    assert second.code[[7, 1, 4]].tolist() == first.code.tolist()
    assert second.code[1] == second.code[7] and len(set(second.code.tolist())) == 4
