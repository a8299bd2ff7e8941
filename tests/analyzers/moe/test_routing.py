"""Reading the moe JSONL stream into per-layer routing tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers.moe.routing import routing_from_stream
from tests.analyzers.moe.synthetic import LAYER, routing_lines


def _read(lines, manifest=None):
    return routing_from_stream(pd.DataFrame.from_records(lines), manifest=manifest)


def test_counts_lines_become_one_matrix_per_layer_in_layer_order():
    lines = routing_lines([np.full((3, 4), 2), np.full((3, 8), 1)], top_k=2)
    routing = _read(lines[::-1])  # stream order does not matter: router lines set the layer order
    assert [lr.layer for lr in routing.layers] == [LAYER.format(0), LAYER.format(1)]
    first = routing.layers[0]
    assert first.num_experts == 4 and first.top_k == 2 and first.layer_index == 0
    assert first.counts.shape == (3, 4) and first.steps.tolist() == [0, 1, 2]
    assert first.tokens.tolist() == [4, 4, 4] and first.calls.tolist() == [1, 1, 1]
    assert routing.phases == ("train",) and routing.skipped_rows == 0


def test_empty_or_foreign_frames_give_no_layers():
    assert routing_from_stream(None).layers == ()
    assert routing_from_stream(pd.DataFrame({"x": [1]})).layers == ()


def test_without_router_lines_the_first_counts_line_sets_the_experts_and_top_k_is_inferred():
    lines = routing_lines([np.array([[4, 2, 2, 0], [2, 2, 2, 2]])], top_k=2, router=False)
    lines.append({"type": "counts", "step": 2, "phase": "train", "layer": LAYER.format(0), "counts": [1, 1, 1]})
    routing = _read(lines)
    (lr,) = routing.layers
    assert lr.num_experts == 4 and lr.top_k == 2 and lr.layer_index == -1
    assert routing.skipped_rows == 1


def test_tokens_only_layer_rebuilds_counts_per_step_and_phase():
    lines = [{"type": "tokens", "step": s, "phase": "decode", "layer": "g", "experts": [[0, 1], [0, 2]]}
             for s in range(2)]
    (lr,) = _read(lines).layers
    assert lr.num_experts == 3 and lr.top_k == 2
    assert lr.counts.tolist() == [[2, 1, 1], [2, 1, 1]] and lr.tokens.tolist() == [2, 2]
    assert lr.token_samples == ((0, 1), (0, 2), (0, 1), (0, 2)) and lr.token_sample_steps == (0, 0, 1, 1)


def test_calls_weights_and_expert_size():
    lines = routing_lines([np.array([[3, 1]])], top_k=1, phase="decode")
    lines[0].update({"expert_params": 10, "param_bytes": 2})
    lines[-1].update({"calls": 4, "weights": [0.5, 0.25]})
    (lr,) = _read(lines).layers
    assert lr.calls.tolist() == [4] and lr.weights.tolist() == [[0.5, 0.25]] and lr.expert_bytes == 20
    lines[0].pop("expert_params")
    (lr,) = _read(lines, manifest={"options": {"moe_expert_bytes": 64}}).layers
    assert lr.expert_bytes == 64


def test_step_counts_sum_the_rows_of_a_step():
    lines = routing_lines([np.array([[1, 0], [0, 1]])], top_k=1)
    lines[-1]["step"] = 0  # both rows in step 0
    (lr,) = _read(lines).layers
    steps, counts = lr.step_counts()
    assert steps.tolist() == [0] and counts.tolist() == [[1, 1]]
    assert lr.step_counts("decode")[1].shape == (0, 2)
