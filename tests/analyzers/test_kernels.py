"""kernels: name rules, per-kernel statistics, launch delay, tiny kernels, tensor cores and their findings."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from torchscope.analyzers import kernels
from torchscope.analyzers.core.result import NotApplicable
from tests.analyzers.synthetic_kineto import load_shared, KinetoBuilder

NAMES = {
    "volta_sgemm_128x64_nn": kernels.GEMM,
    "ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_32x5_tn": kernels.GEMM,
    "void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_256x64_16x3_nn_align4>(Params)": kernels.GEMM,
    "sm80_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nchw": kernels.GEMM,
    "Cijk_Alik_Bljk_SB_MT64x16x8": kernels.GEMM,
    "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 64, 4> >(Flash_fwd_params)": kernels.ATTENTION,
    "fmha_cutlassF_f16_aligned_64x64_rf_sm80": kernels.ATTENTION,
    "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)": kernels.COMMUNICATION,
    "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)": kernels.COMMUNICATION,
    "Memcpy DtoH (Device -> Pinned)": kernels.MEMORY,
    "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float> >": kernels.ELEMENTWISE,
    "triton_poi_fused_add_mul_0": kernels.ELEMENTWISE,
    "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<>": kernels.ELEMENTWISE,
    "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>": kernels.REDUCTION,
    "void at::native::reduce_kernel<512, 1>": kernels.REDUCTION,
    "triton_red_fused_sum_1": kernels.REDUCTION,
    "void cudnn::bn_fw_tr_1C11_kernel_NCHW<float>": kernels.REDUCTION,
    "void (anonymous namespace)::softmax_warp_forward<float>": kernels.REDUCTION,
    "my_custom_thing": kernels.OTHER,
}


_load = load_shared


def test_category_rules():
    names = pd.Series(list(NAMES))
    assert list(kernels.category_of(names)) == list(NAMES.values())
    # Event kind wins for copies whatever they are called.
    got = kernels.category_of(pd.Series(["x", "y"]), pd.Series(["memset", "kernel"]))
    assert list(got) == [kernels.MEMORY, kernels.OTHER]


def test_tensor_core_and_fp32_rules():
    names = pd.Series(["volta_sgemm_128x64_nn", "void cutlass::Kernel<cutlass_80_simt_sgemm_128x32_8x5_nn>",
                       "void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_256x64>",
                       "sm80_xmma_gemm_bf16bf16_bf16f32_f32_tn_n", "volta_h884gemm_128x64_ldg8_nn",
                       "void at::native::vectorized_elementwise_kernel<4>"])
    assert list(kernels.is_tensor_core(names)) == [False, False, True, True, True, False]
    assert list(kernels.is_fp32_gemm(names)) == [True, True, False, False, False, False]


def _stats_trace(tmp_path, *, sgemm: bool = False, compute_major: int | None = 8, tiny: int = 0):
    b = KinetoBuilder()
    t = 0.0
    durations_us = [1, 2, 3, 4, 100]
    for i, d in enumerate(durations_us):  # launch ends at t+2; kernel starts 5 µs × i later
        b.launch("kern_a_gemm", t, t + 2 + 5 * i, d)
        t += 200
    b.launch("volta_sgemm_128x64_nn" if sgemm else "ampere_s16816gemm_bf16", t, t + 10, 400)
    t += 1000
    for _ in range(tiny):
        b.launch("void at::native::vectorized_elementwise_kernel<4>", t, t + 3, 3)
        t += 10
    return b.load(tmp_path / "stats.json", compute_major=compute_major)


def test_per_kernel_statistics_and_launch_delay(tmp_path):
    res = kernels.analyze(_stats_trace(tmp_path))
    by_name = res.table("by_name").set_index("name")
    a = by_name.loc["kern_a_gemm"]
    durs = np.array([1, 2, 3, 4, 100]) * 1000
    assert a["count"] == 5 and a["total_ns"] == durs.sum() and a["mean_ns"] == durs.mean()
    assert a["p50_ns"] == np.percentile(durs, 50) and a["p95_ns"] == round(np.percentile(durs, 95))
    assert a["min_ns"] == 1000 and a["max_ns"] == 100_000
    assert res.table("top_kernels")["name"].iloc[0] == "ampere_s16816gemm_bf16"  # 400 µs beats 110
    delays = np.array([0, 5, 10, 15, 20, 8]) * 1000  # kernel start − launch end
    ld = res.table("launch_delay").iloc[0]
    assert ld["kernels_with_launch"] == 6
    assert ld["p50_ns"] == round(np.percentile(delays, 50)) and ld["max_ns"] == 20_000
    assert res.table("launch_delay_histogram")["count"].sum() == 6
    s = res.summary
    assert s["tensor_core_time_pct"] == pytest.approx(100 * 400 / 510)
    assert s["tiny_kernel_time_pct"] == pytest.approx(100 * 10 / 510)  # 1+2+3+4 µs are < 10 µs
    assert s["tiny_kernel_count_pct"] == pytest.approx(100 * 4 / 6)


def test_tiny_kernel_finding(tmp_path):
    res = kernels.analyze(_stats_trace(tmp_path, tiny=200))  # 200 × 3 µs next to 510 µs
    (f,) = [f for f in res.findings if f.id == kernels.MANY_TINY_KERNELS]
    share = (600 + 10) / 1110
    assert f.evidence["tiny_time_pct"] == pytest.approx(100 * share, abs=0.01)
    assert f.gain_fraction == pytest.approx(kernels.TINY_KERNEL_FUSION_SAVING * share)
    assert "torch.compile" in f.recommendation
    quiet = kernels.analyze(_stats_trace(tmp_path, tiny=0))
    assert not [f for f in quiet.findings if f.id == kernels.MANY_TINY_KERNELS]


def test_fp32_gemm_finding_needs_a_tensor_core_gpu(tmp_path):
    res = kernels.analyze(_stats_trace(tmp_path, sgemm=True, compute_major=8))
    (f,) = [f for f in res.findings if f.id == kernels.FP32_GEMM_WITHOUT_TENSOR_CORES]
    assert f.evidence["fp32_gemm_pct"] == pytest.approx(100 * 400 / 510, abs=0.01)
    assert "bfloat16" in f.recommendation and "TF32" in f.recommendation
    # Pascal (6.0) has no tensor cores: nothing to recommend.
    old = kernels.analyze(_stats_trace(tmp_path, sgemm=True, compute_major=6))
    assert not [f for f in old.findings if f.id == kernels.FP32_GEMM_WITHOUT_TENSOR_CORES]


def test_fp32_gemm_finding_on_real_v100_and_not_on_a100(shared_traces):
    v100 = kernels.analyze(_load(str(shared_traces), "v100_train_1rank.json.gz"))
    (f,) = [f for f in v100.findings if f.id == kernels.FP32_GEMM_WITHOUT_TENSOR_CORES]
    assert f.evidence["compute_capability"] == 7.0
    assert "float16" in f.recommendation  # Volta: fp16 autocast, no bf16/TF32
    assert f.evidence["fp32_gemm_pct"] > 30
    a100 = kernels.analyze(_load(str(shared_traces), "a100_train_2rank_rank0_nccl.json.gz"))
    assert not [f for f in a100.findings if f.id == kernels.FP32_GEMM_WITHOUT_TENSOR_CORES]
    assert a100.summary["tensor_core_time_pct"] > 20  # cutlass tensorop / xmma tf32 kernels


def test_real_trace_tables_agree_with_a_direct_computation(shared_traces):
    trace = _load(str(shared_traces), "a100_train_2rank_rank0_nccl.json.gz")
    res = kernels.analyze(trace)
    gpu = trace.gpu_events()
    expected = gpu.groupby(gpu["name"].astype(str))["dur_ns"].agg(["size", "sum"]).sort_values("sum", ascending=False)
    top = res.table("top_kernels")
    assert list(top["name"].head(5)) == list(expected.index[:5])
    assert list(top["total_ns"].head(5)) == list(expected["sum"].head(5))
    cats = res.table("categories").set_index("category")
    assert cats["total_ns"].sum() == gpu["dur_ns"].sum()
    assert cats.loc[kernels.COMMUNICATION, "count"] == 21  # 15 all-reduce + 6 broadcast NCCL kernels
    assert cats.loc[kernels.MEMORY, "count"] == 960 + 114


def test_cpu_only_trace_is_not_applicable(shared_traces):
    with pytest.raises(NotApplicable, match="no GPU events"):
        kernels.analyze(_load(str(shared_traces), "cpu_only_rank34.json.gz"))


def test_name_rules_answer_as_case_insensitive_regexes_on_any_name():
    import re

    from torchscope.analyzers import kernels
    names = ["ampere_sgemm_128x64_nn", "Void AT::Native::Vectorized_Elementwise_Kernel<4>", "NCCL_AllReduce_Sum",
             "cutlass::Kernel<Gemm<float, float, float>>", "ſum_kernel", "flash_fwd_K\u212Aernel", "memcpy HtoD", "",
             "triton_RED_fused_0"]
    rules = [rule for _, rule in kernels._RULES] + [kernels._TENSOR_CORE_RE, kernels._FP32_GEMM_RE]
    for rule in rules:
        expect = [re.search(rule.pattern, n, re.IGNORECASE) is not None for n in names]
        assert kernels._hits(rule, names).tolist() == expect, rule.pattern
    assert kernels._hits(kernels._RULES[0][1], [None, float("nan")]).tolist() == [False, False]


def test_name_rules_over_many_names_at_once_answer_name_by_name():
    import random
    import re

    from torchscope.analyzers import kernels
    rng = random.Random(1)
    words = ["gemm", "GEMM", "nccl", "Memcpy", "memset", "flash", "loss", "Loss", "backward", "sgemm", "cijk_",
             "torch::autograd::AccumulateGrad", "allreduce", "reduce_scatter", "<float, float, float", "fp16", "", "x"]
    rules = [rule for _, rule in kernels._RULES] + [kernels._TENSOR_CORE_RE, kernels._FP32_GEMM_RE,
                                                   re.compile(r"backward|^torch::autograd::accumulategrad$", re.I)]
    for _ in range(300):
        names = ["".join(rng.choice(words) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(1, 20))]
        for rule in rules:
            assert kernels._hits(rule, names).tolist() == [re.search(rule.pattern, n, re.I) is not None for n in names]
