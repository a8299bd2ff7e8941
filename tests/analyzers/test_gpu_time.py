"""gpu_time: the default breakdown on a trace with known answers, and HTA-compatible mode vs HTA itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torchscope.analyzers import gpu_time
from torchscope.analyzers.timeline import intervals
from torchscope.analyzers.core.result import NotApplicable
from tests.analyzers.synthetic_kineto import load_shared, KinetoBuilder

# Values printed by Holistic Trace Analysis itself — HolisticTraceAnalysis 0.5.0 (hta.version
# __version_tuple__ (0, 5, 0)), run once in /tmp/htavenv on each file alone in a folder:
#   ta = TraceAnalysis(trace_dir=d)
#   ta.get_temporal_breakdown(visualize=False)            -> idle/compute/non_compute pctg
#   ta.get_comm_comp_overlap(visualize=False)             -> comp_comm_overlap_pctg (NaN: no comm)
#   ta.get_idle_time_breakdown(ranks=[r], visualize=False) -> idle_time (µs) per stream × category
# (idle_pct, compute_pct, non_compute_pct, comm_comp_overlap_pct, {stream: {category: idle µs}})
HTA_0_5_0 = {
    "a100_alexnet.json.gz": (99.49, 0.08, 0.43, None, {7: {"host_wait": 12855007.0, "kernel_wait": 104.0, "other": 0.0}, 20: {"host_wait": 12011718.0, "kernel_wait": 3.0, "other": 0.0}}),
    "job128_rank0.json.gz": (53.56, 17.71, 28.74, 11.81, {23: {"host_wait": 596037.0, "kernel_wait": 70.0, "other": 34.0}, 84: {"host_wait": 148934.0, "kernel_wait": 6.0, "other": 0.0}, 25: {"kernel_wait": 9.0, "other": 47865.0}, 7: {"host_wait": 213825.0, "kernel_wait": 1985.0, "other": 261740.0}}),
    "job128_rank1.json.gz": (54.72, 22.57, 22.72, 20.05, {23: {"host_wait": 596313.0, "kernel_wait": 100.0, "other": 0.0}, 25: {"kernel_wait": 9.0, "other": 53028.0}, 7: {"host_wait": 156827.0, "kernel_wait": 1816.0, "other": 281064.0}, 84: {"host_wait": 251860.0, "other": 23247.0}}),
    "a100_train_2rank_rank0_nccl.json.gz": (77.78, 17.26, 4.97, 14.31, {7: {"host_wait": 357247.0, "kernel_wait": 2155.0, "other": 0.0}, 40: {"host_wait": 381499.0, "other": 0.0}}),
    "v100_train_1rank.json.gz": (2.63, 96.75, 0.62, None, {7: {"host_wait": 1709.0, "kernel_wait": 8404.0, "other": 0.0}}),
    "mi250_minitoy_train.json.gz": (98.53, 1.08, 0.39, None, {0: {"host_wait": 8780.0, "other": 0.0}}),
    "diff_control_a100.json.gz": (16.2, 61.23, 22.57, 47.03, {21: {"host_wait": 237710.0, "kernel_wait": 71.0, "other": 0.0}, 20: {"host_wait": 346996.0, "kernel_wait": 621.0, "other": 7470.0}, 7: {"host_wait": 102154.0, "kernel_wait": 14226.0, "other": 32183.0}, 22: {"host_wait": 271786.0, "kernel_wait": 1253.0, "other": 0.0}}),
    "diff_test_v100.json.gz": (7.47, 68.31, 24.23, 68.8, {16: {"host_wait": 422925.0, "kernel_wait": 829.0, "other": 0.0}, 7: {"host_wait": 2960.0, "kernel_wait": 42372.0, "other": 41756.0}, 15: {"host_wait": 348483.0, "kernel_wait": 138.0, "other": 38936.0}, 14: {"host_wait": 520794.0, "kernel_wait": 1087.0, "other": 14536.0}}),
}
#: Agreement target with HTA, in percentage points.
HTA_TOLERANCE_PP = 0.5


_load = load_shared


# --------------------------------------------------------------------------- HTA-compatible mode
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HTA_0_5_0))
def test_hta_compatible_matches_hta_0_5_0(shared_traces, name):
    idle, compute, non_compute, overlap, streams = HTA_0_5_0[name]
    res = gpu_time.analyze(_load(str(shared_traces), name), hta_compatible=True)
    row = res.table("hta_temporal").iloc[0]
    assert row["idle_pct"] == pytest.approx(idle, abs=HTA_TOLERANCE_PP)
    assert row["compute_pct"] == pytest.approx(compute, abs=HTA_TOLERANCE_PP)
    assert row["non_compute_pct"] == pytest.approx(non_compute, abs=HTA_TOLERANCE_PP)
    assert row["idle_pct"] + row["compute_pct"] + row["non_compute_pct"] == pytest.approx(100.0)
    if overlap is None:
        assert math.isnan(row["comm_comp_overlap_pct"])
    else:
        assert row["comm_comp_overlap_pct"] == pytest.approx(overlap, abs=HTA_TOLERANCE_PP)
    idle_table = res.table("hta_idle_by_stream")
    for stream, cats in streams.items():
        ours = idle_table[idle_table["stream"] == stream].set_index("idle_category")["idle_ns"] / 1000
        total_hta = sum(cats.values())
        for category, hta_us in cats.items():
            ours_us = float(ours.get(category, 0.0))
            assert 100 * ours_us / ours.sum() == pytest.approx(100 * hta_us / total_hta, abs=HTA_TOLERANCE_PP), \
                (stream, category, ours_us, hta_us)


# --------------------------------------------------------------------------- default mode, known answers
def _known_trace(tmp_path, *, slow_host: bool = True):
    """One 1000 µs step; the comment of each launch says what its gap must be classified as."""
    b = KinetoBuilder()
    b.step(1, 0, 1000)
    b.launch("void gemm_kernel<float>", 10, 100, 200)                   # gap 0-100: host 10, other 90
    b.launch("ncclKernel_AllReduce_RING_LL_Sum_float", 20, 250, 200, stream=20)  # 50 µs overlapped
    b.launch("Memcpy HtoD (Pageable -> Device)", 30, 460, 20, cat="gpu_memcpy",
             api="cudaMemcpyAsync")                                      # gap 450-460: kernel wait 10
    b.launch("void at::native::vectorized_elementwise_kernel<4>", 600 if slow_host else 40,
             610, 90)                                                    # gap 480-610: host 120 + kw 10
    b.launch("void at::native::reduce_kernel<512>", 605 if slow_host else 45, 720, 80)  # gap 700-720: kw 20
    b.launch("void at::native::layer_norm_kernel", 610 if slow_host else 50, 900, 50)   # gap 800-900: other
    return b.load(tmp_path / "known.json")                               # trailing 950-1000: host 50


def test_breakdown_matches_hand_computed_values(tmp_path):
    res = gpu_time.analyze(_known_trace(tmp_path))
    row = res.table("breakdown").iloc[0]
    us = 1000
    assert row["window_ns"] == 1000 * us
    assert row["compute_ns"] == 420 * us          # 200 + 90 + 80 + 50
    assert row["communication_ns"] == 150 * us    # 200 of NCCL minus the 50 under the gemm
    assert row["comm_overlapped_ns"] == 50 * us
    assert row["memcpy_ns"] == 20 * us and row["memset_ns"] == 0
    assert row["idle_ns"] == 410 * us
    assert row["idle_host_wait_ns"] == 180 * us   # 10 + 120 + 50
    assert row["idle_kernel_wait_ns"] == 40 * us  # 10 + 10 + 20
    assert row["idle_other_ns"] == 190 * us       # 90 + 100
    assert row["comm_overlap_pct"] == pytest.approx(25.0)
    parts = ["compute_pct", "communication_pct", "memcpy_pct", "memset_pct", "idle_pct"]
    assert sum(row[p] for p in parts) == pytest.approx(100.0)
    (step,) = res.table("steps").itertuples(index=False)
    assert (step.step, step.compute_ns, step.communication_ns, step.memory_ns, step.idle_ns) == \
        (1, 420 * us, 150 * us, 20 * us, 410 * us)
    streams = res.table("streams").set_index("stream")
    assert streams.loc[20, "busy_ns"] == 200 * us and streams.loc[7, "events"] == 5


def test_host_wait_finding_triggers_when_the_host_is_late(tmp_path):
    res = gpu_time.analyze(_known_trace(tmp_path, slow_host=True))
    (finding,) = [f for f in res.findings if f.id == gpu_time.GPU_IDLE_HOST_LAUNCH]
    assert finding.evidence["host_wait_pct"] == pytest.approx(18.0)
    assert finding.gain_fraction == pytest.approx(0.18)
    assert "CUDA graphs" in finding.recommendation


def test_host_wait_finding_silent_when_work_was_queued_early(tmp_path):
    # Same GPU timeline, but every launch is issued early: only the leading/trailing gaps are host wait.
    res = gpu_time.analyze(_known_trace(tmp_path, slow_host=False))
    row = res.table("breakdown").iloc[0]
    assert row["idle_host_wait_ns"] == 60_000     # 10 before the first kernel + 50 at the end
    assert not [f for f in res.findings if f.id == gpu_time.GPU_IDLE_HOST_LAUNCH]


def test_without_steps_the_window_is_the_gpu_span(tmp_path):
    b = KinetoBuilder()
    b.launch("void gemm_kernel<float>", 0, 100, 50)
    b.launch("void gemm_kernel<float>", 10, 200, 50)
    row = gpu_time.analyze(b.load(tmp_path / "nosteps.json")).table("breakdown").iloc[0]
    assert row["window_from"] == "gpu span"
    assert row["window_ns"] == 150_000 and row["compute_ns"] == 100_000 and row["idle_ns"] == 50_000


def test_cpu_only_trace_is_not_applicable(shared_traces):
    with pytest.raises(NotApplicable, match="no GPU events"):
        gpu_time.analyze(_load(str(shared_traces), "cpu_only_rank34.json.gz"))


def test_real_trace_breakdown_is_consistent_and_quiet(shared_traces):
    """v100 single rank: the GPU is busy ~97% of the window (HTA: 2.63% idle); no launch finding."""
    res = gpu_time.analyze(_load(str(shared_traces), "v100_train_1rank.json.gz"))
    row = res.table("breakdown").iloc[0]
    parts = row[["compute_ns", "communication_ns", "memcpy_ns", "memset_ns", "idle_ns"]].sum()
    assert parts == row["window_ns"]
    assert row["idle_host_wait_ns"] + row["idle_kernel_wait_ns"] + row["idle_other_ns"] == row["idle_ns"]
    assert row["communication_ns"] == 0 and row["idle_pct"] < 5 and row["compute_pct"] > 90
    assert not res.findings


def test_per_step_split_matches_clipping_each_step(shared_traces):
    trace = _load(str(shared_traces), "a100_train_2rank_rank0_nccl.json.gz")
    steps = gpu_time.analyze(trace).table("steps")
    gpu = trace.gpu_events()
    names = gpu["name"].astype(str)
    is_comm = names.str.startswith("ncclKernel").to_numpy()
    is_comp = ((gpu["kind"] == "kernel").to_numpy()) & ~is_comm
    s = gpu["ts_ns"].to_numpy()
    e = s + gpu["dur_ns"].to_numpy()
    for row in steps.itertuples(index=False):
        lo, hi = row.start_ns, row.start_ns + row.step_ns

        def clipped_union(mask):
            cs, ce = np.clip(s[mask], lo, hi), np.clip(e[mask], lo, hi)
            return intervals.union_ns(cs[ce > cs], ce[ce > cs])

        assert row.compute_ns == clipped_union(is_comp)
        assert row.communication_ns == clipped_union(is_comp | is_comm) - clipped_union(is_comp)
        assert row.idle_ns == row.step_ns - clipped_union(np.ones(len(gpu), dtype=bool))
    assert len(steps) == 3 and (steps["communication_ns"] > 0).all()
