"""training_loop: phases inferred on the shared traces (checked against a direct reading of the events),
backward on the autograd engine's threads, training/inference/unknown modes with their confidence,
throughput from prof.step counts, the whole-trace window of a trace without steps, our phase/module
annotations, step statistics and the data-loader, optimizer and sync findings."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from torchscope import analyzers
from torchscope.analyzers import training_loop
from torchscope.analyzers.core.result import NotApplicable
from tests.conftest import require_or_skip
from tests.analyzers.synthetic_kineto import load_shared, BWD_TID, KinetoBuilder


_load = load_shared


def _in_step(ev: pd.DataFrame, s0: int, s1: int) -> pd.DataFrame:
    return ev[(ev["ts_ns"] >= s0) & (ev["ts_ns"] < s1)]


def _union_len(frame: pd.DataFrame, s0: int, s1: int) -> int:
    """Plain-Python union length of the events' intervals clipped to [s0, s1]."""
    total, reach = 0, None
    for s, e in sorted(zip(frame["ts_ns"], frame["ts_ns"] + frame["dur_ns"])):
        s, e = max(s, s0), min(e, s1)
        if e <= s:
            continue
        if reach is None or s > reach:
            total += e - s
            reach = e
        elif e > reach:
            total += e - reach
            reach = e
    return total


def test_inferred_phases_on_v100_match_the_events(shared_traces):
    trace = _load(str(shared_traces), "v100_train_1rank.json.gz")
    res = training_loop.analyze(trace)
    steps = res.table("steps")
    assert list(steps["step"]) == [101, 102, 103, 104, 105]
    assert res.summary["phase_source"] == "inferred from op names"
    ev = trace.events
    name = ev["name"].astype(str)
    for _, row in steps.iterrows():
        s0, s1 = int(row["start_ns"]), int(row["start_ns"] + row["step_ns"])
        opt = _in_step(ev[name.str.startswith("Optimizer.") & (ev["kind"] == "annotation")], s0, s1)
        bwd = _in_step(ev[name.str.startswith("autograd::engine::evaluate_function:")], s0, s1)
        loss = _in_step(ev[(name == "aten::cross_entropy_loss")], s0, s1)
        assert row["optimizer_ns"] == _union_len(opt, s0, s1)
        b0, b1 = int(bwd["ts_ns"].min()), min(int((bwd["ts_ns"] + bwd["dur_ns"]).max()), s1)
        assert row["backward_ns"] == b1 - b0
        assert row["loss_ns"] == _union_len(loss, s0, s1)
        assert row["data_loading_ns"] == 0  # this job's loop has no DataLoader annotation
        # Forward: everything before backward but the loss and zero_grad (which runs at the step's start).
        assert row["forward_ns"] == (b0 - s0) - row["loss_ns"] - _union_len(opt, s0, b0)
        assert row[[f"{p}_ns" for p in training_loop.PHASES]].sum() == row["step_ns"]
    # Backward dominates this ResNet-style step; the first (shorter) step is flagged as warm-up.
    assert res.summary["backward_pct"] > res.summary["forward_pct"] > 30
    # Steps run until the next ProfilerStep starts (timeline.steps): 95_551_087 ns when a step was its own duration.
    assert res.summary["step_median_ns"] == int(np.median(steps["step_ns"])) == 95_584_750
    assert res.summary["warmup_steps"] == [101]
    assert not res.findings


def test_phases_from_torchscope_annotations_take_precedence(tmp_path):
    b = KinetoBuilder()
    b.step(1, 0, 1000)
    b.step(2, 1000, 1000)
    for base in (0, 1000):
        for phase, ts, dur in (("data_loading", 0, 100), ("forward", 100, 300), ("loss", 400, 50),
                               ("backward", 450, 350), ("zero_grad", 800, 20), ("optimizer", 820, 100)):
            b.op(phase, base + ts, dur, cat="torchscope.phase")
        b.op("Optimizer.step#SGD.step", base + 300, 600, cat="user_annotation")  # ignored: annotations win
        b.op("encoder", base + 100, 200, cat="torchscope.module", direction="forward", step=1)
        b.op("encoder.layer.0", base + 110, 50, cat="torchscope.module", direction="forward", step=1)
        b.op("encoder", base + 500, 250, cat="torchscope.module", direction="backward", step=1)
        b.op("head", base + 300, 100, cat="torchscope.module", direction="forward", step=1)
    res = training_loop.analyze(b.load(tmp_path / "bundle_like.json"))
    assert res.summary["phase_source"] == "torchscope.phase annotations"
    row = res.table("steps").iloc[0]
    us = 1000
    assert (row["data_loading_ns"], row["forward_ns"], row["loss_ns"], row["backward_ns"],
            row["optimizer_ns"], row["other_ns"]) == (100 * us, 300 * us, 50 * us, 350 * us, 120 * us, 80 * us)
    mods = res.table("modules").set_index(["module", "direction"])
    assert mods.loc[("encoder", "forward"), "total_ns"] == 400 * us  # top-level only: not encoder.layer.0
    assert mods.loc[("encoder", "backward"), "mean_per_step_ns"] == 250 * us
    assert ("encoder.layer.0", "forward") not in mods.index
    assert mods.loc[("head", "forward"), "count"] == 2


def test_kineto_module_events_give_top_level_modules(tmp_path):
    b = KinetoBuilder()
    b.step(1, 0, 1000)
    b.op("nn.Module: ResNet_0", 10, 800, cat="python_function")
    b.op("nn.Module: Sequential_0", 20, 300, cat="python_function")
    b.op("nn.Module: Conv2d_0", 30, 100, cat="python_function")
    b.op("nn.Module: Linear_0", 400, 200, cat="python_function")
    mods = training_loop.analyze(b.load(tmp_path / "mods.json")).table("modules").set_index("module")
    assert sorted(mods.index) == ["Linear_0", "Sequential_0"]
    assert mods.loc["Sequential_0", "total_ns"] == 300_000


def _loader_trace(tmp_path, data_us: float):
    b = KinetoBuilder()
    for i in range(4):
        base = i * 1000
        b.step(i, base, 1000)
        b.annotation("enumerate(DataLoader)#_MultiProcessingDataLoaderIter.__next__", base, data_us)
        b.op("aten::linear", base + data_us, 300)
        b.op("aten::cross_entropy_loss", base + data_us + 300, 20)
        b.op("autograd::engine::evaluate_function: AddmmBackward0", base + 600, 250, tid=BWD_TID)
        b.annotation("Optimizer.step#AdamW.step", base + 880, 100)
    return b.load(tmp_path / f"loader{data_us}.json")


def test_data_loader_bound_finding(tmp_path):
    res = training_loop.analyze(_loader_trace(tmp_path, 250))
    (f,) = [f for f in res.findings if f.id == training_loop.DATA_LOADER_BOUND]
    assert f.evidence["data_loading_pct"] == pytest.approx(25.0)
    assert f.gain_fraction == pytest.approx(0.25)
    assert "num_workers" in f.recommendation and "pin_memory" in f.recommendation
    row = res.table("steps").iloc[0]
    assert (row["data_loading_ns"], row["loss_ns"], row["forward_ns"], row["backward_ns"], row["optimizer_ns"]) == \
        (250_000, 20_000, 330_000, 250_000, 100_000)
    quiet = training_loop.analyze(_loader_trace(tmp_path, 20))
    assert not [f for f in quiet.findings if f.id == training_loop.DATA_LOADER_BOUND]


def test_data_loader_finding_silent_on_a_real_multiprocess_loader(shared_traces):
    res = training_loop.analyze(_load(str(shared_traces), "diff_control_a100.json.gz"))
    assert 0 < res.summary["data_loading_pct"] < 1
    assert not [f for f in res.findings if f.id == training_loop.DATA_LOADER_BOUND]


def test_slow_optimizer_finding_on_shampoo_and_not_on_sgd(shared_traces):
    res = training_loop.analyze(_load(str(shared_traces), "job128_rank0.json.gz"))
    (f,) = [f for f in res.findings if f.id == training_loop.SLOW_OPTIMIZER_STEP]
    assert set(f.evidence["optimizers"]) == {"Shampoo.step", "EMAOptimizer.step"}
    ev = _load(str(shared_traces), "job128_rank0.json.gz").events
    opt = ev[ev["name"].astype(str).str.startswith("Optimizer.step#")]
    steps = res.table("steps")
    assert steps["optimizer_ns"].sum() == opt["dur_ns"].sum()  # two optimizers, back to back, no overlap
    assert f.evidence["optimizer_pct"] == pytest.approx(100 * opt["dur_ns"].sum() / steps["step_ns"].sum(), abs=0.01)
    quiet = training_loop.analyze(_load(str(shared_traces), "a100_train_2rank_rank0_nccl.json.gz"))
    assert not [f for f in quiet.findings if f.id == training_loop.SLOW_OPTIMIZER_STEP]


def test_fused_optimizer_is_not_flagged(tmp_path):
    b = KinetoBuilder()
    b.step(1, 0, 1000)
    b.annotation("Optimizer.step#FusedAdam.step", 500, 400)
    res = training_loop.analyze(b.load(tmp_path / "fused.json"))
    assert res.summary["optimizer_pct"] == pytest.approx(40.0)
    assert not [f for f in res.findings if f.id == training_loop.SLOW_OPTIMIZER_STEP]


def test_sync_finding_on_item_calls_and_not_without(shared_traces):
    trace = _load(str(shared_traces), "diff_control_a100.json.gz")
    res = training_loop.analyze(trace)
    (f,) = [f for f in res.findings if f.id == training_loop.DEVICE_SYNC_IN_STEP]
    syncs = res.table("syncs")
    assert list(syncs["item_calls"]) == [5] * 6
    ev = trace.events
    name = ev["name"].astype(str)
    blocking = ev[name.isin(["aten::item", "aten::_local_scalar_dense", "cudaStreamSynchronize",
                             "cudaDeviceSynchronize", "cudaEventSynchronize"])]
    steps = res.table("steps")
    expected = sum(_union_len(_in_step(blocking, s, s + d), s, s + d)
                   for s, d in zip(steps["start_ns"], steps["step_ns"]))
    assert f.evidence["blocked_ns"] == expected
    assert f.evidence["blocked_pct"] == pytest.approx(100 * expected / steps["step_ns"].sum(), abs=0.01)
    assert "item()" in f.recommendation
    quiet = training_loop.analyze(_load(str(shared_traces), "a100_train_2rank_rank0_nccl.json.gz"))
    assert quiet.table("syncs")["synchronize_calls"].sum() > 0  # a few cudaEventSynchronize, ~0.01 %
    assert not [f for f in quiet.findings if f.id == training_loop.DEVICE_SYNC_IN_STEP]


def test_without_steps_the_trace_is_one_labelled_window_not_a_step(shared_traces):
    trace = _load(str(shared_traces), "a100_alexnet.json.gz")
    res = training_loop.analyze(trace)
    (row,) = [r for _, r in res.table("steps").iterrows()]
    assert row["step"] == -1 and row["window"] == "whole trace" and row["other_ns"] == row["step_ns"]
    lo, hi = trace.span_ns
    assert row["step_ns"] == hi - lo == res.summary["total_window_ns"]
    assert res.summary["steps"] == 0 and res.summary["window"] == "whole trace"
    # No step statistics for a window that is no step, no warm-up or outlier either.
    assert all(res.summary[k] is None for k in ("step_median_ns", "step_p90_ns", "step_mean_ns", "step_min_ns",
                                                "step_max_ns", "steady_median_ns"))
    assert res.summary["warmup_steps"] == res.summary["outlier_steps"] == []
    assert res.summary["phase_confidence"] == "low" and "whole trace" in res.summary["phase_note"]
    assert res.table("syncs")["cuda_sync_events"].iloc[0] == 41


def test_cpu_only_trace_has_a_step_and_says_its_phase_guess_failed(shared_traces):
    res = training_loop.analyze(_load(str(shared_traces), "cpu_only_rank34.json.gz"))
    assert list(res.table("steps")["step"]) == [551] and res.summary["steps"] == 1
    assert list(res.table("steps")["window"]) == ["step 551"]
    # 10 gloo all-reduces and 4 aten::empty: a training step whose operators were not traced, not an inference run.
    assert res.summary["mode"] == "unknown" and res.summary["phase_confidence"] == "low"
    assert res.summary["phase_note"].startswith("guess failed: 10 gradient collectives")
    assert res.summary["forward_pct"] == 0.0 and res.summary["other_pct"] == 100.0  # no invented forward


@pytest.mark.parametrize("name, backward_pct", [("v100_train_1rank.json.gz", 58.0),  # 2021 schema
                                                ("a100_train_2rank_rank0_nccl.json.gz", 38.1)])
def test_backward_on_the_autograd_thread_counts_as_backward(shared_traces, name, backward_pct):
    trace = _load(str(shared_traces), name)
    res = training_loop.analyze(trace)
    s = res.summary
    assert (s["mode"], s["phase_confidence"], s["phase_note"]) == ("training", "high", None)
    assert s["backward_source"] == "autograd engine wrappers" and s["autograd_threads"] == 1
    assert s["backward_pct"] == pytest.approx(backward_pct, abs=0.1) and s["other_pct"] < 10
    ev = trace.events
    main_tid = int(trace.steps()["tid"].iloc[0])
    wrappers = ev[ev["name"].astype(str).str.startswith("autograd::engine::evaluate_function:")]
    assert set(wrappers["tid"]) - {main_tid}, "the backward ops run on a thread of their own"
    for _, row in res.table("steps").iterrows():
        s0, s1 = int(row["start_ns"]), int(row["start_ns"] + row["step_ns"])
        off_main = _in_step(wrappers[wrappers["tid"] != main_tid], s0, s1)
        # The autograd thread's whole backward span is the step's backward phase.
        first, last = int(off_main["ts_ns"].min()), min(int((off_main["ts_ns"] + off_main["dur_ns"]).max()), s1)
        assert row["backward_ns"] >= _union_len(off_main, s0, s1) > 0
        assert row["backward_ns"] == last - first


def test_old_schema_without_engine_wrappers_finds_backward_by_op_names(tmp_path):
    b = KinetoBuilder()  # edge case: no shared trace lacks the wrappers
    for i in range(3):
        base = i * 1000
        b.step(i, base, 1000)
        b.op("aten::conv2d", base + 10, 300)
        b.op("aten::nll_loss", base + 320, 30)
        b.op("ConvolutionBackward0", base + 400, 200, tid=BWD_TID)
        b.op("aten::convolution_backward", base + 410, 180, tid=BWD_TID)
        b.op("torch::autograd::AccumulateGrad", base + 650, 50, tid=BWD_TID)
        b.annotation("Optimizer.step#SGD.step", base + 800, 100)
    res = training_loop.analyze(b.load(tmp_path / "old_schema.json"))
    s = res.summary
    assert s["backward_source"] == "backward op names" and s["autograd_threads"] == 1
    assert s["mode"] == "training" and s["phase_confidence"] == "medium" and "operator names" in s["phase_note"]
    row = res.table("steps").iloc[0]
    assert (row["forward_ns"], row["loss_ns"], row["backward_ns"], row["optimizer_ns"]) == \
        (370_000, 30_000, 300_000, 100_000)  # backward: 400 µs to 700 µs, first to last backward op


def test_inference_run_from_op_names_has_no_training_phases(tmp_path):
    b = KinetoBuilder()
    for i in range(3):
        b.step(i, i * 1000, 1000)
        b.annotation("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", i * 1000, 100)
        b.op("aten::linear", i * 1000 + 100, 700)
    res = training_loop.analyze(b.load(tmp_path / "inference.json"))
    s = res.summary
    assert s["mode"] == "inference" and s["phase_confidence"] == "medium"
    assert not {"loss_pct", "backward_pct", "optimizer_pct"} & set(s)
    assert not {"loss_ns", "backward_ns", "optimizer_ns"} & set(res.table("steps").columns)
    assert list(res.table("phases")["phase"]) == ["data_loading", "forward", "other"]
    assert (s["data_loading_pct"], s["forward_pct"], s["other_pct"]) == pytest.approx((10.0, 90.0, 0.0))
    assert "tokens_per_s" not in s and "samples_per_s" not in s  # no prof.step counts in a plain Kineto trace


def _phase_union(trace, step_row, names: tuple[str, ...]) -> int:
    ev = trace.events
    s0 = int(step_row["start_ns"])
    s1 = s0 + int(step_row["step_ns"])
    sel = ev[(ev["kind"] == "phase") & ev["name"].astype(str).isin(names)]
    return _union_len(_in_step(sel, s0, s1), s0, s1)


def test_our_cpu_bundle_phases_and_modules(sample_traces):
    bundle = sample_traces / "gpt_train"
    require_or_skip(bundle.is_dir(), f"no run bundle at {bundle}")
    trace = analyzers.load(bundle)
    res = training_loop.analyze(trace)
    assert res.summary["phase_source"] == "torchscope.phase annotations"
    assert (res.summary["mode"], res.summary["phase_confidence"]) == ("training", "high")
    steps = res.table("steps")
    assert list(steps["step"]) == list(trace.steps()["step"]) and len(steps) >= 2
    # Throughput from prof.step(tokens=, samples=): the steps stream's line N is the count of ProfilerStep#N.
    lines = trace.streams["steps"].set_index("step").loc[steps["step"]]
    assert list(steps["tokens"]) == list(lines["tokens"].astype(float))
    seconds = steps["step_ns"].sum() / 1e9
    assert res.summary["tokens_per_s"] == pytest.approx(lines["tokens"].sum() / seconds)
    assert res.summary["samples_per_s"] == pytest.approx(lines["samples"].sum() / seconds)
    for _, row in steps.iterrows():  # our annotations do not overlap: each phase is its own union
        assert row["data_loading_ns"] == _phase_union(trace, row, ("data_loading",))
        assert row["loss_ns"] == _phase_union(trace, row, ("loss",))
        assert row["optimizer_ns"] == _phase_union(trace, row, ("optimizer", "zero_grad"))
        assert row["backward_ns"] > row["forward_ns"] > 0
    mods = res.table("modules")
    top = set(mods["module"])
    assert {"blocks.0", "blocks.1", "head"} <= top and not any(m.count(".") > 1 for m in top)
    assert set(mods["direction"]) == {"forward", "backward"}
    for analyzer in ("gpu_time", "kernels"):  # a CPU-only run has no GPU work
        with pytest.raises(NotApplicable, match="no GPU events"):
            __import__(f"torchscope.analyzers.{analyzer}", fromlist=["analyze"]).analyze(trace)


@pytest.mark.slow
def test_user_phases_get_their_own_columns(sample_traces):
    bundle = sample_traces / "moe_generate"
    require_or_skip(bundle.is_dir(), f"no run bundle at {bundle}")
    trace = analyzers.load(bundle)
    res = training_loop.analyze(trace)
    steps = res.table("steps")
    assert {"prefill_ns", "decode_ns"} <= set(steps.columns)
    for _, row in steps.iterrows():
        assert row["prefill_ns"] == _phase_union(trace, row, ("prefill",))
        assert row["forward_ns"] == 0 and row["other_ns"] >= 0
    phases = res.table("phases").set_index("phase")
    assert phases.loc["decode", "user_phase"] and phases.loc["decode", "share_pct"] > 50
    # A generation run: inference, no loss/backward/optimizer phases, prefill/decode, tokens/s from prof.step.
    s = res.summary
    assert (s["mode"], s["phase_confidence"], s["backward_source"]) == ("inference", "high", None)
    assert not {"loss_pct", "backward_pct", "optimizer_pct"} & set(s) and {"prefill_pct", "decode_pct"} <= set(s)
    assert set(phases.index) == {"data_loading", "forward", "prefill", "decode", "other"}
    lines = trace.streams["steps"].set_index("step").loc[steps["step"]]
    assert s["tokens_per_s"] == pytest.approx(lines["tokens"].sum() / (steps["step_ns"].sum() / 1e9))
    assert s["samples_per_s"] == pytest.approx(len(steps) / (steps["step_ns"].sum() / 1e9))  # one prompt a step
