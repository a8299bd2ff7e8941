"""Page layouts over real runs: each page shows its analyzers' Results and figures, never an analysis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import plotly
import pytest

from torchscope.analyzers.report.units import format_quantity
from torchscope.dashboard import pages
from torchscope.dashboard.pages import PAGES, PageContext, filter_findings, findings_count, render_page, runs_page
from torchscope.dashboard.run_cache import RunCache
from tests.conftest import SAMPLE_TRACES
from tests.dashboard.components import text_of

BUNDLES = ("moe_train", "ddp_gloo_2rank", "gpt_train")
NCCL = "a100_train_2rank_rank0_nccl.json.gz"


def blob_of(components) -> str:
    return json.dumps(components, cls=plotly.utils.PlotlyJSONEncoder)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, shared_traces):
    root: Path = tmp_path_factory.mktemp("pages") / "runs"
    root.mkdir()
    for name in BUNDLES:
        shutil.copytree(SAMPLE_TRACES / name, root / name)
    shutil.copy(shared_traces / NCCL, root / NCCL)
    cache = RunCache(root)
    for entry in cache.catalog():
        cache.load(entry.run_id)
    yield cache
    cache.shutdown()


def render(cache: RunCache, page: str, run_id: str, rank: int | None = None) -> dict:
    ctx = PageContext(run=cache.load(run_id), rank=rank, query={}, cache=cache)
    return json.loads(blob_of(render_page(page, ctx)))


def graph_ids(tree) -> set[str]:
    return {node["props"]["id"] for node in _walk(tree) if node.get("type") == "Graph"}


def _walk(node):
    if isinstance(node, list):
        for n in node:
            yield from _walk(n)
    elif isinstance(node, dict) and "props" in node:
        yield node
        yield from _walk(node["props"].get("children"))


def test_which_analyzers_each_page_waits_for():
    assert pages.required_analyzers("timeline") == set()
    assert pages.required_analyzers("recommendations") is None and pages.required_analyzers("compare") is None
    assert {"training_loop", "gpu_time"} <= pages.required_analyzers("overview")
    assert pages.page_analyzers("communication")[:2] == ["communication", "stragglers"]


@pytest.mark.parametrize("page", [p for p, _ in PAGES if p != "runs"])
@pytest.mark.parametrize("run_id", [*BUNDLES, NCCL])
def test_every_page_renders_for_every_run(cache, page, run_id):
    tree = render(cache, page, run_id)
    assert tree and "Traceback" not in text_of(tree)


def test_overview_draws_the_step_phases_and_names_skipped_analyzers(cache):
    tree = render(cache, "overview", NCCL)
    assert "overview-steps" in graph_ids(tree) and "overview-gpu" in graph_ids(tree)
    cpu = render(cache, "overview", "gpt_train")
    assert "overview-steps" in graph_ids(cpu) and "gpu_time: not available for this run: no GPU events" in text_of(cpu)


def test_moe_page_draws_its_figures_from_the_moe_tables(cache):
    ids = graph_ids(render(cache, "moe", "moe_train"))
    assert {"moe-heatmap", "moe-imbalance", "moe-buffering", "moe-placement"} <= ids


def test_two_rank_bundle_gets_a_rank_picker_and_the_straggler_figure(cache):
    tree = render(cache, "communication", "ddp_gloo_2rank")
    assert '"name": "rank"' in blob_of(tree) and "stragglers-lateness" in graph_ids(tree)
    one = render(cache, "communication", "ddp_gloo_2rank", rank=1)
    assert "(rank 0)" not in text_of(one) and "(rank 1)" in text_of(one)


def test_runs_page_shows_steps_and_median_step_from_the_training_loop_summary(cache):
    text = text_of(json.loads(blob_of(runs_page(cache))))
    run = cache.load("gpt_train")
    loop = run.report.result("training_loop").summary
    assert format_quantity(loop["step_median_ns"], "ns") in text
    assert "median step" in text and "gpt_train" in text and NCCL in text


def test_compare_page_diffs_two_runs_and_formats_summaries_by_key(cache):
    ctx = PageContext(run=cache.load("gpt_train"), rank=None, query={}, cache=cache, run_b=cache.load("moe_train"))
    blob = blob_of(pages.compare_page(ctx))
    assert "compare-verdict" in blob and "diff-rows" in blob
    median = cache.load("gpt_train").report.result("training_loop").summary["step_median_ns"]
    assert format_quantity(median, "ns") in blob


def test_recommendations_filter_and_count(cache):
    report = cache.load(NCCL).report
    assert report.findings, "the NCCL trace raises findings"
    first = report.findings[0]
    only = filter_findings(report, [first.analyzer], None)
    assert only and all(f.analyzer == first.analyzer for f in only)
    assert filter_findings(report, None, None) == report.findings
    assert filter_findings(report, None, ["no-such-severity"]) == []
    assert findings_count(1) == "1 finding" and findings_count(3) == "3 findings"
