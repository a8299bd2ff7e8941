"""Notebook use: Finding, Result and Report render as HTML; the report gives its findings and tables as DataFrames."""

from __future__ import annotations

import pytest

from torchscope import analyzers
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import FINDING_COLUMNS


@pytest.fixture(scope="module")
def two_ranks(sample_traces):
    return analyzers.run_all(analyzers.load(sample_traces / "ddp_gloo_2rank"))


def test_finding_html_escapes_trace_content_and_shows_units():
    f = Finding(id="kernels.many_tiny_kernels", analyzer="kernels", severity="warning",
                title="<script>alert(1)</script> kernels", evidence={"tiny_time_ns": 2_500_000, "name": "a<b>"},
                recommendation="fuse", estimated_gain="about 5% of step time", rank=1)
    html = f._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&lt;b&gt;" in html
    assert "2.5 ms" in html and "rank 1" in html and "WARNING" in html


def test_report_html_lists_every_finding_and_each_result_its_tables(two_ranks):
    html = two_ranks._repr_html_()
    assert html.count("border-left") == len(two_ranks.findings) > 0
    assert f"{len(two_ranks.findings)} finding" in html and "skipped" in html
    res = two_ranks.result("training_loop", rank=1)
    rhtml = res._repr_html_()
    assert "training_loop" in rhtml and "rank 1" in rhtml
    assert all(f"{name}: {len(frame)} rows" in rhtml for name, frame in res.tables.items())


def test_findings_frame_is_ranked_like_report_findings(two_ranks):
    frame = two_ranks.findings_frame()
    assert list(frame.columns) == list(FINDING_COLUMNS)
    assert frame["id"].tolist() == [f.id for f in two_ranks.findings]
    assert frame["gain_fraction"].is_monotonic_decreasing


def test_table_stacks_every_rank_or_gives_one(two_ranks):
    per_rank = {r.rank: r.table("steps") for r in two_ranks.results if r.analyzer == "training_loop"}
    assert set(per_rank) == {0, 1}
    stacked = two_ranks.table("training_loop", "steps")
    assert stacked.columns[0] == "rank" and len(stacked) == sum(len(t) for t in per_rank.values())
    assert two_ranks.table("training_loop", "steps", rank=1).equals(per_rank[1])
    with pytest.raises(KeyError, match="no result of 'nope'"):
        two_ranks.table("nope", "steps")
    with pytest.raises(KeyError, match="has no table"):
        two_ranks.table("training_loop", "nope", rank=0)
