"""MoE expert activation analyzer on synthetic routings whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from torchscope.analyzers import NotApplicable, load
from torchscope.analyzers.core.findings import FINDING_ID_RE
from torchscope.analyzers.core.registry import REGISTRY, run_all
from torchscope.analyzers.io.chrome_trace import empty_trace
from torchscope.analyzers.moe import analysis as moe
from torchscope.analyzers.moe import findings as rules
from torchscope.analyzers.moe.capacity import capacity_metrics
from torchscope.analyzers.moe.load import imbalance_metrics, imbalance_trend
from tests.analyzers.moe.synthetic import LAYER, finding, make_trace, routing_lines


def test_registered_on_its_page():
    spec = REGISTRY["moe"]
    assert spec.func is moe.analyze and spec.page == "moe"
    assert spec.summary_keys == moe.SUMMARY_KEYS


def test_every_summary_key_is_documented():
    counts = np.tile(np.array([50, 10, 10, 10]), (5, 1))
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1, phase="decode")), capacity_factor=1.5)
    assert set(result.summary) <= set(moe.SUMMARY_KEYS)
    assert {"moe_layers", "steps", "drop_fraction_at_cf", "cache_phase", "ep_ranks"} <= set(result.summary)
    assert result.summary["capacity_factor"] == 1.5


def test_not_applicable_without_routing():
    with pytest.raises(NotApplicable, match="no MoE routing recorded"):
        moe.analyze(empty_trace("x", 0, manifest=None, streams={}))
    with pytest.raises(NotApplicable, match="no MoE routing recorded"):
        moe.analyze(make_trace([{"type": "router", "layer": "g", "layer_index": 0, "num_experts": 4, "top_k": 1}]))


def test_uniform_routing_is_balanced():
    counts = np.full((10, 8), 64)  # 8 experts, 256 tokens × top-2 per step, exactly even
    result = moe.analyze(make_trace(routing_lines([counts, counts], top_k=2)))
    imb = result.table("imbalance")
    assert imb["max_over_mean"].tolist() == pytest.approx([1.0, 1.0])
    assert imb["cv"].tolist() == pytest.approx([0.0, 0.0])
    assert imb["entropy_norm"].tolist() == pytest.approx([1.0, 1.0])
    assert imb["dead_experts"].sum() == 0
    assert imb["tokens"].tolist() == [2560, 2560]
    cap = result.table("capacity")
    assert cap["drop_rate"].max() == 0.0
    static = cap[(cap["gating"] == "static") & (cap["layer"] == LAYER.format(0))].set_index("capacity_factor")
    assert static.loc[1.0, "padding_waste"] == pytest.approx(0.0)
    assert static.loc[2.0, "padding_waste"] == pytest.approx(0.5)
    assert static.loc[1.25, "capacity_tokens_mean"] == 80  # ceil(1.25 × 512 / 8)
    assert finding(result, rules.LOAD_IMBALANCE) is None
    assert finding(result, rules.DEAD_EXPERTS) is None
    assert finding(result, rules.TOKEN_DROPS) is None
    # An even load leaves nothing for the placement planner to improve.
    plan = result.table("placement_summary")
    assert plan["max_over_mean_after"].tolist() == pytest.approx(plan["max_over_mean_before"].tolist())


def test_uniform_random_routing_is_nearly_balanced():
    rng = np.random.default_rng(0)
    counts = np.stack([np.bincount(rng.integers(0, 16, 20_000), minlength=16) for _ in range(5)])
    imb = moe.analyze(make_trace(routing_lines([counts], top_k=1))).table("imbalance").iloc[0]
    assert imb["max_over_mean"] == pytest.approx(1.0, abs=0.05)
    assert imb["entropy_norm"] > 0.999


def test_all_tokens_to_one_expert():
    num_experts, tokens = 8, 400
    counts = np.zeros((6, num_experts), dtype=int)
    counts[:, 5] = tokens
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)), capacity_factor=1.0)
    imb = result.table("imbalance").iloc[0]
    assert imb["max_over_mean"] == pytest.approx(num_experts)
    assert imb["entropy_norm"] == pytest.approx(0.0)
    assert imb["dead_experts"] == num_experts - 1 and imb["hottest_expert"] == 5
    assert imb["dead_expert_ids"] == "0,1,2,3,4,6,7"
    cap = result.table("capacity").set_index(["gating", "capacity_factor"])
    # capacity ceil(cf × 400 / 8); everything above it is dropped.
    assert cap.loc[("static", 1.0), "drop_rate"] == pytest.approx((400 - 50) / 400)
    assert cap.loc[("static", 2.0), "drop_rate"] == pytest.approx((400 - 100) / 400)
    # Smallest factor on a 0.01 grid with ceil(cf × 50) >= 400 (no drop) / >= 396 (<= 1% dropped).
    assert cap.loc[("static", 1.0), "cf_for_no_drops"] == pytest.approx(7.99)
    drops = finding(result, rules.TOKEN_DROPS)
    assert drops.severity == "critical" and drops.evidence["cf_for_1pct_drops"] == pytest.approx(7.91)
    assert finding(result, rules.DEAD_EXPERTS).evidence["dead_experts"] == 7
    imbalance = finding(result, rules.LOAD_IMBALANCE)
    assert imbalance.severity == "critical"
    # All load on one expert: replicating it onto every rank spreads it evenly.
    plan = result.table("placement_summary").iloc[0]
    assert plan["max_over_mean_before"] == pytest.approx(8.0)  # 8 ranks, one holds expert 5
    assert plan["max_over_mean_after"] == pytest.approx(1.0)
    assert plan["replicated_experts"] == "5"
    assert "replicate experts 5" in imbalance.recommendation


def test_zipf_routing_matches_the_analytic_shares():
    num_experts, alpha = 32, 1.0
    shares = 1 / np.arange(1, num_experts + 1) ** alpha
    shares /= shares.sum()
    per_step = np.round(shares * 100_000).astype(int)
    counts = np.tile(per_step, (4, 1))
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)))
    imb = result.table("imbalance").iloc[0]
    p = per_step / per_step.sum()
    assert imb["max_over_mean"] == pytest.approx(num_experts * p.max())
    assert imb["entropy_norm"] == pytest.approx(-(p * np.log(p)).sum() / math.log(num_experts))
    assert imb["cv"] == pytest.approx(p.std() / p.mean())
    load = result.table("expert_load")
    assert load["share"].tolist() == pytest.approx(p.tolist())
    assert load["assignments"].sum() == counts.sum()
    cap = result.table("capacity")
    one = cap[(cap["gating"] == "static") & (cap["capacity_factor"] == 1.0)].iloc[0]
    capacity = math.ceil(per_step.sum() / num_experts)
    assert one["drop_rate"] == pytest.approx(np.clip(per_step - capacity, 0, None).sum() / per_step.sum())


def test_over_provisioned_capacity_advises_lowering_it():
    counts = np.full((5, 8), 100)
    result = moe.analyze(make_trace(routing_lines([counts], top_k=2)), capacity_factor=2.0)
    pad = finding(result, rules.CAPACITY_PADDING)
    assert pad is not None and pad.evidence["padding_waste"] == pytest.approx(0.5)
    assert pad.evidence["cf_for_1pct_drops"] == pytest.approx(1.0)
    assert "lower the capacity factor from 2 to 1" in pad.recommendation


def test_growing_imbalance_during_training_asks_for_more_aux_loss():
    steps, num_experts = 12, 8
    counts = np.full((steps, num_experts), 100)
    for s in range(steps):  # expert 0 takes more and more of the tokens
        counts[s, 0] = 100 + 60 * s
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)))
    trend = finding(result, rules.IMBALANCE_GROWING)
    assert trend is not None and trend.evidence["trend_ratio"] > rules.TREND_RATIO_WARN
    assert trend.evidence["slope_per_step"] > 0
    assert "auxiliary load-balancing loss" in trend.recommendation
    steady = moe.analyze(make_trace(routing_lines([np.tile(counts[-1], (steps, 1))], top_k=1)))
    assert finding(steady, rules.IMBALANCE_GROWING) is None
    # Inference runs do not train the router: no aux-loss advice.
    decode = moe.analyze(make_trace(routing_lines([counts], top_k=1, phase="decode")))
    assert finding(decode, rules.IMBALANCE_GROWING) is None


def test_buffering_finding_for_skewed_decode_with_memory_freed():
    rng = np.random.default_rng(1)
    num_experts, top_k, steps = 16, 2, 40
    hot = np.array([0.4, 0.3, 0.15, 0.1] + [0.05 / 12] * 12)
    tokens = []
    for _ in range(steps):
        tokens.append([rng.choice(num_experts, size=top_k, replace=False, p=hot).tolist() for _ in range(8)])
    counts = np.stack([np.bincount(np.ravel(t), minlength=num_experts) for t in tokens])
    lines = routing_lines([counts], top_k=top_k, phase="decode", tokens_by_layer=[tokens])
    result = moe.analyze(make_trace(lines), expert_bytes=50 << 20, target_hit_rate=0.8)
    sizing = result.table("cache_sizing").set_index("policy")
    assert set(sizing.index) == {"lru", "lfu", "belady"}
    assert sizing.loc["belady", "experts_needed"] <= sizing.loc["lfu", "experts_needed"]
    assert sizing.loc["belady", "experts_needed"] <= sizing.loc["lru", "experts_needed"]
    assert sizing.loc["lfu", "accesses"] == steps * 8 * top_k  # the sampled tokens were replayed
    assert result.table("locality")["access_source"].tolist() == ["tokens"]
    buf = finding(result, rules.EXPERT_BUFFERING)
    assert buf is not None
    needed = min(sizing.loc["lru", "experts_needed"], sizing.loc["lfu", "experts_needed"])
    assert buf.evidence["resident_experts"] == needed
    assert buf.evidence["memory_freed_bytes"] == pytest.approx((num_experts - needed) * (50 << 20))
    assert result.summary["cache_phase"] == "decode"
    curves = result.table("cache_curves")
    assert len(curves) == 3 * num_experts
    for _, curve in curves.groupby("policy"):
        assert np.all(np.diff(curve["hit_rate"].to_numpy()) >= 0)


def test_counts_only_layers_replay_the_expanded_counts():
    counts = np.array([[3, 1, 0, 0], [0, 0, 2, 2]])
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)))
    assert result.table("locality")["access_source"].tolist() == ["counts"]
    assert result.table("cache_sizing")["accesses"].iloc[0] == 8
    # access order 0 0 1 0 | 2 3 2 3: with 2 resident experts LRU hits 2 + 2 of the 8 uses.
    curves = result.table("cache_curves")
    lru2 = curves[(curves["policy"] == "lru") & (curves["resident_experts"] == 2)]["hit_rate"].iloc[0]
    assert lru2 == pytest.approx(4 / 8)


def test_token_samples_without_counts_lines():
    lines = [{"type": "tokens", "step": s, "phase": "decode", "layer": "g", "experts": [[0, 1], [0, 2]]}
             for s in range(3)]
    result = moe.analyze(make_trace(lines))
    load = result.table("expert_load")
    assert load["assignments"].tolist() == [6, 3, 3]
    assert result.table("imbalance")["top_k"].iloc[0] == 2


def test_malformed_rows_are_skipped_and_counted():
    lines = routing_lines([np.full((3, 4), 5)], top_k=1)
    lines.append({"type": "counts", "step": 3, "phase": "train", "layer": LAYER.format(0), "tokens": 3,
                  "counts": [1, 2, 3]})  # 3 entries for 4 experts
    lines.append({"type": "counts", "phase": "train", "layer": LAYER.format(0), "counts": [1, 1, 1, 1]})  # no step
    result = moe.analyze(make_trace(lines))
    assert result.summary["skipped_rows"] == 2
    assert result.table("imbalance")["steps"].iloc[0] == 3


def test_placement_uses_world_size_and_options():
    counts = np.tile(np.array([400, 300, 50, 50, 50, 50, 50, 50]), (4, 1))
    trace = make_trace(routing_lines([counts], top_k=1), manifest={"world_size": 4})
    result = moe.analyze(trace, redundant_experts=4)
    summary = result.table("placement_summary").iloc[0]
    assert summary["ranks"] == 4 and summary["redundant"] == 4
    assert summary["max_over_mean_before"] == pytest.approx(700 / 250)
    assert summary["max_over_mean_after"] < summary["max_over_mean_before"]
    assert summary["holdout_step_max_over_mean_after"] == pytest.approx(summary["step_max_over_mean_after"])
    per_rank = result.table("placement")
    assert len(per_rank) == 4
    assert per_rank["tokens_after"].sum() == pytest.approx(counts.sum())
    two = moe.analyze(trace, ep_ranks=2, redundant_experts=0).table("placement_summary").iloc[0]
    assert two["ranks"] == 2 and two["replicated_experts"] == ""


def test_expert_size_from_router_lines():
    lines = routing_lines([np.tile(np.array([90, 5, 3, 1, 1, 0, 0, 0]), (30, 1))], top_k=1, phase="decode")
    lines[0]["expert_params"] = 1000
    lines[0]["param_bytes"] = 2
    sizing = moe.analyze(make_trace(lines), target_hit_rate=0.9).table("cache_sizing")
    assert (sizing["expert_bytes"] == 2000).all()
    assert (sizing["memory_freed_bytes"] == (8 - sizing["experts_needed"]) * 2000).all()


def test_findings_serialise_to_json():
    counts = np.zeros((6, 8), dtype=int)
    counts[:, 2] = 300
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)))
    assert result.findings
    for f in result.findings:
        json.dumps(f.to_dict())
        assert f.page == "moe" and f.rank == 0 and FINDING_ID_RE.match(f.id)


def test_run_bundle_end_to_end(tmp_path):
    counts = np.tile(np.array([50, 10, 10, 10]), (5, 1))
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"schema_version": 1, "tool": "torchscope", "world_size": 1,
                                                   "ranks": [0]}))
    with open(run / "rank0.moe.jsonl", "w") as fh:
        for line in routing_lines([counts], top_k=1):
            fh.write(json.dumps(line) + "\n")
    data = load(run)
    report = run_all(data, only=("moe",))
    result = report.result("moe")
    assert result is not None, report.skipped or report.errors
    assert result.table("imbalance")["max_over_mean"].iloc[0] == pytest.approx(50 / 20)


def test_one_token_decode_steps_are_not_called_imbalanced():
    # One token × top-2 per step: every step looks 4× imbalanced, but over the run the load is even.
    num_experts, steps = 8, 400
    counts = np.zeros((steps, num_experts), dtype=int)
    for s in range(steps):
        counts[s, [(2 * s) % num_experts, (2 * s + 1) % num_experts]] = 1
    result = moe.analyze(make_trace(routing_lines([counts], top_k=2, phase="decode")))
    imb = result.table("imbalance").iloc[0]
    assert imb["step_max_over_mean_mean"] == pytest.approx(4.0)
    assert imb["max_over_mean"] == pytest.approx(1.0)
    assert finding(result, rules.LOAD_IMBALANCE) is None


def test_small_drift_near_balance_is_not_a_trend():
    steps = 12
    counts = np.full((steps, 8), 100)
    counts[8:, 0] = 121  # max/mean 1.0 → 1.18: the ratio passes TREND_RATIO_WARN, the level stays harmless
    ratio, _ = imbalance_trend(imbalance_metrics(counts)["max_over_mean"])
    assert ratio > rules.TREND_RATIO_WARN
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)))
    assert finding(result, rules.IMBALANCE_GROWING) is None


def test_nearly_unused_expert_counts_as_dead():
    counts = np.tile(np.array([500, 500, 500, 2, 500, 500, 500, 500]), (4, 1))  # expert 3: 0.4% of the mean
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)))
    imb = result.table("imbalance").iloc[0]
    assert imb["dead_experts"] == 1 and imb["unused_experts"] == 0 and imb["dead_expert_ids"] == "3"
    assert finding(result, rules.DEAD_EXPERTS).evidence["dead_experts"] == 1
    few = moe.analyze(make_trace(routing_lines([counts[:1] // 100], top_k=1)))  # 5 per expert: too few to judge
    assert few.table("imbalance")["dead_experts"].iloc[0] == 0


def test_one_token_calls_never_overflow_capacity():
    # A decode row sums 48 one-token calls (top-2 of 8); the summed counts are skewed, the calls are not.
    counts = np.array([[30, 10, 11, 3, 19, 5, 13, 5]])
    lines = routing_lines([counts], top_k=2, phase="decode")
    lines[-1]["calls"] = 48
    cap = moe.analyze(make_trace(lines)).table("capacity")
    assert cap["drop_rate"].max() == 0.0
    static1 = cap[(cap["gating"] == "static") & (cap["capacity_factor"] == 1.0)].iloc[0]
    assert static1["capacity_tokens_mean"] == 1  # ceil(1.0 × 2 / 8)
    assert static1["padding_waste"] == pytest.approx(1 - 96 / (48 * 8))
    # Taken as one dispatch, the same counts would drop tokens.
    assert capacity_metrics(counts, 1.0)["drop_rate"] > 0.2


def test_advice_follows_the_phase():
    counts = np.tile(np.array([900, 50, 20, 10, 5, 5, 5, 5]), (10, 1))
    train = moe.analyze(make_trace(routing_lines([counts], top_k=1, phase="train")), expert_bytes=1 << 20)
    decode = moe.analyze(make_trace(routing_lines([counts], top_k=1, phase="decode")), expert_bytes=1 << 20)
    assert "auxiliary load-balancing loss" in finding(train, rules.LOAD_IMBALANCE).recommendation
    assert "auxiliary" not in finding(decode, rules.LOAD_IMBALANCE).recommendation
    assert "replicate experts 0" in finding(decode, rules.LOAD_IMBALANCE).recommendation
    # Training needs every expert's weights each step: the buffering what-if is a table, not advice.
    assert len(train.table("cache_sizing")) == 3
    assert finding(train, rules.EXPERT_BUFFERING) is None
    buf = finding(decode, rules.EXPERT_BUFFERING)
    assert buf is not None and "MiB of GPU memory" in buf.recommendation


def test_garbage_values_are_skipped_not_raised():
    lines = routing_lines([np.full((2, 4), 5)], top_k=1)
    lines.append({"type": "counts", "step": 2, "phase": "train", "layer": LAYER.format(0), "counts": ["a", 1, 2, 3]})
    lines.append({"type": "counts", "step": 3, "phase": "train", "layer": LAYER.format(0), "counts": "1,2,3,4"})
    lines.append({"type": "tokens", "step": 3, "phase": "train", "layer": LAYER.format(0),
                  "experts": [[0, "x"], [9, 1], None]})
    result = moe.analyze(make_trace(lines))
    assert result.summary["skipped_rows"] == 2
    assert result.table("imbalance")["assignments"].iloc[0] == 40


def test_token_samples_that_miss_steps_fall_back_to_counts():
    counts = np.full((4, 4), 6)
    tokens = [[[0, 1], [2, 3]]] * 4
    lines = routing_lines([counts], top_k=2, tokens_by_layer=[tokens])
    full = moe.analyze(make_trace(lines))
    assert full.table("locality")["access_source"].tolist() == ["tokens"]
    assert full.table("cache_sizing")["accesses"].iloc[0] == 16
    partial = [ln for ln in lines if not (ln["type"] == "tokens" and ln["step"] == 3)]
    fallback = moe.analyze(make_trace(partial))
    assert fallback.table("locality")["access_source"].tolist() == ["counts"]
    assert fallback.table("cache_sizing")["accesses"].iloc[0] == 4 * 24
    forced = moe.analyze(make_trace(partial), access_source="tokens")
    assert forced.table("locality")["access_source"].tolist() == ["tokens"]


@pytest.mark.parametrize("options, message", [
    ({"target_hit_rate": 1.5}, "target_hit_rate"), ({"ep_ranks": 0}, "ep_ranks"),
    ({"redundant_experts": -1}, "redundant_experts"), ({"capacity_factor": 0}, "capacity_factor"),
    ({"access_source": "magic"}, "source"),
])
def test_bad_options_are_named(options, message):
    trace = make_trace(routing_lines([np.full((2, 4), 5)], top_k=1))
    with pytest.raises(ValueError, match=message):
        moe.analyze(trace, **options)


def test_steps_without_tokens_do_not_warn(recwarn):
    counts = np.zeros((3, 4), dtype=int)
    counts[2] = [5, 5, 5, 5]
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)))
    assert result.table("imbalance")["step_max_over_mean_mean"].iloc[0] == pytest.approx(1.0)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_locality_known_answers():
    rng = np.random.default_rng(5)
    num_experts, steps = 16, 6
    # Uniform random tokens: a re-used expert sits at a uniform depth of the LRU stack → mean (E - 1) / 2.
    tokens = [[[int(e)] for e in rng.integers(0, num_experts, 2000)] for _ in range(steps)]
    counts = np.stack([np.bincount(np.ravel(t), minlength=num_experts) for t in tokens])
    uniform = moe.analyze(make_trace(routing_lines([counts], top_k=1, tokens_by_layer=[tokens])))
    loc = uniform.table("locality").iloc[0]
    assert loc["reuse_distance_mean"] == pytest.approx((num_experts - 1) / 2, rel=0.05)
    # Steps that repeat one skewed load, except experts 0 and 1 take turns: the hot set stays put.
    load = np.arange(1, 9) * 10
    same = np.tile(load, (steps, 1))
    same[::2, 0] = 0
    same[1::2, 1] = 0
    loc = moe.analyze(make_trace(routing_lines([same], top_k=1))).table("locality").iloc[0]
    assert loc["hot_set_overlap"] == pytest.approx(1.0)
    assert loc["step_load_correlation"] == pytest.approx(np.corrcoef(same[0], same[1])[0, 1])
    assert loc["step_gap_mean"] == pytest.approx((6 * 5 + 2 * 2 * 2) / (6 * 5 + 2 * 2))
