"""Page layouts over real runs: each page shows its analyzers' Results and figures, never an analysis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import plotly
import pytest

import pandas as pd

from torchscope.analyzers.bottleneck.analysis import MIN_GAIN_FRACTION
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.report.units import format_quantity
from torchscope.dashboard import pages
from torchscope.dashboard.pages import PAGES, PageContext, filter_findings, findings_count, render_page, runs_page
from torchscope.dashboard.run_cache import LoadedRun, RunCache
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
    # The Overview's first paint waits for the cheapest result that answers it; the slow ones fill in after.
    assert pages.required_analyzers("overview") == {"training_loop"}
    assert pages.page_analyzers("communication")[:2] == ["communication", "stragglers"]


@pytest.mark.parametrize("page", [p for p, _ in PAGES if p != "runs"])
@pytest.mark.parametrize("run_id", [*BUNDLES, NCCL])
def test_every_page_renders_for_every_run(cache, page, run_id):
    tree = render(cache, page, run_id)
    assert tree and "Traceback" not in text_of(tree)


def _without(run, analyzer: str):
    """The loaded run as if ``analyzer`` had not run (its results and findings gone, it is 'skipped')."""
    rep = run.report
    report = Report(rep.source, tuple(r for r in rep.results if r.analyzer != analyzer),
                    skipped={**rep.skipped, analyzer: "not run"}, errors=dict(rep.errors))
    return LoadedRun(run.entry, run.data, report, run.load_s)


def test_overview_leads_with_the_bottleneck_attribution_when_the_run_has_it(cache):
    run = cache.load(NCCL)
    tree = render(cache, "overview", NCCL)
    assert {"overview-attribution", "overview-gpu"} <= graph_ids(tree)
    res = run.report.result("bottleneck")
    causes = res.tables["causes"]
    top_label = causes.loc[causes["cause"] == res.summary["top_cause"], "label"].iloc[0]
    text = text_of(tree)
    assert "Top bottleneck" in text and top_label in text and "Step time" in text
    assert format_quantity(res.summary["step_ns"], "ns") in text


def test_overview_without_the_bottleneck_analyzer_uses_phases_and_the_best_finding(cache):
    run = _without(cache.load(NCCL), "bottleneck")
    tree = json.loads(blob_of(render_page("overview", PageContext(run, None, {}, cache))))
    assert "overview-steps" in graph_ids(tree) and "overview-attribution" not in graph_ids(tree)
    text = text_of(tree)
    assert "by phase" in text and "Top bottleneck" in text and "GPU busy" in text
    cpu = render(cache, "overview", "gpt_train")
    folded = json.loads(blob_of(pages.details_body("overview", PageContext(cache.load("gpt_train"), None, {}, cache))))
    assert "gpu_time: not available for this run: no GPU events" in text_of(folded) and "GPU busy" not in text_of(cpu)


def test_overview_verdict_from_a_fabricated_bottleneck_result():
    causes = pd.DataFrame({"cause": ["data_loading", "gpu_compute:gemm/conv"], "label": ["Data loading", "GEMM"],
                           "time_ns": [60, 40], "share": [0.6, 0.4], "evidence": ["", ""]})
    whatif = pd.DataFrame({"finding_id": ["bottleneck.data_loading"], "change": ["more workers"],
                           "step_ns_before": [100], "step_ns_after": [55], "gain_fraction": [0.45], "model": ["replay"]})
    finding = Finding("bottleneck.data_loading", "bottleneck", "critical", "Steps wait for data", {},
                      "Load batches in background workers", "45.0% of step time", 0.45, rank=0)
    res = Result("bottleneck", tables={"causes": causes, "whatif": whatif, "attribution": causes.assign(step=-1)},
                 summary={"step_ns": 25_000_000, "steps": 7, "top_cause": "data_loading", "top_cause_share": 0.6},
                 findings=(finding,), rank=0)
    items = {i.label: i for i in pages.overview_verdict(Report("x", (res,)), None)}
    assert items["Step time"].value == "25 ms" and "7 steps" in items["Step time"].detail
    assert items["Where the time goes"].value == "Data loading 60.0%, GEMM 40.0%"
    assert items["Top bottleneck"].value == "Data loading (60.0%)"
    assert items["Top bottleneck"].detail == "fix first: Steps wait for data (fixing it saves about 45.0% of step time, " \
                                             "predicted)"
    assert "MFU" not in items and "Energy per step" not in items  # values the run lacks are left out


def test_the_verdict_names_the_change_of_the_first_card_not_a_what_if_too_small_for_a_finding(cache):
    # gpt_train's best replayed change (a foreach optimizer, ~4%) is under the finding threshold; a roofline finding
    # leads the cards. The verdict had named the what-if, and the cards another change.
    run = cache.load("gpt_train")
    whatif = run.report.result("bottleneck").tables["whatif"]
    assert 0 < whatif["gain_fraction"].max() < MIN_GAIN_FRACTION
    assert not [f for f in run.report.findings if f.analyzer == "bottleneck"]
    tree = render(cache, "overview", "gpt_train")
    first_card = next(n for n in _walk(tree) if str(n.get("props", {}).get("className", "")).startswith("finding finding-"))
    items = {i.label: i for i in pages.overview_verdict(run.report, None)}
    top = items["Top bottleneck"].detail
    assert top.startswith("fix first: ") and top.split("fix first: ", 1)[1].split(" (fixing it")[0] in text_of(first_card)
    assert "replayed" not in top


def test_pages_the_run_cannot_fill_are_not_offered(cache):
    avail = pages.page_availability(cache.load("gpt_train"), runs_in_catalog=4)
    assert avail["overview"] is None and avail["timeline"] is None and avail["compare"] is None
    assert avail["kernels"] and "no GPU events" in avail["kernels"]
    assert pages.page_availability(cache.load(NCCL), 1)["compare"].startswith("only one run")
    assert pages.page_availability(cache.load(NCCL), 2)["kernels"] is None


def test_moe_page_draws_its_figures_from_the_moe_tables(cache):
    ids = graph_ids(render(cache, "moe", "moe_train"))
    assert {"moe-heatmap", "moe-imbalance", "moe-buffering", "moe-placement"} <= ids


def test_two_rank_bundle_gets_a_rank_picker_and_the_straggler_figure(cache):
    tree = render(cache, "communication", "ddp_gloo_2rank")
    assert '"name": "rank"' in blob_of(tree) and "stragglers-lateness" in graph_ids(tree)
    ctx = PageContext(run=cache.load("ddp_gloo_2rank"), rank=1, query={}, cache=cache)
    one = json.loads(blob_of(pages.details_body("communication", ctx)))
    assert "(rank 0)" not in text_of(one) and "(rank 1)" in text_of(one)


def _figures(tree) -> dict:
    return {node["props"]["id"]: node["props"]["figure"] for node in _walk(tree) if node.get("type") == "Graph"}


@pytest.mark.parametrize("page, graph", [("memory", "memory-rss"), ("communication", "communication-exposed"),
                                         ("roofline", "roofline-mfu")])
def test_all_ranks_draws_every_rank_and_a_picked_rank_only_itself(cache, page, graph):
    every = _figures(render(cache, page, "ddp_gloo_2rank"))[graph]
    assert sorted(trace["name"] for trace in every["data"]) == ["rank 0", "rank 1"]
    one = _figures(render(cache, page, "ddp_gloo_2rank", rank=1))[graph]
    assert len(one["data"]) == 1 and "rank 0" not in blob_of(one)


def test_all_ranks_kernel_time_is_summed_over_ranks():
    # No recorded multi-rank GPU run here has kernels on more than one rank's trace: two ranks' tables made up.
    def kernels(rank, gemm, elementwise):
        return Result("kernels", rank=rank, tables={
            "categories": pd.DataFrame({"category": ["gemm/conv", "elementwise"], "total_ns": [gemm, elementwise]}),
            "by_name": pd.DataFrame({"name": ["sgemm", "add"], "total_ns": [gemm, elementwise],
                                     "category": ["gemm/conv", "elementwise"]})})

    rep = Report(source="x", results=(kernels(0, 3_000_000, 1_000_000), kernels(1, 5_000_000, 500_000)))
    figs = dict(pages._dedicated_figures("kernels", rep, None))
    cats = figs["kernels-categories"]
    assert "2 ranks summed" in cats.layout.title.text
    assert sorted(cats.data[0].x * 1e6) == pytest.approx([1_500_000, 8_000_000])  # ms axis, summed per category
    one = dict(pages._dedicated_figures("kernels", rep, 1))["kernels-categories"]
    assert "summed" not in one.layout.title.text and sorted(one.data[0].x * 1e6) == pytest.approx([500_000,
                                                                                                   5_000_000])


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


def test_compare_wording_matches_the_statistics_and_warns_on_different_workloads():
    from types import SimpleNamespace as NS

    few = NS(verdict="not_significant", n_base=2, n_new=2)
    many = NS(verdict="not_significant", n_base=40, n_new=40)
    assert pages.verdict_words(few) == "too few steps to test (2 vs 2)"
    assert pages.verdict_words(many) == "within noise (not significant)"
    assert pages.verdict_words(NS(verdict="regression", n_base=9, n_new=9)) == "regression"

    def report(ratios: dict):
        rows = {k: NS(comparison=NS(ratio=v)) for k, v in ratios.items()}
        return NS(row=rows.get)

    warning = pages.workload_mismatch(report({"work/ops_per_step": 2.9, "work/kernels_per_step": 1.1}))
    assert "not the same workload" in warning and "ops per step differ 2.90×" in warning
    assert pages.workload_mismatch(report({"work/ops_per_step": 1.02})) == ""
    assert "2.00×" in pages.workload_mismatch(report({"work/kernels_per_step": 0.5}))


def test_compare_page_leads_with_the_step_time_verdict(cache):
    ctx = PageContext(run=cache.load("gpt_train"), rank=None, query={}, cache=cache, run_b=cache.load(NCCL))
    text = text_of(json.loads(blob_of(pages.compare_page(ctx))))
    assert "Step time" in text and "→" in text
    assert "not the same workload" in text  # a CPU GPT run and an A100 ResNet run
    assert "not_significant" not in text


def test_all_ranks_means_every_rank_side_by_side(cache):
    run = cache.load("ddp_gloo_2rank")
    tree = render(cache, "overview", "ddp_gloo_2rank")
    ids = graph_ids(tree)
    assert {"ranks-compare", "ranks-phases"} <= ids
    figs = {n["props"]["id"]: n["props"]["figure"] for n in _walk(tree) if n.get("type") == "Graph"}
    rows = figs["ranks-compare"]["data"]
    assert [t["name"] for t in rows] == ["Median step time", "Exposed communication",
                                         "Straggler lateness at collectives (median)"]
    for t in rows:  # every rank in every row
        assert {str(x) for x in t["x"]} == {str(r) for r in run.ranks}, t["name"]
    assert {t["y"][i] for t in figs["ranks-phases"]["data"] for i in range(len(t["y"]))} == {"rank 0", "rank 1"}
    assert "rank 0; pick a rank above" in blob_of(tree)  # the one-rank step plot says whose it is
    one = render(cache, "overview", "ddp_gloo_2rank", rank=1)
    assert "ranks-compare" not in graph_ids(one)


def test_overview_says_what_was_traced_and_how_the_run_ended(tmp_path):
    """Issue 14: '3 of N steps traced (...)' and 'incomplete: ...' on the Overview."""
    import json

    from dash import html

    from torchscope import analyzers
    from torchscope.dashboard import pages
    from tests.analyzers.synthetic_kineto import KinetoBuilder

    b = KinetoBuilder()
    for n in range(3):
        b.step(n, n * 1000, 1000)
        b.op("aten::mm", n * 1000 + 10, 500)
    folder = tmp_path / "run"
    folder.mkdir()
    b.write(folder / "rank0.trace.json")
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "complete": False, "incomplete_reason": "KeyboardInterrupt",
        "ended_by": "KeyboardInterrupt", "world_size": 1}))
    trace = analyzers.load(folder)
    trace = trace[0] if hasattr(trace, "ranks") else trace

    class _Run:
        traces = [trace]
        report = analyzers.run_all(trace)

    class _Ctx:
        run = _Run()
        rank = None

    lines = [p.children for p in pages.run_status_lines(_Ctx()) if isinstance(p, html.P)]
    assert lines[0].endswith("steps traced")
    assert any(line.startswith("incomplete") for line in lines)


def test_a_verdict_says_how_its_value_stands_for_the_ranks():
    assert pages._over_ranks([1.0]) == ""
    assert pages._over_ranks([1.0, 3.0]) == "median over 2 ranks"
    assert pages._over_ranks(["fp32_matrix", "fp32_matrix"]) == "on all 2 ranks"  # not a "median" of a dtype
    assert pages._over_ranks(["bf16", "fp32"]) == "the first rank's; the 2 ranks differ"
