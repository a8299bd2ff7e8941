"""The MoE finding ids follow the one scheme and every rule stays quiet on an even load."""

from __future__ import annotations

import numpy as np
import pytest

from torchscope.analyzers.core.findings import FINDING_ID_RE
from torchscope.analyzers.moe import analysis as moe
from torchscope.analyzers.moe import findings as rules
from tests.analyzers.moe.synthetic import make_trace, routing_lines

IDS = (rules.TOKEN_DROPS, rules.CAPACITY_PADDING, rules.DEAD_EXPERTS, rules.LOAD_IMBALANCE,
       rules.IMBALANCE_GROWING, rules.EXPERT_BUFFERING)


@pytest.mark.parametrize("fid", IDS)
def test_ids_are_moe_dot_rule(fid):
    assert FINDING_ID_RE.match(fid) and fid.startswith("moe.")


def test_ids_are_distinct():
    assert len(set(IDS)) == len(IDS)


def test_raised_findings_use_the_module_ids():
    counts = np.zeros((6, 8), dtype=int)
    counts[:, 2] = 300
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)), capacity_factor=1.0)
    assert {f.id for f in result.findings} == {rules.TOKEN_DROPS, rules.DEAD_EXPERTS, rules.LOAD_IMBALANCE}


def test_token_drops_take_precedence_over_padding():
    counts = np.zeros((4, 8), dtype=int)
    counts[:, 0] = 100  # drops at any factor < 8, and most slots of the other experts are padding
    result = moe.analyze(make_trace(routing_lines([counts], top_k=1)), capacity_factor=2.0)
    ids = {f.id for f in result.findings}
    assert rules.TOKEN_DROPS in ids and rules.CAPACITY_PADDING not in ids
