"""The MoE analyzer on the project's own MoE runs (sample_traces/moe_train, moe_generate), checked
against numbers recomputed here straight from the bundle's rank0.moe.jsonl."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torchscope.analyzers import load
from torchscope.analyzers.moe import analysis as moe
from torchscope.analyzers.moe import findings as rules
from torchscope.analyzers.moe.capacity import capacity_metrics
from torchscope.analyzers.core.registry import run_all
from tests.conftest import require_or_skip


def _bundle(sample_traces, name):
    path = sample_traces / name
    require_or_skip((path / "rank0.moe.jsonl").is_file(), f"{path} has no rank0.moe.jsonl")
    data = load(path)
    trace = data[0] if hasattr(data, "ranks") else data
    lines = [json.loads(line) for line in (path / "rank0.moe.jsonl").read_text().splitlines() if line.strip()]
    return data, trace, lines


@pytest.fixture(scope="module")
def train_bundle(sample_traces):
    return _bundle(sample_traces, "moe_train")


@pytest.fixture(scope="module")
def generate_bundle(sample_traces):
    return _bundle(sample_traces, "moe_generate")


def _raw_counts(lines, layer, phase=None):
    return np.array([ln["counts"] for ln in lines if ln["type"] == "counts" and ln["layer"] == layer
                     and (phase is None or ln["phase"] == phase)])


def _check_common(result, lines):
    routers = {ln["layer"]: ln for ln in lines if ln["type"] == "router"}
    imb = result.table("imbalance").set_index("layer")
    assert set(imb.index) == set(routers)
    for layer, router in routers.items():
        raw = _raw_counts(lines, layer)
        total = raw.sum(axis=0)
        tokens = sum(ln["tokens"] for ln in lines if ln["type"] == "counts" and ln["layer"] == layer)
        assert total.sum() == tokens * router["top_k"]  # every token routed to top_k experts
        assert imb.loc[layer, "assignments"] == total.sum()
        assert imb.loc[layer, "max_over_mean"] == pytest.approx(total.max() / total.mean())
        assert 1.0 <= imb.loc[layer, "max_over_mean"] <= router["num_experts"]
    load_tab = result.table("expert_load")
    assert load_tab.groupby("layer")["share"].sum().tolist() == pytest.approx([1.0] * len(routers))
    curves = result.table("cache_curves").pivot_table(index=["layer", "resident_experts"], columns="policy",
                                                      values="hit_rate")
    assert (curves["belady"] >= curves["lru"] - 1e-12).all()
    assert (curves["belady"] >= curves["lfu"] - 1e-12).all()
    plan = result.table("placement_summary")
    assert (plan["max_over_mean_after"] <= plan["max_over_mean_before"] + 1e-9).all()
    sizing = result.table("cache_sizing")
    assert (sizing["expert_bytes"] == routers[sizing["layer"].iloc[0]]["expert_bytes"]).all()


def test_moe_train_sample(train_bundle):
    _, trace, lines = train_bundle
    result = moe.analyze(trace)
    _check_common(result, lines)
    assert result.summary["phases"] == ["train"]
    assert result.summary["cache_phase"] == "all"
    # Training replays every step's sampled tokens; buffering is not advised for training.
    samples = sum(len(ln["experts"]) for ln in lines if ln["type"] == "tokens" and ln["layer"] == "blocks.0.moe.gate")
    sizing = result.table("cache_sizing")
    assert sizing[sizing["layer"] == "blocks.0.moe.gate"]["accesses"].iloc[0] == samples * 2
    assert not any(f.id == rules.EXPERT_BUFFERING for f in result.findings)
    # Trained with a balancing loss: no layer is badly imbalanced and no expert is dead.
    assert result.table("imbalance")["max_over_mean"].max() < rules.IMBALANCE_CRITICAL
    assert result.summary["dead_experts"] == 0


def test_moe_generate_sample(generate_bundle):
    _, trace, lines = generate_bundle
    result = moe.analyze(trace)
    _check_common(result, lines)
    assert result.summary["phases"] == ["decode", "prefill"]
    assert result.summary["cache_phase"] == "decode"
    layer = "blocks.0.moe.gate"
    decode_samples = sum(len(ln["experts"]) for ln in lines
                         if ln["type"] == "tokens" and ln["layer"] == layer and ln["phase"] == "decode")
    sizing = result.table("cache_sizing")
    assert sizing[sizing["layer"] == layer]["accesses"].iloc[0] == decode_samples * 2
    # Decode lines sum one-token calls: each call can overflow no expert, so decode alone drops nothing.
    decode = [ln for ln in lines if ln["type"] == "counts" and ln["layer"] == layer and ln["phase"] == "decode"]
    assert all(ln["calls"] == ln["tokens"] for ln in decode)
    calls = np.array([ln["calls"] for ln in decode])
    assert capacity_metrics(_raw_counts(lines, layer, "decode"), 1.0, calls)["drop_rate"] == 0.0


def test_moe_sample_through_run_all(generate_bundle):
    data, _, _ = generate_bundle
    report = run_all(data, only=("moe",))
    assert "moe" not in report.errors, report.errors
    result = report.result("moe")
    assert result is not None and result.rank == 0
    assert all(f.analyzer == "moe" and f.page == "moe" for f in result.findings)
