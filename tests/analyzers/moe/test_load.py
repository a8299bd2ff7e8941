"""Expert load and imbalance metrics on load vectors with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from torchscope.analyzers.moe.load import (
    DEAD_EXPERT_MIN_ASSIGNMENTS, finite_stat, imbalance_metrics, imbalance_table, imbalance_trend, load_table,
)
from torchscope.analyzers.moe.routing import routing_from_stream
from tests.analyzers.moe.synthetic import routing_lines


def _routing(counts, top_k=1):
    return routing_from_stream(pd.DataFrame.from_records(routing_lines([np.asarray(counts)], top_k=top_k)))


def test_imbalance_metrics_of_even_skewed_and_empty_rows():
    m = imbalance_metrics(np.array([[5, 5, 5, 5], [20, 0, 0, 0], [0, 0, 0, 0]]))
    assert m["max_over_mean"][:2].tolist() == pytest.approx([1.0, 4.0])
    assert m["entropy_norm"][:2].tolist() == pytest.approx([1.0, 0.0])
    assert m["cv"][0] == pytest.approx(0.0) and m["cv"][1] == pytest.approx(math.sqrt(3))
    assert m["idle_experts"].tolist() == [0, 3, 4]
    assert all(np.isnan(m[k][2]) for k in ("max_over_mean", "cv", "entropy_norm"))


def test_imbalance_trend_of_a_rising_series():
    ratio, slope = imbalance_trend(np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]))
    assert ratio == pytest.approx(3.0) and slope > 0
    assert all(math.isnan(v) for v in imbalance_trend(np.array([1.0, np.nan, 2.0])))


def test_finite_stat_skips_nan():
    assert finite_stat(np.mean, [1.0, np.nan, 3.0]) == 2.0
    assert math.isnan(finite_stat(np.max, [np.nan]))


def test_load_table_shares_sum_to_one_per_layer():
    table = load_table(_routing([[3, 1, 0, 0], [1, 3, 0, 0]]))
    assert table["assignments"].tolist() == [4, 4, 0, 0]
    assert table["share"].sum() == pytest.approx(1.0)
    assert table["load_over_mean"].tolist() == pytest.approx([2.0, 2.0, 0.0, 0.0])


def test_dead_experts_are_judged_only_with_enough_assignments():
    enough = DEAD_EXPERT_MIN_ASSIGNMENTS * 4
    judged = imbalance_table(_routing([[enough // 3, enough // 3, enough - 2 * (enough // 3), 0]])).iloc[0]
    assert judged["dead_experts"] == 1 and judged["unused_experts"] == 1 and judged["dead_expert_ids"] == "3"
    few = imbalance_table(_routing([[5, 5, 5, 0]])).iloc[0]
    assert few["dead_experts"] == 0 and few["unused_experts"] == 0
