"""The text report: summary first, findings in gain order, values in readable units."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pytest

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.report.json_report import render_json
from torchscope.analyzers.report.text import (
    DEFAULT_WIDTH, MIN_WIDTH, SHOWN_FINDINGS, evidence_text, output_width, render_text, status_lines, summary_items,
    traced_steps_line,
)
from torchscope.cli import main


@pytest.fixture(scope="module")
def job128(shared_traces):
    return analyze_path(str(shared_traces / "job128_rank0.json.gz"))


def test_text_report_shows_summary_then_findings_in_gain_order(job128):
    traces, report = job128
    more = Report(source=report.source, results=(
        *report.results, Result("toy", findings=(_finding(1, 0.02), _finding(2, 0.6), _finding(3, 0.3)))))
    out = render_text(traces, more)
    assert out.index("Summary") < out.index("Findings")
    assert "step median:" in out and "ms" in out and "top kernels (share of GPU work" in out
    assert out.index("1. [") < out.index("2. [") < out.index("3. [")
    # The text lists findings in the same (gain) order as the JSON.
    titles = [f["title"] for f in json.loads(render_json(traces, more))["findings"]]
    toys = [t for t in titles if t.startswith("finding ")]
    assert toys == ["finding 2", "finding 3", "finding 1"]
    assert out.index("finding 2") < out.index("finding 3") < out.index("finding 1")


def _finding(i: int, gain: float) -> Finding:
    return Finding(id="toy.rule", analyzer="toy", severity="info", title=f"finding {i}",
                   evidence={"wait_ns": 2_500_000, "idle_pct": 12.345, "peak_bytes": 3 * 2**30},
                   recommendation="do less", estimated_gain="some", gain_fraction=gain)


def test_summary_and_evidence_values_read_in_their_keys_units():
    res = Result("toy", summary={"step_median_ns": 12_345_678, "idle_pct": 40.0, "steps": 12,
                                 "warmup_steps": [0, 1], "roofs": {"bf16": 1.0}})
    assert summary_items(res) == [("step median", "12.35 ms"), ("idle", "40.0%"), ("steps", "12"),
                                  ("warmup steps", "0, 1")]
    assert evidence_text(_finding(0, 0.1)) == "wait: 2.5 ms; idle: 12.3%; peak: 3 GiB"


def test_more_findings_than_shown_are_counted(job128):
    traces, _ = job128
    many = Result("toy", findings=tuple(_finding(i, 0.5) for i in range(SHOWN_FINDINGS + 3)))
    out = render_text(traces, Report(source="x", results=(many,), skipped={"power": "no samples"}))
    assert f"{SHOWN_FINDINGS}. [info]" in out and f"{SHOWN_FINDINGS + 1}. [" not in out
    assert "... 3 more findings (see --format json)" in out
    assert "Skipped\n  power: no samples" in out


# --- output for people: width, labelled values, names, timestamps, plurals (issue 14, item 7) ------------

#: What a Python repr of a dict or list looks like inside a line: {'a': ..., [..], ={, =[, [] or {}.
_REPR = re.compile(r"\{'|\['|': |=\{|=\[|\[\]|\{\}")


def _every_run(shared_traces: Path, sample_traces: Path) -> list[Path]:
    runs = sorted(shared_traces.glob("*.json.gz"))
    runs += sorted(p.parent for p in sample_traces.glob("**/manifest.json"))
    assert len(runs) >= 15
    return runs


@pytest.mark.slow
def test_analyze_text_fits_100_columns_on_every_shared_trace_and_sample_run(shared_traces, sample_traces, capsys):
    for path in _every_run(shared_traces, sample_traces):
        assert main(["analyze", str(path)]) == 0  # stdout captured: not a terminal, so 100 columns
        out = capsys.readouterr().out
        wide = [line for line in out.splitlines() if len(line) > DEFAULT_WIDTH]
        assert not wide, f"{path.name}: {len(wide)} lines over {DEFAULT_WIDTH} columns, e.g. {wide[0]!r}"
        assert not _REPR.search(out), f"{path.name}: {_REPR.search(out).group()!r} in the text report"
        assert "e+09 s" not in out and "e+18" not in out  # no epochs shown as durations
        assert not re.search(r"\b1 findings\b", out)


def test_width_follows_the_terminal_and_is_100_otherwise(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "72")
    assert output_width(Tty()) == 72
    assert output_width(io.StringIO()) == DEFAULT_WIDTH
    monkeypatch.setenv("COLUMNS", "20")
    assert output_width(Tty()) == MIN_WIDTH  # never narrower than that


def test_text_wraps_to_a_narrow_terminal_and_keeps_every_word(job128):
    traces, report = job128
    out = render_text(traces, report, width=72)
    assert max(len(line) for line in out.splitlines()) <= 72
    wide = render_text(traces, report, width=400)
    assert max(len(line) for line in wide.splitlines()) > 72
    flat = "".join(out.split())
    for f in report.findings[:SHOWN_FINDINGS]:  # wrapping moves words between lines, loses none
        for text in (f.title, f.recommendation, f.estimated_gain):
            assert "".join(text.split()) in flat


def test_findings_are_counted_in_words_and_evidence_reads_as_labelled_values(job128):
    traces, _ = job128
    one = _finding(0, 0.2)
    kernel = "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>(int, float*)"
    rich = Finding(id="toy.rule", analyzer="toy", severity="warning", title="rich evidence",
                   evidence={"top_ops": {"aten::mul": 61_939_000}, "examples": [kernel], "skipped_steps": [],
                             "peak_ts_ns": traces[0].span_ns[0] + 1_500_000, "raw_ts": 12345},
                   recommendation="r", estimated_gain="g", gain_fraction=0.1)
    out = render_text(traces, Report(source="x", results=(Result("toy", findings=(one,)),)))
    assert "Findings (1 finding, largest estimated gain first)" in out
    out = render_text(traces, Report(source="x", results=(Result("toy", findings=(one, rich), rank=0),)))
    assert "Findings (2 findings," in out
    flat = " ".join(out.split())
    assert "evidence: top ops: aten::mul 61.94 ms; examples: at::native::vectorized_elementwise_kernel<…>(…)" in flat
    assert "peak at: +1.5 ms" in out
    assert "skipped steps" not in out and "raw" not in out  # empty list, and a timestamp of no stated unit
    # the JSON keeps every value and the full name
    doc = json.loads(render_json(traces, Report(source="x", results=(Result("toy", findings=(rich,), rank=0),))))
    evidence = doc["findings"][0]["evidence"]
    assert evidence["examples"] == [kernel] and evidence["top_ops"] == {"aten::mul": 61_939_000}
    assert evidence["skipped_steps"] == [] and evidence["raw_ts"] == 12345


def test_summary_leaves_out_empty_lists_and_places_timestamps(sample_traces):
    traces, report = analyze_path(str(sample_traces / "gpt_train"))
    out = render_text(traces, report)
    assert "warmup steps" not in out and "outlier steps" not in out  # both [] in this run
    assert re.search(r"peak rss at: \+\d", out)
    memory = next(r for r in report.results if r.analyzer == "memory")
    assert memory.summary["peak_rss_ts_ns"] > 1e15  # an epoch in the summary (and the JSON) ...


# --- what was traced, and how the run ended, at the top (issue 14, items 4 and 5) ------------------------

@pytest.mark.parametrize("steps, run, schedule, line", [
    (3, 20, "wait 1, warmup 1, active 3", "3 of 20 steps traced (wait 1, warmup 1, active 3)"),
    (1, 1, "wait 0, warmup 0, active 1", "1 of 1 step traced (wait 0, warmup 0, active 1)"),
    (5, None, None, "5 steps traced"),
    (1, None, None, "1 step traced"),
    (0, 7, "Kineto off", "0 of 7 steps traced (Kineto off)"),
])
def test_traced_steps_line(steps, run, schedule, line):
    assert traced_steps_line(steps, run, schedule) == line


def test_the_header_says_how_many_of_the_runs_steps_were_traced_once_for_ranks_that_agree(sample_traces):
    traces, report = analyze_path(str(sample_traces / "ddp_gloo_2rank"))
    head = render_text(traces, report).split("\nSummary\n")[0]
    assert head.count("3 of 20 steps traced (wait 16, warmup 1, active 3)") == 1
    loop = report.result("training_loop", rank=1)
    assert (loop.summary["steps"], loop.summary["steps_run"], loop.summary["schedule"]) == \
        (3, 20, "wait 16, warmup 1, active 3")


def test_ranks_that_differ_are_named_and_a_plain_trace_says_only_its_steps(sample_traces, shared_traces):
    traces, report = analyze_path(str(sample_traces / "ddp_gloo_2rank"))
    one = traces.ranks[1]
    manifest = {**one.meta.manifest, "complete": False, "incomplete_reason": "the job received SIGTERM",
                "steps": 19}
    changed = dataclasses.replace(one, meta=dataclasses.replace(one.meta, manifest=manifest),
                                  streams={k: v for k, v in one.streams.items() if k != "steps"})
    mixed = TraceSet(ranks={0: traces.ranks[0], 1: changed}, path=traces.path)
    assert status_lines(mixed) == ["rank 1: incomplete: the job received SIGTERM"]
    out = render_text(mixed, report)
    assert out.splitlines()[1] == "  rank 1: incomplete: the job received SIGTERM"
    # rank 1 lost its steps stream: its final manifest counts the run's steps
    assert "  rank 0: 3 of 20 steps traced (wait 16, warmup 1, active 3)\n" in out
    assert "  rank 1: 3 of 19 steps traced (wait 16, warmup 1, active 3)\n" in out
    plain, plain_report = analyze_path(str(shared_traces / "v100_train_1rank.json.gz"))
    head = render_text(plain, plain_report).split("\nSummary\n")[0]
    assert head.splitlines()[-1] == "  5 steps traced" and "incomplete" not in head
