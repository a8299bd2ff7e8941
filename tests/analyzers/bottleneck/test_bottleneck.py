"""The step model, attribution and what-if replay: sums exact on real traces, predictions on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from torchscope.analyzers.bottleneck import whatif
from torchscope.analyzers.bottleneck.analysis import MIN_GAIN_FRACTION, analyze
from torchscope.analyzers.bottleneck.attribution import CAUSES, attribute, cause_label
from torchscope.analyzers.bottleneck.model import build
from torchscope.analyzers.bottleneck.replay import Change, replay
from torchscope.analyzers.core.registry import run_all
from torchscope.analyzers.report.units import format_duration_ns

from tests.analyzers.synthetic_kineto import BWD_TID, MAIN_TID, KinetoBuilder, load_shared
from tests.conftest import SHARED_TRACES

SHARED = ("a100_alexnet.json.gz", "a100_train_2rank_rank0_nccl.json.gz", "diff_control_a100.json.gz",
          "diff_test_v100.json.gz", "job128_rank0.json.gz", "job128_rank1.json.gz",
          "mi250_minitoy_train.json.gz", "v100_train_1rank.json.gz")


@pytest.mark.parametrize("name", SHARED)
def test_attribution_sums_to_every_step_on_real_traces(name):
    trace = load_shared(str(SHARED_TRACES), name)
    model = build(trace)
    attr = attribute(model)
    per_step = attr.table.groupby("window")["time_ns"].sum().reindex(range(len(model.windows)), fill_value=0)
    assert (per_step.to_numpy() == model.step_ns).all()
    known = set(CAUSES)
    for cause in attr.table["cause"].unique():
        assert cause in known or cause.startswith(("gpu_compute:", "cpu_compute:")), cause


@pytest.mark.parametrize("name", SHARED)
def test_unmodified_replay_reproduces_the_trace(name):
    trace = load_shared(str(SHARED_TRACES), name)
    model = build(trace)
    replayed = replay(model).step_ns
    measured = model.step_ns
    # Every step but the last matches (to rounding of stream starts); the last also pays the GPU's backlog.
    assert (np.abs(replayed[:-1] - measured[:-1]) <= 0.005 * measured[:-1]).all()
    assert replayed[-1] >= 0.999 * measured[-1]
    assert abs(np.median(replayed) - np.median(measured)) <= 0.01 * np.median(measured)


def _sync_step(tmp_path, *, sync: bool = True):
    """One 1000 µs step: a 500 µs kernel, a synchronize that waits for it, then 480 µs of host work."""
    b = KinetoBuilder()
    b.step(1, 0, 1000)
    b.op("aten::mm", 5, 10)
    b.launch("ampere_sgemm_128x64_nn", 10, 15, 500)
    if sync:
        b.runtime("cudaDeviceSynchronize", 20, 500)
    b.op("aten::copy_", 520, 480)
    b.step(2, 1000, 1)
    return b.load(tmp_path / "sync.json")


def test_freeing_a_sync_predicts_the_overlap_it_allows(tmp_path):
    trace = _sync_step(tmp_path)
    model = build(trace)
    assert list(model.syncs["kind"]) == ["device_sync"]
    attr = attribute(model)
    est = whatif.remove_syncs(model, attr)
    before = replay(model).step_ns.sum()
    after = replay(model, est.change).step_ns.sum()
    # The sync returns 5 µs after its kernel; freed, the host starts its 480 µs at 25 µs and reaches
    # the next step at 505 µs; the run ends when the kernel does (515 µs) plus the 1 µs last step.
    assert before == 1_001_000
    assert after == pytest.approx(516_000, abs=2_000)
    result = analyze(trace)
    ids = {f.id: f for f in result.findings}
    assert "bottleneck.device_sync" in ids
    assert ids["bottleneck.device_sync"].gain_fraction == pytest.approx(1 - after / 1_001_000, abs=0.01)


def test_host_cut_in_a_gpu_bound_run_gains_nothing(tmp_path):
    b = KinetoBuilder()
    b.step(1, 0, 100)
    b.op("aten::mm", 0, 90)
    b.launch("ampere_sgemm_128x64_nn", 5, 10, 2000)  # the GPU runs 2 ms past the step
    b.step(2, 100, 10)
    model = build(b.load(tmp_path / "gpu_bound.json"))
    base = replay(model).step_ns.sum()
    cut = Change(cuts=(np.array([20_000]), np.array([90_000]), np.array([0])))
    assert replay(model, cut).step_ns.sum() == base


def _cpu_optimizer_trace(tmp_path, *, foreach: bool):
    """CPU steps whose Adam step calls 3 ops per tensor for 20 tensors, with Python between them."""
    b = KinetoBuilder()
    t = 0.0
    for step in range(1, 4):
        b.step(step, t, 3000)
        b.op("aten::addmm", t + 10, 800, **{"Input Dims": [[64], [32, 64], [64, 64]],
                                               "Input type": ["float", "float", "float"]})
        b.annotation("Optimizer.step#Adam.step", t + 1000, 1900)
        c = t + 1010
        if foreach:
            for kind in ("aten::_foreach_mul_", "aten::_foreach_add_", "aten::_foreach_sqrt"):
                b.op(kind, c, 200)
                c += 210
        else:
            for _ in range(20):
                for kind in ("aten::mul_", "aten::add_", "aten::sqrt"):
                    b.op(kind, c, 10)
                    c += 30  # 20 µs of Python per call
        t += 3000
    b.step(4, t, 1)
    return b.load(tmp_path / f"opt_{foreach}.json", compute_major=None)


def test_foreach_optimizer_keeps_the_kernels_and_drops_the_python_loop(tmp_path):
    model = build(_cpu_optimizer_trace(tmp_path, foreach=False))
    est = whatif.foreach_optimizer(model, attribute(model))
    assert est is not None and est.evidence["calls_per_step"] == 60 and est.evidence["op_kinds"] == 3
    new = est.change.cuts[2]
    # Kept: 60 ops x 10 µs; plus one Python gap per kind (the median gap, about 20 µs).
    assert new[0] == pytest.approx(600_000 + 3 * 20_000, rel=0.1)
    applied = build(_cpu_optimizer_trace(tmp_path, foreach=True))
    assert whatif.foreach_optimizer(applied, attribute(applied)) is None


def test_cpu_only_trace_without_steps_is_one_window_and_never_critical_at_zero(tmp_path):
    b = KinetoBuilder()
    b.op("aten::addmm", 0, 500)
    b.op("aten::tanh", 600, 100)
    result = analyze(b.load(tmp_path / "nosteps.json", compute_major=None))
    assert result.summary["steps"] == 1
    assert result.table("attribution")["step"].tolist() == [-1] * len(result.table("attribution"))
    for f in result.findings:
        assert f.gain_fraction >= MIN_GAIN_FRACTION or f.estimated_gain.startswith("unknown")


def test_backward_on_the_autograd_thread_is_host_work_not_python(tmp_path):
    b = KinetoBuilder()
    b.step(1, 0, 1000)
    b.annotation("## backward ##", 0, 900)  # main thread waits inside an annotation
    b.op("autograd::engine::evaluate_function: MmBackward0", 10, 800, tid=BWD_TID)
    b.op("aten::mm", 20, 700, tid=BWD_TID)
    b.launch("ampere_sgemm_128x64_nn", 30, 900, 50)
    b.step(2, 1000, 1)
    model = build(b.load(tmp_path / "bwd.json"))
    causes = attribute(model).per_cause().set_index("cause")["time_ns"]
    assert causes["launch_bound"] >= 700_000


def test_registered_and_in_run_all_on_a_real_trace():
    trace = load_shared(str(SHARED_TRACES), "v100_train_1rank.json.gz")
    report = run_all(trace)
    result = next(r for r in report.results if r.analyzer == "bottleneck")
    assert {"attribution", "causes", "whatif"} <= set(result.tables)
    # V100 has fp16 tensor cores but no bf16: the precision advice says fp16 with a GradScaler.
    prec = [f for f in result.findings if f.id == "bottleneck.fp32_matmul"]
    for f in prec:
        assert "float16" in f.recommendation and "bfloat16" not in f.recommendation
    assert cause_label("gpu_compute:gemm/conv") == "GPU compute: gemm/conv"


def test_superseded_threshold_findings_give_way_where_the_step_model_ran(tmp_path):
    from torchscope.analyzers.bottleneck.analysis import SUPERSEDES
    trace = _cpu_optimizer_trace(tmp_path, foreach=False)
    report = run_all(trace)
    ids = {f.id for f in report.findings}
    assert "bottleneck.optimizer_dispatch" in ids
    assert not ids & set(SUPERSEDES)
    # Without the step model the older rule still speaks.
    alone = run_all(trace, only=("training_loop",))
    assert "training_loop.slow_optimizer_step" in {f.id for f in alone.findings}


def test_device_events_nothing_understands_are_named_with_counts(tmp_path):
    b = KinetoBuilder()
    b.step(1, 0, 1000)
    b.op("aten::mm", 10, 500)
    for i in range(3):
        b.events.append({"ph": "X", "cat": "mtia_kernel", "name": f"mtia_gemm_{i}", "pid": 0, "tid": 1,
                         "ts": 20 + i * 100, "dur": 50, "args": {}})
    b.events.append({"ph": "X", "cat": "cuda_profiler_range", "name": "ampere_sgemm_64x64_nn", "pid": 0,
                     "tid": 7, "ts": 30, "dur": 200, "args": {"stream": 7}})
    b.step(2, 1000, 1)
    result = analyze(b.load(tmp_path / "mtia.json"))
    assert result.summary["unrecognised_events"] == 3
    assert result.summary["unrecognised"] == "mtia_kernel x3"
    # CUPTI range-profiling kernels are kernels: the GPU was busy during them.
    causes = result.table("causes").set_index("cause")["time_ns"]
    assert causes["gpu_compute:gemm/conv"] == 200_000


def test_a_blocking_device_to_host_copy_freed_lets_the_host_run_ahead(tmp_path):
    """A 600 µs kernel, then a pageable copy that blocks the host until it lands, then 390 µs of host work."""
    b = KinetoBuilder()
    for step in range(1, 4):
        t0 = (step - 1) * 1000
        b.step(step, t0, 1000)
        b.op("aten::mm", t0 + 1, 8)
        b.launch("ampere_sgemm_128x64_nn", t0 + 5, t0 + 6, 594)
        b.op("aten::to", t0 + 10, 601)
        b.launch("Memcpy DtoH (Device -> Pageable)", t0 + 10, t0 + 600, 10, cat="gpu_memcpy",
                 api="cudaMemcpyAsync", launch_dur=600)
        b.op("aten::copy_", t0 + 611, 389)
    b.step(4, 3000, 1)
    trace = b.load(tmp_path / "copy.json")
    model = build(trace)
    assert set(model.syncs["kind"]) == {"blocking_copy"} and set(model.syncs["site"]) == {"aten::to"}
    result = analyze(trace)
    found = {f.id: f for f in result.findings}
    assert "bottleneck.blocking_copy" in found
    # Freed, each step's host work starts 10 µs after its copy call instead of at 611 µs: the steps
    # are then bound by the GPU (610 µs of kernel and copy), a 39% cut.
    assert found["bottleneck.blocking_copy"].gain_fraction == pytest.approx(0.39, abs=0.03)


def test_a_queued_stream_moves_up_when_its_kernels_get_shorter(tmp_path):
    """Ten kernels launched at once run back to back with 3 µs front-end gaps: halving them halves the run."""
    b = KinetoBuilder()
    b.step(1, 0, 50)
    t = 100.0
    for i in range(10):
        b.launch("volta_sgemm_128x64_nn", 1 + i, t, 100)
        t += 103
    b.step(2, 50, 1)
    model = build(b.load(tmp_path / "queue.json", compute_major=7, device_name="Tesla V100-SXM2-32GB"))
    base = replay(model).step_ns.sum()
    assert base == pytest.approx(100_000 + 10 * 103_000 - 3_000 - 0, abs=2_000)
    half = Change(gpu_dur=model.gpu["dur_ns"].to_numpy() // 2)
    # Each kernel 50 µs shorter, the gaps kept: 500 µs earlier.
    assert replay(model, half).step_ns.sum() == pytest.approx(base - 500_000, abs=2_000)


def test_superseded_findings_also_drop_when_analyzers_run_one_at_a_time(tmp_path):
    """The dashboard runs analyzers one by one; the report it assembles drops superseded findings too."""
    from torchscope.analyzers.core.registry import drop_superseded
    trace = _cpu_optimizer_trace(tmp_path, foreach=False)
    parts = [r for name in ("training_loop", "bottleneck") for r in run_all(trace, only=(name,)).results]
    ids = {f.id for r in drop_superseded(parts) for f in r.findings}
    assert "bottleneck.optimizer_dispatch" in ids and "training_loop.slow_optimizer_step" not in ids


def _wrapped_ops_step(tmp_path, *, gap_us: float):
    """One 1000 µs CPU step: 20 aten::linear ops (Python between them), each calling aten::t and aten::addmm
    with ``gap_us`` between the two children (the profiler's exit and entry bookkeeping)."""
    b = KinetoBuilder()
    b.step(1, 0, 1000)
    for i in range(20):
        t0 = 10 + 45 * i
        b.op("aten::linear", t0, 10 + gap_us)
        b.op("aten::t", t0 + 1, 2)
        b.op("aten::addmm", t0 + 3 + gap_us, 6)
    b.step(2, 1000, 1)
    return b.load(tmp_path / f"wrapped_{gap_us}.json", compute_major=None)


def test_profiler_overhead_is_measured_between_sibling_ops_and_cut_from_the_host(tmp_path):
    from torchscope.analyzers.bottleneck.profiler_overhead import profiler_overhead

    model = build(_wrapped_ops_step(tmp_path, gap_us=2.0))
    overhead = profiler_overhead(model)
    assert overhead.per_op_ns == 2_000 and overhead.gaps == 20
    # 60 recorded ops, each losing its entry and its exit (h / 2 each) where the gaps allow.
    removed = int(overhead.removed(np.array([0]), np.array([1_000_000]))[0])
    assert 0.8 * 60 * 2_000 <= removed <= 60 * 2_000
    # The replay of the unprofiled run is shorter by what was cut; with no cuts it is the traced step.
    unprofiled = replay(model, unprofiled=overhead.cuts).step_ns
    assert unprofiled[0] == pytest.approx(model.step_ns[0] - removed, abs=1_000)


def test_abutting_sibling_ops_on_two_threads_measure_no_overhead_and_cut_nothing(tmp_path):
    """Sibling gaps of 0 (whole-microsecond timestamps, ops back to back) on two host threads: h is 0, no cut."""
    from torchscope.analyzers.bottleneck.profiler_overhead import profiler_overhead

    b = KinetoBuilder()
    b.step(1, 0, 1000)
    # The second host thread is the autograd engine's, known by its backward functions.
    for tid, parent in ((MAIN_TID, "aten::linear"), (BWD_TID, "autograd::engine::evaluate_function: AddmmBackward0")):
        for i in range(20):
            t0 = 10 + 45 * i
            b.op(parent, t0, 10, tid=tid)
            b.op("aten::t", t0 + 1, 2, tid=tid)
            b.op("aten::addmm", t0 + 3, 6, tid=tid)
    b.step(2, 1000, 1)
    model = build(b.load(tmp_path / "abutting.json", compute_major=None))
    assert len(model.host_threads) == 2
    overhead = profiler_overhead(model)
    assert overhead.per_op_ns == 0 and overhead.gaps == 40
    assert int(overhead.removed(np.array([0]), np.array([1_000_000]))[0]) == 0


def test_a_changes_cuts_replace_the_overhead_they_cover():
    from torchscope.analyzers.bottleneck.replay import compose_cuts

    under = (np.array([0, 100, 200]), np.array([10, 110, 210]), np.array([5, 5, 5]))
    over = (np.array([95]), np.array([150]), np.array([20]))
    cs, ce, cl = compose_cuts(under, over)
    # The cut at 100 lies inside the change and goes; the others stay; the change's length is its own.
    assert cs.tolist() == [0, 95, 200] and ce.tolist() == [10, 150, 210] and cl.tolist() == [5, 20, 5]
    # An overhead cut straddling a change's edge keeps its outside part, with its share of the removal.
    cs, ce, cl = compose_cuts((np.array([90]), np.array([110]), np.array([10])), over)
    assert cs.tolist() == [90, 95] and ce.tolist() == [95, 150] and cl.tolist() == [2, 20]


def _random_nested_spans(rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Properly nested spans over [0, length): children cut out of their parent, some repeated exactly."""
    spans: list[tuple[int, int]] = []

    def fill(a: int, b: int, depth: int) -> None:
        if depth > 5 or b - a < 2:
            return
        k = int(rng.integers(0, 4))
        cuts = np.sort(rng.integers(a, b + 1, size=2 * k))
        for i in range(k):
            x, y = int(cuts[2 * i]), int(cuts[2 * i + 1])
            spans.append((x, y))
            if rng.random() < 0.2:
                spans.append((x, y))
            fill(x, y, depth + 1)

    fill(0, length, 0)
    spans = spans or [(0, 1)]
    order = rng.permutation(len(spans))
    arr = np.array(spans, np.int64)[order]
    return arr[:, 0], arr[:, 1]


def test_innermost_op_on_properly_nested_spans_is_the_latest_started_one_holding_the_point():
    from torchscope.analyzers.bottleneck.attribution import _innermost
    rng = np.random.default_rng(7)
    for _ in range(200):
        s, e = _random_nested_spans(rng, 200)
        points = rng.integers(-5, 210, 300)
        got = _innermost(s, e, points)
        for p, row in zip(points.tolist(), got.tolist()):
            # Of the spans holding p (half-open), the one starting last; of equal starts the shorter; of
            # identical spans the later one in start order (the child).
            holding = [i for i in range(s.size) if s[i] <= p < e[i]]
            order = sorted(holding, key=lambda i: (s[i], -(e[i] - s[i]), list(np.lexsort((-(e - s), s))).index(i)))
            assert row == (order[-1] if order else -1)


def test_innermost_op_where_spans_overlap_partly_takes_the_deepest_level_holding_the_point():
    from torchscope.analyzers.bottleneck.attribution import _innermost
    # [0, 10) holds [2, 6); [4, 12) starts inside [2, 6) but outlasts both (clock rounding).
    s, e = np.array([0, 2, 4], np.int64), np.array([10, 6, 12], np.int64)
    got = _innermost(s, e, np.array([1, 3, 5, 7, 11, 12], np.int64))
    assert got.tolist() == [0, 1, 2, 2, 2, -1]


@pytest.mark.parametrize("scale", [1, 10**12])  # 10**12: offsets would overflow, one accumulate per run
def test_replay_running_sums_and_maxima_restart_at_every_run(scale):
    from torchscope.analyzers.bottleneck.replay import _run_cummax, _run_cumsum
    rng = np.random.default_rng(3)
    v = rng.integers(-10**6, 10**6, 500).astype(np.int64) * scale
    run = np.unique(np.sort(rng.integers(0, 40, 500)), return_inverse=True)[1].reshape(-1)
    edges = np.flatnonzero(np.concatenate([[True], run[1:] != run[:-1], [True]]))
    want_max, want_sum = np.empty_like(v), np.empty_like(v)
    for a, b in zip(edges[:-1], edges[1:]):
        want_max[a:b], want_sum[a:b] = np.maximum.accumulate(v[a:b]), np.cumsum(v[a:b])
    assert (_run_cummax(v, run) == want_max).all()
    assert (_run_cumsum(v, run) == want_sum).all()


def _gemm_then_chain_trace(tmp_path):
    """CPU steps: a bmm whose own first child is a contiguous copy (elementwise), then 300 µs of the bmm's
    compute, then a chain of 4 elementwise ops over 64K floats."""
    shape = {"Input Dims": [[256, 256], [256, 256]], "Input type": ["float", "float"]}
    b = KinetoBuilder()
    t = 0.0
    for step in range(1, 4):
        b.step(step, t, 1000)
        b.op("aten::bmm", t + 10, 340)
        b.op("aten::copy_", t + 12, 30, **shape)  # the bmm's contiguous copy of an input
        c = t + 360
        for name in ("aten::add", "aten::mul", "aten::sub", "aten::div"):
            b.op(name, c, 50, **shape)
            c += 55
        t += 1000
    b.step(4, t, 1)
    return b.load(tmp_path / "gemm_chain.json", compute_major=None)


def test_an_elementwise_op_inside_a_gemm_is_the_gemms_and_starts_no_chain(tmp_path):
    """The copy inside the bmm is not fused with the ops after the bmm: the chain, and its cut, start at the
    first op after it (the bmm's own 300 µs are kept), one chain of 4 ops per step."""
    model = build(_gemm_then_chain_trace(tmp_path))
    est = whatif.fuse_elementwise(model, attribute(model))
    assert est is not None and est.evidence["chains"] == 3 and est.evidence["ops"] == 12
    starts, ends, _ = est.change.cuts
    first_op = model.ops.loc[model.ops["name"] == "aten::add", "ts_ns"].to_numpy()
    assert np.array_equal(np.sort(starts), np.sort(first_op))
    assert (ends - starts <= 4 * 55_000).all()


def test_a_bundle_with_untraced_steps_measures_what_tracing_cost_and_a_plain_trace_has_no_such_figure(sample_traces):
    from torchscope.analyzers.io.loader import load  # noqa: PLC0415
    from torchscope.analyzers.timeline.steps import untraced_step_windows  # noqa: PLC0415

    run = load(sample_traces / "gpt_train")  # 53 steps untraced after start-up, 4 traced
    res = analyze(run)
    w = untraced_step_windows(run)
    untraced = int(np.median(w["end_ns"] - w["start_ns"]))
    assert res.summary["untraced_step_ns"] == untraced
    assert res.summary["traced_step_slowdown"] == pytest.approx(res.summary["step_ns"] / untraced, abs=1e-3)
    assert 0 <= res.summary["untraced_replay_error_share"] < 1
    plain = analyze(load_shared(str(SHARED_TRACES), "v100_train_1rank.json.gz"))
    assert not {"untraced_step_ns", "traced_step_slowdown", "untraced_replay_error_share"} & set(plain.summary)


def test_the_per_op_cost_is_fitted_to_the_untraced_steps_and_every_what_if_uses_it(sample_traces):
    from torchscope.analyzers.bottleneck.model import build  # noqa: PLC0415
    from torchscope.analyzers.bottleneck.profiler_overhead import FITTED, MEASURED, profiler_overhead  # noqa: PLC0415
    from torchscope.analyzers.io.loader import load  # noqa: PLC0415

    run = load(sample_traces / "gpt_train")  # the replay with the measured cost is ~10% over the untraced step
    res = analyze(run)
    measured = profiler_overhead(build(run))
    assert measured.source == MEASURED and res.summary["profiler_overhead_source"] == FITTED
    assert res.summary["profiler_overhead_ns"] > measured.per_op_ns
    assert res.summary["measured_overhead_replay_error_share"] > 0.05
    assert res.summary["untraced_replay_error_share"] < 0.01  # the fit lands on the untraced step
    whatif_after = res.tables["whatif"]
    assert (whatif_after["step_ns_before"] <= res.summary["untraced_step_ns"] * 1.01).all()


def test_a_gain_says_so_when_the_fit_cannot_reach_the_untraced_steps(sample_traces, monkeypatch):
    from torchscope.analyzers.bottleneck import analysis, profiler_overhead  # noqa: PLC0415
    from torchscope.analyzers.io.loader import load  # noqa: PLC0415

    run = load(sample_traces / "gpt_train")  # replay ~10% off its untraced steps with the measured cost
    monkeypatch.setattr(analysis, "MIN_GAIN_FRACTION", 0.01)  # let its best what-if (~4%) make a finding
    fitted = analysis.analyze(run)
    assert fitted.findings and not any("check:" in f.estimated_gain for f in fitted.findings)
    unprofiled_step = int(fitted.tables["whatif"]["step_ns_before"].iloc[0])  # < the traced step measured
    assert unprofiled_step < fitted.summary["step_ns"]
    for f in fitted.findings:  # "x% of step time (about y per step without the profiler)": y of the unprofiled step
        if f.gain_fraction > 0:
            assert f"(about {format_duration_ns(f.gain_fraction * unprofiled_step)} per step without the profiler)" \
                in f.estimated_gain
    monkeypatch.setattr(profiler_overhead, "MAX_FITTED_PER_OP_NS", 0)  # no fit: the measured cost stays
    monkeypatch.setattr(analysis, "UNTRACED_CAVEAT_SHARE", 0.05)
    off = analysis.analyze(run)
    assert off.summary["untraced_replay_error_share"] == off.summary["measured_overhead_replay_error_share"] > 0.05
    untraced = format_duration_ns(off.summary["untraced_step_ns"])
    assert off.findings and all(f"check: this run's steps without the profiler took {untraced}" in f.estimated_gain
                                for f in off.findings if f.gain_fraction > 0)
