"""What trace-diff measures per run: step selection, per-step metrics, name matching, merging runs."""

from __future__ import annotations

import numpy as np
import pytest

from torchscope import analyzers
from torchscope.analyzers import TraceError
from torchscope.analyzers.diff.metrics import (
    StepSelection, extract_run_metrics, merge_runs, normalize_name, parse_steps,
)
from tests.analyzers.diff_traces import KERNEL, write_bundle, write_trace

#: diff_traces.py leaves 50 µs between steps; a step's window runs to the next step's start
#: (timeline.steps.step_windows), so every step but the last is that much longer than its annotation.
GAP_NS = 50_000


def with_gaps(step_ns) -> np.ndarray:
    """Window lengths of steps annotated ``step_ns`` long: the gap added to all but the last."""
    out = np.asarray(step_ns, dtype=np.float64).copy()
    out[:-1] += GAP_NS
    return out


@pytest.mark.parametrize("raw, expected", [
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, "
     "at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<float>, at::detail::Array<char*, 3>)",
     "void at::native::vectorized_elementwise_kernel(int, at::native::CUDAFunctor_add, at::detail::Array)"),
    ("cutlass_80_tensorop_s1688gemm_64x64_32x6_tn_align4", "cutlass_N_tensorop_sNgemm_NxN_NxN_tn_alignN"),
    ("ProfilerStep#1009", "ProfilerStep#N"),
    ("Memcpy HtoD (Pageable -> Device)", "Memcpy HtoD (Pageable -> Device)"),
    ("my_op at 0x7f3a2b10ff00", "my_op at"),
    ("aten::mm", "aten::mm"),
])
def test_normalize_name(raw, expected):
    assert normalize_name(raw) == expected


def test_normalize_name_matches_tile_variants_and_keeps_different_kernels_apart():
    a = normalize_name("sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x16_stage4_warpsize2x2x1")
    b = normalize_name("sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize64x64x16_stage6_warpsize2x2x1")
    assert a == b
    assert normalize_name("void add_kernel<float>(float*)") != normalize_name("void mul_kernel<float>(float*)")


def test_parse_steps():
    assert parse_steps("3:5") == (3, 4, 5)
    assert parse_steps("7, 3:4,7") == (3, 4, 7)
    for bad in ("5:3", "", "x"):
        with pytest.raises(ValueError):
            parse_steps(bad)


@pytest.fixture()
def synthetic(tmp_path):
    steps = [20.0, 10.0, 11.0, 12.0, 13.0]
    path = write_trace(tmp_path / "t.json.gz", steps, first_step=40, comm_fraction=0.1, memory_peak_bytes=5e8)
    return analyzers.load(path), steps


def test_warm_up_step_is_skipped_and_step_times_are_measured(synthetic):
    trace, steps = synthetic
    run = extract_run_metrics(trace)
    assert run.steps == (41, 42, 43, 44)
    assert any("warm-up" in n for n in run.notes)
    np.testing.assert_allclose(run.metrics["step/time"].samples, with_gaps(np.array(steps[1:]) * 1e6))
    assert run.metrics["step/time"].headline and not run.metrics["step/time"].exact


def test_explicit_steps_and_no_warmup(synthetic):
    trace, steps = synthetic
    assert extract_run_metrics(trace, StepSelection(warmup=0)).steps == (40, 41, 42, 43, 44)
    run = extract_run_metrics(trace, StepSelection(steps=(40, 42, 99)))
    assert run.steps == (40, 42)
    assert any("99" in n for n in run.notes)
    with pytest.raises(TraceError, match="--steps"):
        extract_run_metrics(trace, StepSelection(steps=(1, 2)))


def test_short_trace_keeps_its_warm_up_step(tmp_path):
    trace = analyzers.load(write_trace(tmp_path / "short.json.gz", [10.0, 11.0]))
    assert extract_run_metrics(trace).steps == (1, 2)


def test_gpu_work_counts_in_the_step_that_launched_it(synthetic):
    trace, steps = synthetic
    m = extract_run_metrics(trace).metrics
    # each step: two op kernels of 0.8 × step/4 each, launched inside the step though they end after it
    np.testing.assert_allclose(m["gpu/gemm/conv"].samples, np.array(steps[1:]) * 1e6 * 0.2)
    np.testing.assert_allclose(m["comm/time"].samples, np.array(steps[1:]) * 1e6 * 0.1)
    np.testing.assert_allclose(m["gpu/busy"].samples, np.array(steps[1:]) * 1e6 * 0.5)
    assert m["work/kernels_per_step"].value == 3.0
    assert m["work/ops_per_step"].value == 2.0
    assert m["work/flops_per_step"].value == 1e6
    key = f"kernel_time/{normalize_name(KERNEL)}"
    assert key in m and m[key].fill_zero
    assert m[f"kernel_count/{normalize_name(KERNEL)}"].value == 1.0
    np.testing.assert_allclose(m["phase/forward"].samples, np.array(steps[1:]) * 1e6 * 0.4)


def test_peak_memory_is_one_sample_per_run(synthetic):
    trace, _ = synthetic
    m = extract_run_metrics(trace).metrics
    assert m["memory/peak_allocated"].per_run
    assert m["memory/peak_allocated"].samples.tolist() == [5e8]
    assert m["memory/peak_reserved"].samples.tolist() == [7.5e8]


def test_cpu_only_trace_has_no_gpu_metrics_and_gloo_is_communication(tmp_path):
    trace = analyzers.load(write_trace(tmp_path / "cpu.json.gz", [10.0] * 4, gpu=False, gloo=True))
    m = extract_run_metrics(trace).metrics
    assert not any(k.startswith(("gpu/", "kernel")) for k in m)
    np.testing.assert_allclose(m["comm/time"].samples, np.full(3, 1e6))


def test_energy_and_moe_from_a_run_bundle(tmp_path):
    counts = [[[4, 4, 4, 4], [8, 0, 4, 4]]] * 5
    bundle = write_bundle(tmp_path / "run", [10.0, 20.0, 10.0, 10.0, 10.0], power_w=100.0, moe_counts=counts)
    m = extract_run_metrics(analyzers.load(bundle)).metrics
    # 100 W over 20 ms and 10 ms steps (after the warm-up step) = 2000 mJ, 1000 mJ, plus 100 W × the
    # 50 µs gap to the next step (5 mJ) for all but the last step
    np.testing.assert_allclose(m["energy/per_step"].samples, [2005.0, 1005.0, 1005.0, 1000.0], rtol=1e-3)
    assert m["moe_expert_tokens/layers.1.router"].value == [8.0, 0.0, 4.0, 4.0]
    assert m["moe_expert_tokens/layers.1.router"].exact
    # layer 0 even (1.0), layer 1 busiest expert at 2× the mean: averaged over layers 1.5
    np.testing.assert_allclose(m["moe/imbalance"].samples, np.full(4, 1.5))
    assert (m["moe/drop_rate"].samples > 0).all()


def test_no_profiler_steps_makes_the_whole_trace_one_sample(shared_traces):
    trace = analyzers.load(shared_traces / "a100_alexnet.json.gz")
    run = extract_run_metrics(trace)
    assert run.steps == () and "step/time" not in run.metrics
    assert run.metrics["work/kernels_per_step"].value > 0
    assert all(m.samples.size == 1 for m in run.metrics.values() if not m.exact)


def test_merging_repeated_runs_pools_samples_and_fills_missing_names_with_zero(tmp_path):
    a = extract_run_metrics(analyzers.load(write_trace(tmp_path / "a.json.gz", [10.0] * 4)))
    b = extract_run_metrics(analyzers.load(write_trace(tmp_path / "b.json.gz", [12.0] * 4,
                                                       ops=("aten::mm", "aten::add", "aten::relu"))))
    merged = merge_runs([a, b])
    np.testing.assert_allclose(merged["step/time"].samples, np.r_[with_gaps([10e6] * 3), with_gaps([12e6] * 3)])
    assert merged["op_count/aten::relu"].value == 0.5  # 0 in run a, 1 per step in run b
    assert merged["op_time/aten::relu"].samples.size == 6
    assert merged["work/ops_per_step"].value == 2.5


def test_flops_and_bytes_from_recorded_shapes_when_the_profiler_gives_none(tmp_path):
    trace = analyzers.load(write_trace(tmp_path / "shapes.json.gz", [10.0] * 4, flops_per_op=None))
    m = extract_run_metrics(trace).metrics
    assert m["work/flops_per_step"].value == 2 * 32 * 64 * 16  # one [32,64]x[64,16] GEMM per step
    assert m["work/op_bytes_per_step"].value > 0
    assert m["work/flops_per_step"].exact and m["work/flops_per_step"].headline
