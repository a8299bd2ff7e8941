"""The text report: summary first, findings in gain order, values in readable units."""

from __future__ import annotations

import json

import pytest

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.report.json_report import render_json
from torchscope.analyzers.report.text import SHOWN_FINDINGS, evidence_text, render_text, summary_items


@pytest.fixture(scope="module")
def job128(shared_traces):
    return analyze_path(str(shared_traces / "job128_rank0.json.gz"))


def test_text_report_shows_summary_then_findings_in_gain_order(job128):
    out = render_text(*job128)
    assert out.index("Summary") < out.index("Findings")
    assert "step median:" in out and "ms" in out and "top kernels (share of GPU work" in out
    first = out.index("1. [")
    second = out.index("2. [")
    assert first < second
    # The text lists findings in the same (gain) order as the JSON.
    titles = [f["title"] for f in json.loads(render_json(*job128))["findings"]]
    assert out.index(titles[0]) < out.index(titles[1])


def _finding(i: int, gain: float) -> Finding:
    return Finding(id="toy.rule", analyzer="toy", severity="info", title=f"finding {i}",
                   evidence={"wait_ns": 2_500_000, "idle_pct": 12.345, "peak_bytes": 3 * 2**30},
                   recommendation="do less", estimated_gain="some", gain_fraction=gain)


def test_summary_and_evidence_values_read_in_their_keys_units():
    res = Result("toy", summary={"step_median_ns": 12_345_678, "idle_pct": 40.0, "steps": 12,
                                 "warmup_steps": [0, 1], "roofs": {"bf16": 1.0}})
    assert summary_items(res) == [("step median", "12.35 ms"), ("idle", "40.0%"), ("steps", "12"),
                                  ("warmup steps", "[0, 1]")]
    assert evidence_text(_finding(0, 0.1)) == "wait_ns=2.5 ms, idle_pct=12.3%, peak_bytes=3 GiB"


def test_more_findings_than_shown_are_counted(job128):
    traces, _ = job128
    many = Result("toy", findings=tuple(_finding(i, 0.5) for i in range(SHOWN_FINDINGS + 3)))
    out = render_text(traces, Report(source="x", results=(many,), skipped={"power": "no samples"}))
    assert f"{SHOWN_FINDINGS}. [info]" in out and f"{SHOWN_FINDINGS + 1}. [" not in out
    assert "... 3 more (see --format json)" in out
    assert "Skipped\n  power: no samples" in out
