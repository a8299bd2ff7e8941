"""Report: findings ordered by gain, then severity, analyzer and id; result lookup by analyzer and rank."""

from __future__ import annotations

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result


def _f(id_: str, analyzer: str, severity: str, gain: float, rank: int | None = None) -> Finding:
    return Finding(id=id_, analyzer=analyzer, severity=severity, title=id_, evidence={}, recommendation="r",
                   estimated_gain="g", gain_fraction=gain, rank=rank)


def test_findings_largest_gain_first_then_severity_then_analyzer_and_id():
    a = Result("kernels", rank=0, findings=(_f("kernels.tiny", "kernels", "info", 0.1),
                                            _f("kernels.fp32", "kernels", "critical", 0.1)))
    b = Result("gpu_time", rank=0, findings=(_f("gpu_time.idle", "gpu_time", "warning", 0.3),
                                             _f("gpu_time.b", "gpu_time", "info", 0.1),
                                             _f("gpu_time.a", "gpu_time", "info", 0.1)))
    report = Report(source="x", results=(a, b))
    assert [f.id for f in report.findings] == ["gpu_time.idle", "kernels.fp32", "gpu_time.a", "gpu_time.b",
                                               "kernels.tiny"]


def test_result_lookup_by_name_and_rank():
    r0, r1, job = Result("gpu_time", rank=0), Result("gpu_time", rank=1), Result("stragglers")
    report = Report(source="x", results=(r0, r1, job), skipped={"power": "no samples"})
    assert report.result("gpu_time") is r0
    assert report.result("gpu_time", rank=1) is r1
    assert report.result("stragglers") is job
    assert report.result("gpu_time", rank=7) is None and report.result("power") is None
    assert report.skipped == {"power": "no samples"} and dict(report.errors) == {}


def test_empty_report_has_no_findings():
    assert Report(source="x", results=()).findings == []
