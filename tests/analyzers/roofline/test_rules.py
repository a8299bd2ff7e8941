"""Tests for analyzers/roofline/rules.py: ids in the one scheme, rule helpers."""

from __future__ import annotations

from torchscope.analyzers.core.findings import FINDING_ID_RE
from torchscope.analyzers.roofline import rules


def test_ids_follow_the_scheme():
    for finding_id in (rules.FUSE_ELEMENTWISE, rules.MIXED_PRECISION, rules.GEMM_EFFICIENCY, rules.LARGER_BATCH,
                       rules.FUSED_ATTENTION):
        assert FINDING_ID_RE.fullmatch(finding_id) and finding_id.startswith("roofline.")


def test_alignment_of_gemm_details():
    assert rules.aligned("M=4096 K=4096 N=4096")
    assert not rules.aligned("M=4097 K=4096 N=4096")
    assert rules.aligned("k=[3, 3] stride=[1, 1] groups=1")  # not a GEMM: nothing to align
