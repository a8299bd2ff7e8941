"""The diff renderers (text, markdown, JSON, JUnit) on a hand-built report: units, verdicts, escaping."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest

from torchscope.analyzers.diff.metrics import RunMetrics
from torchscope.analyzers.diff.model import SCHEMA_VERSION, DiffOptions, DiffReport, DiffRow, SideInfo
from torchscope.analyzers.diff.render import MAX_KEY_CHARS, format_for_path, render, write_github_summary
from torchscope.analyzers.diff.stats import Comparison
from torchscope.analyzers.report.units import MISSING


def _row(key, group, unit, base, new, verdict, *, gated=True, headline=True, exact=False, method="mann-whitney",
         p_value=0.001, interval=None) -> DiffRow:
    delta = None if base is None or new is None or isinstance(base, list) else new - base
    ratio = None if delta is None else (new / base if base else math.inf)
    comparison = Comparison(base, new, delta, ratio, interval, p_value, method, verdict, 8, 8)
    return DiffRow(key, group, unit, exact, headline, gated, 1, comparison)


def _side(name: str) -> SideInfo:
    return SideInfo((name,), (RunMetrics(name, 0, (1, 2, 3), {}, ("skipped warm-up step(s) 0",)),))


ROWS = (
    _row("step/time", "step", "ns", 10e6, 11.5e6, "regression"),
    _row("memory/peak_allocated", "memory", "bytes", float(1 << 30), float(1 << 30), "unchanged",
         method="single", p_value=None),
    _row("work/ops_per_step", "work", "count", 2.0, 3.0, "changed", exact=True, method="exact", p_value=None),
    _row("energy/per_step", "energy", "mJ", 2000.0, 2100.0, "not_significant", method="bootstrap", p_value=None,
         interval=(-50.0, 250.0)),
    _row("kernel_time/void gemm<N>(float*)", "kernel", "ns", 1e6, 2e6, "regression", gated=False, headline=False),
    _row("op_count/aten::relu", "operator", "count", None, 1.0, "added", gated=False, headline=False,
         method="presence", p_value=None),
    _row("moe_expert_tokens/layers.0.router", "moe", "tokens", [4.0, 4.0], [8.0, 0.0], "changed", exact=True,
         method="exact", p_value=None),
)


@pytest.fixture()
def report() -> DiffReport:
    return DiffReport(_side("base.json.gz"), _side("new.json.gz"), ROWS, DiffOptions())


@pytest.mark.parametrize("path, fmt", [("r.json", "json"), ("r.MD", "markdown"), ("r.xml", "junit"),
                                       ("r.txt", "text"), ("r.log", "text")])
def test_format_for_path(path, fmt):
    assert format_for_path(path) == fmt


def test_format_for_an_unknown_suffix_names_the_file():
    with pytest.raises(ValueError, match="r.csv"):
        format_for_path("r.csv")


def test_text_shows_units_changes_and_verdicts(report):
    out = render(report, "text")
    assert out.startswith("trace-diff: REGRESSION: 1 of 5 gated metrics regressed")
    assert "threshold 5.0%" in out
    step = next(line for line in out.splitlines() if "step/time" in line)
    assert "10 ms" in step and "11.5 ms" in step and "+15.0%" in step
    assert "one-sided U test, n=8/8" in step  # the sidedness is said where the p-value is
    assert "1 GiB" in next(line for line in out.splitlines() if "peak_allocated" in line)
    energy = next(line for line in out.splitlines() if "energy/per_step" in line)
    assert "2 J" in energy and "not significant" in energy and "Δ∈[-50 mJ, 250 mJ] (one-sided bootstrap" in energy
    # a kernel timing reads slower/faster; a row missing on one side shows the missing marker
    assert "slower" in next(line for line in out.splitlines() if "kernel_time/" in line)
    added = next(line for line in out.splitlines() if "op_count/aten::relu" in line)
    assert MISSING in added and "added" in added
    assert "[4, 4]" in out and "[8, 0]" in out
    assert "base: base.json.gz: skipped warm-up step(s) 0" in out


def test_text_shortens_long_keys(report):
    key = "kernel_time/" + "x" * 200
    long = DiffReport(report.base, report.new, (_row(key, "kernel", "ns", 1.0, 1.0, "unchanged"),), DiffOptions())
    out = render(long, "text")
    assert key not in out and key[: MAX_KEY_CHARS - 1] + "…" in out


def test_markdown_puts_the_failures_first_and_escapes(report):
    out = render(report, "markdown")
    assert out.startswith("### ❌ trace-diff — REGRESSION")
    first_table = out.split("<details>")[0]
    assert "`step/time`" in first_table and "**regression**" in first_table
    assert "<details><summary>All gated metrics (5)</summary>" in out
    assert "void gemm&lt;N&gt;(float*)" in out  # angle brackets escaped
    assert "peak_allocated" not in first_table


def test_json_is_plain_and_complete(report):
    doc = json.loads(render(report, "json"))
    assert list(doc)[0] == "schema_version" and doc["schema_version"] == SCHEMA_VERSION
    assert doc["verdict"] == "regression" and doc["exit_code"] == 1
    rows = {r["key"]: r for r in doc["rows"]}
    assert len(rows) == len(ROWS)
    assert rows["step/time"]["ratio"] == pytest.approx(1.15) and rows["step/time"]["verdict"] == "regression"
    assert rows["energy/per_step"]["interval"] == [-50.0, 250.0]
    assert rows["op_count/aten::relu"]["base"] is None
    assert rows["moe_expert_tokens/layers.0.router"]["new"] == [8.0, 0.0]
    assert doc["base"]["runs"][0]["notes"] == ["skipped warm-up step(s) 0"]


def test_json_writes_non_finite_numbers_as_null(report):
    row = _row("comm/time", "communication", "ns", 0.0, 5e6, "regression")  # ratio inf: new where base was 0
    nan = _row("moe/imbalance", "moe", "ratio", float("nan"), 1.0, "unchanged", method="single", p_value=None)
    doc = json.loads(render(DiffReport(report.base, report.new, (row, nan), DiffOptions()), "json"))
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["comm/time"]["ratio"] is None
    assert rows["moe/imbalance"]["base"] is None and rows["moe/imbalance"]["delta"] is None


def test_junit_has_one_case_per_gated_metric_and_fails_the_regression(report):
    suites = ET.fromstring(render(report, "junit"))
    assert suites.get("tests") == "5" and suites.get("failures") == "1"
    cases = {c.get("name"): c for c in suites.iter("testcase")}
    assert set(cases) == {r.key for r in ROWS if r.gated}
    failure = cases["step/time"].find("failure")
    assert failure is not None and failure.get("type") == "regression" and "+15.0%" in failure.get("message")
    assert cases["work/ops_per_step"].find("failure") is None
    fail_on_change = DiffReport(report.base, report.new, ROWS, DiffOptions(fail_on="change"))
    assert ET.fromstring(render(fail_on_change, "junit")).get("failures") == "3"  # + ops and expert tokens


def test_github_summary_is_appended_only_when_asked(report, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert not write_github_summary(report)
    target = tmp_path / "summary.md"
    target.write_text("before\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    assert write_github_summary(report)
    text = target.read_text()
    assert text.startswith("before\n### ❌ trace-diff")
