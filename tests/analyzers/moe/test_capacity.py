"""Static expert capacity: drops, padding and the capacity factor that meets a drop-rate target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from torchscope.analyzers.moe.capacity import capacity_for_drop_rate, capacity_metrics, pooled_capacity
from torchscope.analyzers.moe.routing import routing_from_stream
from tests.analyzers.moe.synthetic import routing_lines


def test_capacity_search_meets_its_target():
    counts = np.array([[70, 10, 10, 10], [40, 40, 10, 10]])
    cf = capacity_for_drop_rate(counts, 0.0)
    assert cf == pytest.approx(2.77)  # 70 tokens over a mean of 25: ceil(cf × 25) >= 70 from cf > 2.76
    assert capacity_metrics(counts, cf)["drop_rate"] == 0.0
    assert capacity_metrics(counts, cf - 0.01)["drop_rate"] > 0.0
    loose = capacity_for_drop_rate(counts, 0.05)
    assert loose < cf and capacity_metrics(counts, loose)["drop_rate"] <= 0.05


def test_even_load_at_factor_one_has_neither_drops_nor_padding():
    m = capacity_metrics(np.full((3, 4), 25), 1.0)
    assert m["drop_rate"] == 0.0 and m["padding_waste"] == 0.0
    assert m["capacity_mean"] == 25 and m["slots"] == 3 * 4 * 25


def test_summed_calls_count_as_that_many_dispatches():
    counts = np.array([[8, 0, 0, 0]])  # 8 one-token calls of top-1 summed into one row
    assert capacity_metrics(counts, 1.0)["drop_rate"] == pytest.approx(6 / 8)  # one dispatch: capacity 2
    assert capacity_metrics(counts, 1.0, np.array([8]))["drop_rate"] == 0.0  # eight dispatches: capacity 1 each


def test_pooled_capacity_weights_layers_by_their_assignments():
    lines = routing_lines([np.array([[4, 0]]), np.array([[1, 1]])], top_k=1)
    routing = routing_from_stream(pd.DataFrame.from_records(lines))
    pooled = pooled_capacity(routing, 1.0)
    assert pooled["drop_rate"] == pytest.approx(2 / 6)  # layer 0 drops 2 of 4, layer 1 none of 2
    assert pooled["padding_waste"] == pytest.approx(2 / 6)  # 4 + 2 slots, layer 0 pads 2
