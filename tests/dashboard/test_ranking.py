"""The finding a person reads first: the step model's replayed findings, then the largest predicted gain."""

from __future__ import annotations

from torchscope.analyzers.core.findings import Finding
from torchscope.dashboard.ranking import ranked_findings


def _f(analyzer: str, gain: float, severity: str = "warning") -> Finding:
    return Finding(id=f"{analyzer}.rule", analyzer=analyzer, severity=severity, title=f"{analyzer} {gain}",
                   evidence={}, recommendation="r", estimated_gain="g", gain_fraction=gain, rank=0, page="overview")


def test_replayed_findings_lead_then_gain_then_severity():
    old_big, old_small = _f("gpu_time", 0.7), _f("kernels", 0.1, "critical")
    replayed = _f("bottleneck", 0.3)
    none_info, none_critical = _f("memory", 0.0, "info"), _f("power", 0.0, "critical")
    got = ranked_findings([none_info, old_small, old_big, none_critical, replayed])
    assert got == [replayed, old_big, old_small, none_critical, none_info]
