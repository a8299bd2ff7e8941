"""Generic rendering of any Result: summary values in words and their keys' units, finding cards, grids."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.dashboard.result_view import (
    analyzer_section, duplicate_tables, findings_list, result_view, summary_view, table_view,
)
from tests.conftest import SAMPLE_TRACES
from tests.dashboard.components import text_of, tree


@pytest.fixture(scope="module")
def gpt_report() -> Report:
    return analyze_path(str(SAMPLE_TRACES / "gpt_train"))[1]


def test_summary_values_read_in_words_and_units_and_missing_or_containers_are_left_out():
    out = text_of(tree(summary_view({"step_median_ns": 12_345_678, "idle_pct": 40.0, "kernels": 123_456,
                                     "peak_rss_bytes": 3 * 2**30, "warmup_steps": [0], "roofs": {"a": 1},
                                     "phase_note": None, "mfu_mean": float("nan")})))
    assert "step median 12.35 ms" in out and "idle 40.0%" in out and "kernels 123,456" in out
    assert "peak rss 3 GiB" in out and "warmup" not in out and "roofs" not in out
    assert "phase note" not in out and "mfu" not in out and "nan" not in out.lower() and "None" not in out
    assert tree(summary_view({}))["props"].get("children") is None
    documented = tree(summary_view({"steps": 3}, {"steps": "number of steps"}))
    assert '"title": "number of steps"' in json.dumps(documented)


def test_finding_card_links_to_its_page_and_formats_its_evidence():
    f = Finding(id="gpu_time.gpu_idle_host_launch", analyzer="gpu_time", severity="warning", title="GPU waits",
                evidence={"host_wait_ns": 2_500_000, "idle_pct": 30.0}, recommendation="use CUDA graphs",
                estimated_gain="about 20%", gain_fraction=0.2, rank=1, page="timeline")
    card = tree(findings_list([f], "run=a.json"))
    blob = json.dumps(card)
    assert '"href": "/timeline?run=a.json"' in blob
    text = text_of(card)
    assert "GPU waits" in text and "rank 1" in text and "use CUDA graphs" in text and "about 20%" in text
    assert "2.5 ms" in text and "30.0%" in text
    assert text_of(tree(findings_list([], empty="nothing here"))) == "nothing here"


def test_a_card_for_several_ranks_names_them_and_links_to_the_shown_rank_and_says_its_gain_once():
    f = Finding(id="bottleneck.launch_bound", analyzer="bottleneck", severity="critical", title="GPU idle",
                evidence={}, recommendation="CUDA graphs", estimated_gain="57.3% of step time (about 127.5 ms)",
                gain_fraction=0.573, rank=2, page="overview")
    card = tree(findings_list([f], "run=job", ranks=[tuple(range(2, 66))], n_ranks=64, here="overview"))
    text = text_of(card)
    assert "on ranks 2, 3, 4, 5, 6, 7 and 58 more (64 of 64); rank 2's shown" in text
    assert text.count("57.3%") == 1, text  # the share was said twice: "57.3% of step time · 57.3% of step time"
    assert '"href": "/overview?run=job&rank=2"' in json.dumps(card)  # another rank's evidence: still a link
    alone = tree(findings_list([f], "run=job&rank=2", here="overview"))
    assert "show evidence" not in text_of(alone)  # its own evidence is the page it is on
    assert "rank 2" in text_of(alone)


def test_a_table_is_a_grid_with_words_in_headers_and_units_in_cells():
    df = pd.DataFrame({"step": [-1, 3], "total_ns": [1_000_000, 2_500], "name": ["a", "b"]})
    view = tree(table_view("steps", df, "t1"))
    grid = view["props"]["children"][2]["props"]
    assert grid["id"] == {"type": "grid", "grid": "t1"}
    assert [c["headerName"] for c in grid["columnDefs"]] == ["Step", "Total (time)", "Name"]
    assert [r["total_ns__text"] for r in grid["rowData"]] == ["1 ms", "2.5 µs"]
    assert grid["rowData"][0]["total_ns"] == 1_000_000  # sorting works on the raw value
    assert grid["rowData"][0]["step__text"] == "whole trace"
    assert "2 rows" in text_of(view)


def test_a_table_that_repeats_another_tables_first_rows_is_left_out():
    full = pd.DataFrame({"name": list("abcd"), "total_ns": [4, 3, 2, 1]})
    tables = {"top": full.head(2), "all": full, "other": full.assign(total_ns=0)}
    assert duplicate_tables(tables) == {"top"}
    view = json.dumps(tree(result_view(Result("kernels", tables=tables, rank=0))))
    assert '"table-kernels-all-0"' in view and '"table-kernels-top-0"' not in view
    assert "left out as the first rows of another table: top" in view


def test_a_real_result_shows_summary_findings_and_every_table(gpt_report):
    loop = gpt_report.result("training_loop")
    view = tree(result_view(loop, "run=gpt_train"))
    blob = json.dumps(view)
    assert view["props"]["children"][0]["props"]["children"] == "training_loop (rank 0)"
    for name in loop.tables:
        assert f'"table-training_loop-{name}-0"' in blob
    assert "steps" in text_of(view)
    only = json.dumps(tree(result_view(loop, tables=["steps", "nope"])))
    assert '"table-training_loop-steps-0"' in only and "table-training_loop-phases-0" not in only


def test_analyzer_section_says_why_an_analyzer_did_not_run(gpt_report):
    assert "not available for this run: no GPU events" in text_of(tree(analyzer_section(gpt_report, "kernels")))
    failed = Report("x", (), errors={"power": "ValueError: boom"})
    assert "the analyzer failed (ValueError: boom)" in text_of(tree(analyzer_section(failed, "power")))
    assert "not installed" in text_of(tree(analyzer_section(gpt_report, "no_such_analyzer")))
    rank0 = Result("stragglers", rank=None)
    both = Report("x", (rank0,))
    assert json.dumps(tree(analyzer_section(both, "stragglers", rank=3))).count('"data-analyzer": "stragglers"') == 1
