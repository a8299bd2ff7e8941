"""Expert placement planner: contiguous default vs greedy replicate-and-pack, never worse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchscope.analyzers.moe.expert_placement import (
    balanced_placement, contiguous_placement, plan_placement, rank_loads,
)


def test_contiguous_blocks():
    placement = contiguous_placement(8, 4)
    assert placement.rank_experts == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert contiguous_placement(5, 2).rank_experts == ((0, 1, 2), (3, 4))
    with pytest.raises(ValueError, match="at least one expert per rank"):
        contiguous_placement(2, 4)


def test_hot_neighbours_are_split_and_the_hottest_replicated():
    # Experts 0 and 1 are hot and sit on the same rank by default.
    load = np.array([400, 300, 50, 50, 50, 50, 50, 50], dtype=float)
    plan = plan_placement(load, num_ranks=4, redundant=4)
    assert plan.max_over_mean_before == pytest.approx(700 / 250)
    assert plan.max_over_mean_after < 1.3
    assert plan.replicated[:2] == (0, 1)
    # Replicas of one expert sit on different ranks, and tokens are conserved.
    for experts in plan.after.rank_experts:
        assert len(set(experts)) == len(experts)
    assert plan.load_after.sum() == pytest.approx(load.sum())
    assert plan.after.replicas.sum() == 8 + 4


def test_uniform_load_stays_put():
    plan = plan_placement(np.full(16, 10.0), num_ranks=4, redundant=0)
    assert plan.max_over_mean_before == pytest.approx(1.0)
    assert plan.after == plan.before  # nothing to gain: the default is kept


def test_all_tokens_to_one_expert_needs_replicas_to_spread():
    load = np.zeros(8)
    load[3] = 1000
    without = plan_placement(load, num_ranks=4, redundant=0)
    assert without.max_over_mean_after == pytest.approx(4.0)  # one rank does everything
    with_replicas = plan_placement(load, num_ranks=4, redundant=3)
    assert with_replicas.after.replicas[3] == 4
    assert with_replicas.max_over_mean_after == pytest.approx(1.0)


def test_rank_loads_of_a_step_matrix():
    placement = balanced_placement(np.array([4.0, 1, 1, 1]), num_ranks=2, redundant=2)
    steps = np.array([[4, 1, 1, 1], [8, 0, 0, 0]], dtype=float)
    per_step = rank_loads(placement, steps)
    assert per_step.shape == (2, 2)
    assert per_step.sum(axis=1).tolist() == pytest.approx([7, 8])


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=8).flatmap(
        lambda r: st.tuples(
            st.just(r),
            st.lists(st.integers(min_value=0, max_value=10_000), min_size=r, max_size=40),
            st.integers(min_value=0, max_value=12),
        )
    )
)
def test_plan_is_never_worse_than_the_default(case):
    num_ranks, load, redundant = case
    load = np.asarray(load, dtype=float)
    plan = plan_placement(load, num_ranks, redundant)
    assert plan.load_after.max() <= plan.load_before.max() + 1e-9
    assert plan.load_after.sum() == pytest.approx(load.sum())
    assert set(e for experts in plan.after.rank_experts for e in experts) == set(range(len(load)))
    assert plan.after.replicas.max() <= num_ranks


def test_swaps_fix_what_greedy_packing_misses():
    # Largest-first packing gives {3, 2, 2} | {3, 2} = 7 | 5; one swap reaches the optimum 6 | 6.
    placement = balanced_placement(np.array([3.0, 3, 2, 2, 2]), num_ranks=2, redundant=0)
    assert sorted(rank_loads(placement, np.array([3.0, 3, 2, 2, 2])).tolist()) == [6.0, 6.0]
    # With replicas, no rank ends up holding two copies of one expert.
    load = np.array([50.0, 40, 30, 5, 5, 5, 5, 5])
    placement = balanced_placement(load, num_ranks=4, redundant=4)
    for experts in placement.rank_experts:
        assert len(set(experts)) == len(experts)
