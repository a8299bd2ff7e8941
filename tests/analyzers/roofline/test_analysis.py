"""Roofline: point selection, GPU time attribution, bound, MFU, findings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torchscope.analyzers.io.chrome_trace import parse_trace_file
from torchscope.analyzers.core.result import NotApplicable
from torchscope.analyzers.roofline import analysis as roofline
from torchscope.analyzers.roofline import rules
from tests.conftest import require_module

A100 = [{"id": 0, "name": "NVIDIA A100-SXM4-40GB", "totalGlobalMem": 42505273344, "computeMajor": 8,
         "computeMinor": 0, "numSms": 108}]


# ------------------------------------------------------------------------------------ synthetic traces
def _op(name, ts, dur, dims, types, tid=1, concrete=None, ext=0):
    args = {"External id": ext, "Input Dims": dims, "Input type": types}
    if concrete is not None:
        args["Concrete Inputs"] = concrete
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 100, "tid": tid, "ts": ts, "dur": dur, "args": args}


def _launch(ts, corr, tid=1):
    return {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 100, "tid": tid, "ts": ts,
            "dur": 1, "args": {"correlation": corr}}


def _kernel(name, ts, dur, corr):
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": ts, "dur": dur,
            "args": {"correlation": corr, "stream": 7, "device": 0}}


def _write(tmp_path, events, props=A100, name="t.json"):
    path = tmp_path / name
    doc = {"schemaVersion": 1, "traceEvents": events}
    if props is not None:
        doc["deviceProperties"] = props
    path.write_text(json.dumps(doc))
    return path


def _gpu_trace(tmp_path):
    """linear(bf16) → addmm with a 100 µs kernel; then an elementwise chain; then naive attention."""
    M, K, N = 4096, 4096, 4096
    ev = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#0", "pid": 100, "tid": 1, "ts": 0, "dur": 5000},
        _op("aten::linear", 10, 100, [[M, K], [N, K], [N]], ["c10::BFloat16"] * 3),
        _op("aten::t", 11, 2, [[N, K]], ["c10::BFloat16"]),
        _op("aten::addmm", 20, 80, [[N], [M, K], [K, N], [], []], ["c10::BFloat16"] * 3 + ["Scalar"] * 2),
        _launch(30, 1),
        _kernel("sm80_xmma_gemm_bf16bf16_bf16f32", 40, 1000, 1),
    ]
    t = 200
    corr = 2
    for name in ("aten::mul", "aten::add", "aten::gelu", "aten::mul"):  # chain of 4 elementwise ops
        ev += [_op(name, t, 20, [[M, N], [M, N]], ["c10::BFloat16"] * 2), _launch(t + 5, corr),
               _kernel("vectorized_elementwise_kernel", 1100 + corr * 100, 90, corr)]
        t += 30
        corr += 1
    # naive attention: bmm(q, kᵀ) → div → softmax → bmm(p, v)
    B, L, E = 32, 512, 64
    seq = [
        ("aten::bmm", [[B, L, E], [B, E, L]], 50, "gemm"),
        ("aten::div", [[B, L, L], []], 30, "elementwise"),
        ("aten::_softmax", [[B, L, L], [], []], 60, "softmax"),
        ("aten::bmm", [[B, L, L], [B, L, E]], 50, "gemm"),
    ]
    gt = 2000
    for name, dims, kdur, _ in seq:
        types = ["c10::BFloat16"] * len([d for d in dims if d]) + ["Scalar"] * len([d for d in dims if not d])
        ev += [_op(name, t, 20, dims, types), _launch(t + 5, corr), _kernel("k_" + name, gt, kdur, corr)]
        t += 30
        gt += 200
        corr += 1
    return _write(tmp_path, ev)


def test_points_times_and_roofline_on_a_synthetic_gpu_trace(tmp_path):
    trace = parse_trace_file(_gpu_trace(tmp_path))
    res = roofline.analyze(trace)
    assert res.summary["device_key"] == "a100-sxm4-40gb"
    ops = res.table("ops")
    addmm = ops[ops["name"] == "aten::addmm"]
    assert len(addmm) == 1 and not (ops["name"] == "aten::linear").any()  # the inner GEMM is the point
    row = addmm.iloc[0]
    assert row["flops"] == 2 * 4096 ** 3 and row["time_ns"] == 1_000_000
    assert row["achieved_flops_per_s"] == pytest.approx(2 * 4096 ** 3 / 1e-3)
    assert row["bound"] == "compute" and row["peak_dtype"] == "bf16"
    assert row["efficiency"] == pytest.approx(2 * 4096 ** 3 / 1e-3 / 312e12)
    assert not (ops["name"] == "aten::t").any()  # a view launches nothing
    mul = ops[ops["name"] == "aten::mul"].iloc[0]
    assert mul["bound"] == "memory"
    assert mul["efficiency"] == pytest.approx(mul["bytes"] / (mul["time_ns"] / 1e9) / 1555e9)
    # every kernel's time lands in exactly one row
    assert ops["time_ns"].sum() == trace.gpu_events()["dur_ns"].sum()
    roofs = res.table("roofs")
    bf16 = roofs[roofs["dtype"] == "bf16"].iloc[0]
    assert bf16["ridge_flop_per_byte"] == pytest.approx(312e12 / 1555e9)
    steps = res.table("steps")
    assert len(steps) == 1 and steps["mfu"].iloc[0] == pytest.approx(
        ops["flops"].sum() / 5e-3 / 312e12, rel=1e-6)
    ids = {f.id for f in res.findings}
    assert "roofline.fuse_elementwise" in ids
    assert "roofline.fused_attention" in ids
    fa = next(f for f in res.findings if f.id == "roofline.fused_attention")
    assert fa.evidence["occurrences"] == 1 and fa.evidence["score_matrix_ops_time_ns"] == 90_000
    assert 0 < fa.gain_fraction < 1


def test_fused_sdpa_is_one_attention_point_and_no_naive_attention_finding(tmp_path):
    q = [8, 16, 1024, 64]
    ev = [
        _op("aten::scaled_dot_product_attention", 0, 100, [q, q, q, [], [], [], [], []],
            ["c10::BFloat16"] * 3 + ["", "Scalar", "Scalar", "", "Scalar"], concrete=["", "", "", "", "0.", "True", "", "False"]),
        _op("aten::_scaled_dot_product_flash_attention", 5, 90, [q, q, q, [], [], [], []],
            ["c10::BFloat16"] * 3 + ["Scalar", "Scalar", "", ""], concrete=["", "", "", "0.", "True", "", ""]),
        _launch(10, 1), _kernel("flash_fwd_kernel", 20, 500, 1),
    ]
    res = roofline.analyze(parse_trace_file(_write(tmp_path, ev)))
    ops = res.table("ops")
    assert list(ops["name"]) == ["aten::_scaled_dot_product_flash_attention"]
    assert ops["flops"].iloc[0] == 4 * 8 * 16 * 1024 * 1024 * 64 / 2  # causal
    assert ops["bound"].iloc[0] == "compute"
    assert "roofline.fused_attention" not in {f.id for f in res.findings}


def test_fp32_gemms_raise_mixed_precision_and_misaligned_low_efficiency(tmp_path):
    M, K, N = 4097, 4097, 4097  # odd sizes: no tensor-core friendly tiles
    ev = [_op("aten::mm", 0, 50, [[M, K], [K, N]], ["float", "float"]), _launch(5, 1),
          _kernel("volta_sgemm_128x64_nn", 10, 20_000, 1)]  # 20 ms: ~6.9 TFLOP/s of 19.5 → 35 %
    res = roofline.analyze(parse_trace_file(_write(tmp_path, ev)))
    ids = {f.id: f for f in res.findings}
    assert "roofline.mixed_precision" in ids and "roofline.gemm_efficiency" in ids
    eff = ids["roofline.gemm_efficiency"]
    assert "M=4097 K=4097 N=4097" in eff.evidence["misaligned_shapes"]
    assert eff.gain_fraction == pytest.approx(1 - res.table("ops")["efficiency"].iloc[0] / rules.GEMM_TARGET_EFFICIENCY)


def test_fp32_gemm_on_tensor_core_kernels_is_held_to_the_tf32_roof(tmp_path):
    ev = [_op("aten::mm", 0, 50, [[4096, 4096], [4096, 4096]], ["float", "float"]), _launch(5, 1),
          _kernel("ampere_tf32_s1688gemm_tf32_128x128_32x3_nn", 10, 2_000, 1)]
    res = roofline.analyze(parse_trace_file(_write(tmp_path, ev)))
    row = res.table("ops").iloc[0]
    assert row["tensor_core"] and row["peak_dtype"] == "tf32" and row["peak_flops_per_s"] == 156e12
    mp = next(f for f in res.findings if f.id == "roofline.mixed_precision")
    assert mp.evidence["tf32_time_ns"] == 2_000_000 and "allow_tf32" not in mp.recommendation


def test_small_memory_bound_gemms_suggest_a_larger_batch(tmp_path):
    ev = []
    for i in range(4):  # batch 4 against a 4096x4096 weight: intensity ≈ 4 FLOP/byte in bf16
        ev += [_op("aten::mm", i * 100, 50, [[4, 4096], [4096, 4096]], ["c10::BFloat16"] * 2), _launch(i * 100 + 5, i),
               _kernel("gemv_bf16", 1000 + i * 100, 40, i)]
    res = roofline.analyze(parse_trace_file(_write(tmp_path, ev)))
    assert set(res.table("ops")["bound"]) == {"memory"}
    assert "roofline.larger_batch" in {f.id for f in res.findings}


def test_cpu_trace_uses_host_roofline_from_manifest_and_op_durations(tmp_path):
    q = [4, 8, 64, 32]
    ev = [_op("aten::_scaled_dot_product_flash_attention_for_cpu", 0, 1000, [q, q, q, [], [], [], []],
              ["float"] * 3 + ["Scalar", "Scalar", "", ""], concrete=["", "", "", "0.", "False", "", ""]),
          _op("aten::add", 2000, 10, [[1000], [1000]], ["float", "float"])]
    ev[0]["args"]["flops"] = 0  # what the profiler reports for CPU attention: the blind spot
    manifest = {"host_roofline": {"peak_flops_per_s": {"fp32": 1e11}, "mem_bw_bytes_per_s": 1e10}}
    trace = parse_trace_file(_write(tmp_path, ev, props=None), manifest=manifest)
    res = roofline.analyze(trace)
    assert res.summary["spec_measured"] is True
    ops = res.table("ops").set_index("name")
    sdpa = ops.loc["aten::_scaled_dot_product_flash_attention_for_cpu"]
    assert sdpa["flops"] == 4 * 4 * 8 * 64 * 64 * 32 and sdpa["time_ns"] == 1_000_000
    assert sdpa["efficiency"] == pytest.approx(sdpa["flops"] / 1e-3 / 1e11)
    assert ops.loc["aten::add", "bound"] == "memory"


def test_profiler_flops_win_and_copies_inside_a_gemm_belong_to_it(tmp_path):
    ev = [_op("aten::addmm", 0, 1000, [[64], [256, 128], [128, 64], [], []], ["float"] * 3 + ["Scalar"] * 2),
          _op("aten::copy_", 10, 50, [[256, 64], [256, 64], []], ["float", "float", "Scalar"]),  # bias broadcast
          _op("aten::mul", 2000, 100, [[4096], [4096]], ["float", "float"])]
    ev[2]["args"]["flops"] = 12345  # as written by with_flops=True
    manifest = {"host_roofline": {"peak_flops": {"fp32": 1e11}, "mem_bandwidth_bytes_per_s": 1e10}}
    ops = roofline.analyze(parse_trace_file(_write(tmp_path, ev, props=None), manifest=manifest)).table("ops")
    assert set(ops["name"]) == {"aten::addmm", "aten::mul"}
    addmm = ops.set_index("name").loc["aten::addmm"]
    assert addmm["time_ns"] == 1_000_000 and addmm["flops"] == 2 * 256 * 128 * 64
    mul = ops.set_index("name").loc["aten::mul"]
    assert mul["flops"] == 12345 and mul["flops_source"] == "profiler"


def test_model_mfu_from_user_counts(tmp_path):
    ev = [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "pid": 100, "tid": 1, "ts": 0, "dur": 1000},
          _op("aten::mm", 10, 50, [[1024, 1024], [1024, 1024]], ["c10::BFloat16"] * 2), _launch(20, 1),
          _kernel("gemm", 30, 100, 1)]
    manifest = {"user_counts": {"tokens_per_step": 2048, "parameters": 1_000_000}}
    trace = parse_trace_file(_write(tmp_path, ev), manifest=manifest)
    steps = roofline.analyze(trace).table("steps")
    assert steps["model_flops"].iloc[0] == 6 * 1_000_000 * 2048
    assert steps["model_mfu"].iloc[0] == pytest.approx(6 * 1e6 * 2048 / 1e-3 / 312e12)


def test_no_shapes_is_not_applicable(tmp_path):
    ev = [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 0, "dur": 5, "args": {}}]
    with pytest.raises(NotApplicable, match="record_shapes"):
        roofline.analyze(parse_trace_file(_write(tmp_path, ev)))


# ------------------------------------------------------------------------------------ real traces
@pytest.mark.slow
def test_shared_a100_trace_roofline(shared_traces):
    from tests.analyzers.synthetic_kineto import load_shared

    trace = load_shared(str(shared_traces), "diff_control_a100.json.gz")
    res = roofline.analyze(trace)
    ops = res.table("ops")
    gemm = ops[ops["category"] == "gemm"]
    assert len(gemm) > 10 and (gemm["flops"] > 0).all()
    # spot-check one bmm row against its recorded shapes
    bmm = gemm[gemm["detail"] == "B=1024 M=647 K=96 N=30"].iloc[0]
    assert bmm["flops"] == bmm["calls"] * 2 * 1024 * 647 * 96 * 30
    # time adds up: every GPU event is in exactly one row
    assert ops["time_ns"].sum() == trace.gpu_events()["dur_ns"].sum()
    assert res.table("kernel_categories")["time_ns"].sum() == trace.gpu_events()["dur_ns"].sum()
    # estimates are physical: time-weighted efficiency of modelled rows stays below the roof
    modelled = ops[ops["efficiency"].notna()]
    assert np.average(modelled["efficiency"], weights=modelled["time_ns"]) < 1.0
    steps = res.table("steps")
    assert len(steps) >= 3 and ((steps["mfu"] > 0) & (steps["mfu"] < 1)).all()
    # this 2022 job ran its FP32 GEMMs on TF32 tensor cores (cutlass ..._tensorop_s1688gemm kernels)
    assert gemm["tensor_core"].mean() > 0.5
    assert res.summary["dominant_dtype"] == "tf32"
    assert res.summary["ridge_flop_per_byte"] == pytest.approx(156e12 / 1555e9)


@pytest.mark.slow
def test_real_cpu_profile_fills_the_attention_blind_spot():
    torch = require_module("torch")
    import tempfile
    from pathlib import Path
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(2, 4, 64, 32)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.nn.functional.linear(q, torch.randn(16, 32))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cpu.json"
        prof.export_chrome_trace(str(path))
        trace = parse_trace_file(path, manifest={"host_roofline": {"peak_flops_per_s": 1e11,
                                                                   "mem_bw_bytes_per_s": 1e10}})
    ops = roofline.analyze(trace).table("ops")
    att = ops[ops["category"] == "attention"]
    assert len(att) == 1 and att["flops"].iloc[0] == 4 * 2 * 4 * 64 * 64 * 32
    lin = ops[ops["category"] == "gemm"]
    assert lin["flops"].sum() == 2 * (2 * 4 * 64) * 32 * 16


@pytest.mark.slow
def test_real_cpu_profile_of_hand_written_attention_is_flagged():
    torch = require_module("torch")
    import tempfile
    from pathlib import Path
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(2, 4, 128, 32)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            scores = torch.matmul(q, q.transpose(-2, -1)) / 32 ** 0.5
            out = torch.matmul(scores.softmax(-1), q)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "naive.json"
        prof.export_chrome_trace(str(path))
        trace = parse_trace_file(path, manifest={"host_roofline": {"peak_flops": {"fp32": 1e11},
                                                                   "mem_bandwidth_bytes_per_s": 1e10}})
    res = roofline.analyze(trace)
    finding = next(f for f in res.findings if f.id == "roofline.fused_attention")
    assert finding.evidence["occurrences"] == 3
    assert out.shape == q.shape
