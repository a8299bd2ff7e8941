"""End to end through profiler.profile(): the MoE sample workload records routers by itself, in
training and in generation, and its expert counts are the same on every run (what CI gates on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchscope import analyzers
from sample_traces.moe_workload import FIXED_NEW_TOKENS, MoeConfig, PROMPTS, run_fixed_moe_workload

MAX_BUNDLE_BYTES = 5 * 1024 * 1024  # sample bundles stay small enough to ship


def moe_lines(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in (bundle / "rank0.moe.jsonl").read_text().splitlines()]


def counts_of(bundle: Path) -> list[tuple]:
    return [(l["step"], l["phase"], l["layer"], l["tokens"], tuple(l["counts"]))
            for l in moe_lines(bundle) if l["type"] == "counts"]


@pytest.mark.slow
def test_fixed_moe_workload_is_deterministic_and_complete(tmp_path):
    cfg = MoeConfig()
    first = run_fixed_moe_workload(tmp_path / "a", train_steps=10)
    second = run_fixed_moe_workload(tmp_path / "b", train_steps=10)
    assert [p.name for p in first] == ["moe_train", "moe_generate"]
    for a, b in zip(first, second):
        assert counts_of(a) and counts_of(a) == counts_of(b)
        assert sum(f.stat().st_size for f in a.iterdir()) < MAX_BUNDLE_BYTES

    train, generate = first
    routers = [l for l in moe_lines(train) if l["type"] == "router"]
    assert [(r["layer"], r["num_experts"], r["top_k"]) for r in routers] == [
        (f"blocks.{i}.moe.gate", cfg.experts, cfg.top_k) for i in range(cfg.layers)]
    assert all(r["expert_params"] == 3 * cfg.dim * cfg.expert_hidden for r in routers)
    for step, phase, _, tokens, counts in counts_of(train):
        assert phase == "train" and tokens == 32 * 64 and sum(counts) == tokens * cfg.top_k

    by_phase: dict[tuple[int, str], int] = {}
    for step, phase, layer, tokens, counts in counts_of(generate):
        assert sum(counts) == tokens * cfg.top_k
        if layer == "blocks.0.moe.gate":
            by_phase[(step, phase)] = tokens
    assert by_phase == {  # the first new token comes out of the prefill
        key: value for step, prompt in enumerate(PROMPTS)
        for key, value in (((step, "prefill"), len(prompt)), ((step, "decode"), FIXED_NEW_TOKENS - 1))
    }
    sampled = [l for l in moe_lines(generate) if l["type"] == "tokens"]
    assert sampled and all(len(row) == cfg.top_k for l in sampled for row in l["experts"])

    # the bundle reads back through the loader, MoE stream included
    trace = analyzers.load(generate)
    assert set(trace.streams["moe"]["type"]) == {"router", "counts", "tokens"}
    assert trace.meta.manifest["recorded"]["moe"] is True
