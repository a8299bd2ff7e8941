"""The finding a person reads first: the step model's replayed findings, then the largest predicted gain."""

from __future__ import annotations

from torchscope.analyzers.core.findings import Finding
from torchscope.dashboard.ranking import one_per_finding, ranked_findings


def _f(analyzer: str, gain: float, severity: str = "warning") -> Finding:
    return Finding(id=f"{analyzer}.rule", analyzer=analyzer, severity=severity, title=f"{analyzer} {gain}",
                   evidence={}, recommendation="r", estimated_gain="g", gain_fraction=gain, rank=0, page="overview")


def test_replayed_findings_lead_then_gain_then_severity():
    old_big, old_small = _f("gpu_time", 0.7), _f("kernels", 0.1, "critical")
    replayed = _f("bottleneck", 0.3)
    none_info, none_critical = _f("memory", 0.0, "info"), _f("power", 0.0, "critical")
    got = ranked_findings([none_info, old_small, old_big, none_critical, replayed])
    assert got == [replayed, old_big, old_small, none_critical, none_info]


def _on(rank: int | None, gain: float, rule: str = "launch_bound", title: str = "t") -> Finding:
    return Finding(id=f"bottleneck.{rule}", analyzer="bottleneck", severity="critical", title=title, evidence={},
                   recommendation="r", estimated_gain="g", gain_fraction=gain, rank=rank, page="overview")


def test_one_card_per_finding_across_ranks_the_largest_gain_standing_for_the_others():
    a2, a0, a1 = _on(2, 0.5), _on(0, 0.3), _on(1, 0.4)
    b0 = _on(0, 0.45, "exposed_comm")
    second_on_0 = _on(0, 0.1, title="another slow thing")  # a rank's second finding of one id stays its own
    job = _on(None, 0.2, "stragglers")
    got = one_per_finding([a0, b0, a1, second_on_0, job, a2])
    assert got == [(a2, (2, 1, 0)), (b0, (0,)), (job, ()), (second_on_0, (0,))]
    assert one_per_finding([]) == []
