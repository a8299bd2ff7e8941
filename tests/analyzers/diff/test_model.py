"""`torchscope diff` / `trace-diff` end to end: exit codes, gates, inputs and every report format."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from torchscope.cli import main, trace_diff_main
from torchscope.analyzers.diff.model import DiffOptions, SideInfo, diff_paths, diff_runs, parse_min_delta
from torchscope.analyzers.diff.metrics import extract_run_metrics
from torchscope.analyzers.diff.render import render
from torchscope.analyzers.diff.stats import VERDICTS
from tests.analyzers.diff_traces import noisy_steps, write_bundle, write_trace
from tests.analyzers.synthetic_kineto import load_shared


def _diff(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A baseline and a candidate whose steps are 15 % slower, with 1 % noise, 9 steps each."""
    d = tmp_path_factory.mktemp("pair")
    base = write_trace(d / "base.json.gz", noisy_steps(10.0, 9, seed=1))
    same = write_trace(d / "same.json.gz", noisy_steps(10.0, 9, seed=2))
    slow = write_trace(d / "slow.json.gz", noisy_steps(11.5, 9, seed=3))
    extra = write_trace(d / "extra.json.gz", noisy_steps(10.0, 9, seed=4), ops=("aten::mm", "aten::add", "aten::relu"))
    return {"base": base, "same": same, "slow": slow, "extra": extra}


def test_slower_run_exits_1_and_names_the_regression(capsys, pair):
    code, out, _ = _diff(capsys, str(pair["base"]), str(pair["slow"]))
    assert code == 1
    assert out.startswith("trace-diff: REGRESSION")
    line = next(x for x in out.splitlines() if "step/time" in x)
    # 11.5 ms over 10 ms steps, each window 50 µs longer (the gap to the next step): about +15 %
    assert "regression" in line and re.search(r"\+1[3-6]\.\d%", line), line


def test_rerun_of_the_same_workload_passes(capsys, pair):
    code, out, _ = _diff(capsys, str(pair["base"]), str(pair["same"]))
    assert code == 0, out
    assert out.startswith("trace-diff: OK")


def test_a_run_diffed_with_itself_reports_nothing(pair):
    report = diff_paths([pair["base"]], [pair["base"]])
    assert report.exit_code == 0 and report.verdict == "ok"
    assert {r.verdict for r in report.rows} == {"unchanged"}


def test_fail_on_policies(capsys, pair):
    assert _diff(capsys, str(pair["base"]), str(pair["slow"]), "--fail-on", "never")[0] == 0
    # an extra op per step with unchanged timings: a change, not a regression
    code, out, _ = _diff(capsys, str(pair["base"]), str(pair["extra"]))
    assert code == 0 and out.startswith("trace-diff: CHANGED: ")
    code, out, _ = _diff(capsys, str(pair["base"]), str(pair["extra"]), "--fail-on", "change")
    assert code == 1
    assert "work/ops_per_step" in out and "changed" in out


def test_deterministic_gate_ignores_timings(capsys, pair):
    code, out, _ = _diff(capsys, str(pair["base"]), str(pair["slow"]), "--gate", "deterministic", "--fail-on", "change")
    assert code == 0, out
    assert "Reported, not gated" in out and "step/time" in out
    assert _diff(capsys, str(pair["base"]), str(pair["extra"]), "--gate", "deterministic",
                 "--fail-on", "change")[0] == 1


def test_threshold_and_min_delta_options(capsys, pair):
    assert _diff(capsys, str(pair["base"]), str(pair["slow"]), "--threshold", "20%")[0] == 0
    assert _diff(capsys, str(pair["base"]), str(pair["slow"]), "--min-delta", "5ms")[0] == 0
    assert _diff(capsys, str(pair["base"]), str(pair["slow"]), "--min-delta", "0.5ms")[0] == 1


def test_deterministic_rows_respect_threshold_and_min_delta(capsys, tmp_path):
    # 60 vs 61 ops (and kernels) per step: +1.7 %, under the default 5 % threshold
    ops = ("aten::mm", *("aten::add",) * 59)
    base = write_trace(tmp_path / "base.json.gz", [10.0] * 6, ops=ops)
    more = write_trace(tmp_path / "more.json.gz", [10.0] * 6, ops=(*ops, "aten::add"))
    args = ("--gate", "deterministic", "--fail-on", "change")
    code, out, _ = _diff(capsys, str(base), str(more), *args)
    assert code == 0 and out.startswith("trace-diff: OK"), out
    line = next(x for x in out.splitlines() if "work/kernels_per_step" in x)
    assert "+1.7%" in line and "within threshold" in line, line
    code, out, _ = _diff(capsys, str(base), str(more), *args, "--threshold", "1%")
    assert code == 1 and "work/ops_per_step" in out
    exact = DiffOptions(threshold=0.0, gate="deterministic", fail_on="change")
    assert diff_paths([base], [more], exact).exit_code == 1
    # one op more per step is at most the absolute change allowed in counts: no change
    loose = replace(exact, min_delta={**exact.min_delta, "count": 1.0})
    report = diff_paths([base], [more], loose)
    assert report.row("work/ops_per_step").verdict == "unchanged" and report.exit_code == 0


def test_gate_all_adjusts_for_multiple_comparisons(pair):
    report = diff_paths([pair["base"]], [pair["slow"]], DiffOptions(gate="all"))
    assert all(r.gated for r in report.rows)
    assert report.exit_code == 1
    # kernel rows are tested too; their p-values were adjusted upwards, never below the raw ones
    headline = diff_paths([pair["base"]], [pair["slow"]])
    for key in ("kernel_time/void at::native::vectorized_elementwise_kernel(int, float*)",):
        assert report.row(key).comparison.p_value >= headline.row(key).comparison.p_value


def test_repeated_runs_pool_their_steps(capsys, tmp_path):
    base = [write_bundle(tmp_path / "base" / f"r{i}", noisy_steps(10.0, 3, seed=i)) for i in range(3)]
    new = [write_bundle(tmp_path / "new" / f"r{i}", noisy_steps(12.0, 3, seed=10 + i)) for i in range(3)]
    # a folder holding several run bundles = repeated runs
    report = diff_paths([tmp_path / "base"], [tmp_path / "new"])
    assert len(report.base.runs) == 3 and report.base.n_steps == 6  # 2 steps each after warm-up
    row = report.row("step/time")
    assert row.comparison.method == "mann-whitney" and row.verdict == "regression"
    code, out, _ = _diff(capsys, str(base[0]), str(new[0]), "--base", str(base[1]), "--base", str(base[2]),
                         "--new", str(new[1]), "--new", str(new[2]), "--format", "json")
    assert code == 1
    doc = json.loads(out)
    assert len(doc["base"]["runs"]) == 3 and len(doc["new"]["sources"]) == 3


def test_energy_and_moe_changes_are_gated_in_bundles(tmp_path):
    even = [[[4, 4, 4, 4]]] * 6
    skewed = [[[10, 2, 2, 2]]] * 6
    base = write_bundle(tmp_path / "a", [10.0] * 6, power_w=100.0, moe_counts=even)
    hot = write_bundle(tmp_path / "b", [10.0] * 6, power_w=130.0, moe_counts=skewed)
    report = diff_paths([base], [hot])
    assert report.row("energy/per_step").verdict == "regression"
    assert report.row("moe/imbalance").verdict == "regression"
    assert report.row("moe_expert_tokens/layers.0.router").verdict == "changed"
    assert report.exit_code == 1
    same = diff_paths([base], [base])
    assert same.exit_code == 0


def test_json_report_schema(capsys, pair):
    code, out, _ = _diff(capsys, str(pair["base"]), str(pair["slow"]), "--format", "json")
    doc = json.loads(out)
    assert doc["schema_version"] == 1 and doc["verdict"] == "regression" and doc["exit_code"] == code == 1
    keys = [r["key"] for r in doc["rows"]]
    assert len(keys) == len(set(keys))  # one row per key
    for row in doc["rows"]:
        assert {"base", "new", "delta", "ratio", "interval", "p_value", "verdict"} <= set(row)
        assert row["verdict"] in VERDICTS
    step = next(r for r in doc["rows"] if r["key"] == "step/time")
    assert step["gated"] and step["unit"] == "ns" and step["p_value"] < 0.05
    assert step["interval"][0] > 0 and step["ratio"] == pytest.approx(step["new"] / step["base"])


def test_markdown_junit_and_github_summary(capsys, pair, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    md, xml = tmp_path / "out" / "r.md", tmp_path / "out" / "r.xml"
    code, out, _ = _diff(capsys, str(pair["base"]), str(pair["slow"]), "--output", str(md), "--output", str(xml))
    assert code == 1
    assert out.startswith("trace-diff: REGRESSION")  # text still goes to stdout
    text = md.read_text()
    assert text.splitlines()[0].startswith("### ❌ trace-diff — REGRESSION")
    assert "<details>" in text and "`step/time`" in text
    assert summary.read_text().startswith("earlier step\n### ❌")
    root = ET.parse(xml).getroot()
    cases = root.findall(".//testcase")
    report = diff_paths([pair["base"]], [pair["slow"]])
    assert len(cases) == len(report.gated_rows)
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert "step/time" in failed
    assert int(root.get("failures")) == len(failed)


def test_format_to_stdout_replaces_the_text_table(capsys, pair):
    code, out, _ = _diff(capsys, str(pair["base"]), str(pair["same"]), "--format", "markdown")
    assert code == 0 and out.startswith("### ✅ trace-diff — OK")


@pytest.mark.parametrize("argv, needle", [
    (["missing.json.gz", "other.json.gz"], "missing.json.gz: no such file"),
    (["{base}", "{base}", "--min-delta", "5 parsecs"], "unknown unit"),
    (["{base}", "{base}", "--steps", "500:502"], "--steps"),
    (["{base}", "{base}", "--rank", "3"], "rank"),
    (["{base}", "{base}", "--format", "yaml"], "unknown format"),
    (["{base}", "{base}", "--output", "{tmp}/r.html"], "suffix"),
    (["{base}", "{bad}"], "bad.json"),
    (["{base}"], "error"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, pair, tmp_path, argv, needle):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    argv = [a.format(base=pair["base"], bad=bad, tmp=tmp_path) for a in argv]
    try:
        code = main(["diff", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_trace_diff_alias(capsys, pair):
    assert trace_diff_main([str(pair["base"]), str(pair["slow"]), "--fail-on", "never"]) == 0
    assert "step/time" in capsys.readouterr().out


def test_trace_diff_help_and_errors_say_trace_diff(capsys, monkeypatch, pair):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/trace-diff"])  # as the console script runs
    with pytest.raises(SystemExit) as exc:
        trace_diff_main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: trace-diff ") and "torchscope diff" not in out
    assert trace_diff_main([str(pair["base"]), str(pair["base"]), "--format", "yaml"]) == 2
    assert capsys.readouterr().err.startswith("trace-diff: error: unknown format 'yaml'")
    # the subcommand keeps its own name
    monkeypatch.setattr(sys, "argv", ["/venv/bin/torchscope"])
    with pytest.raises(SystemExit):
        main(["diff", "--help"])
    assert capsys.readouterr().out.startswith("usage: torchscope diff ")


def test_parse_min_delta():
    assert parse_min_delta("2ms") == ("ns", 2e6)
    assert parse_min_delta("64MiB") == ("bytes", 64 * 2**20)
    assert parse_min_delta("5J") == ("mJ", 5000.0)
    assert parse_min_delta("0.01") == ("ratio", 0.01)
    with pytest.raises(ValueError):
        parse_min_delta("fast")


@pytest.mark.slow
def test_shared_before_after_pair(shared_traces):
    options = DiffOptions(fail_on="change")
    # loaded once per session (other modules read these traces too), then diffed as load_runs would

    def side(name: str) -> SideInfo:
        return SideInfo((name,), (extract_run_metrics(load_shared(str(shared_traces), name)),))

    control, test = side("diff_control_a100.json.gz"), side("diff_test_v100.json.gz")
    m = control.runs[0].metrics
    assert control.runs[0].steps == (1010, 1011, 1012, 1013, 1014)  # warm-up step 1009 skipped
    assert m["step/time"].samples.size == 5 and (m["comm/time"].samples > 0).all()
    # GPU categories add up to at least the time some GPU work runs (overlap counts once there)
    categories = sum(v.samples for k, v in m.items() if k.startswith("gpu/") and k != "gpu/busy")
    assert (categories >= m["gpu/busy"].samples).all()
    report = diff_runs(control, test, options)
    assert report.exit_code == 1
    doc = json.loads(render(report, "json"))
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["step/time"]["verdict"] == "regression" and rows["step/time"]["p_value"] < 0.05
    # the V100 run uses volta kernels the A100 run does not have, and vice versa
    verdicts = {r["verdict"] for r in doc["rows"] if r["group"] == "kernel"}
    assert {"added", "removed"} <= verdicts
    # diffing the control with itself: nothing changes at all
    same = diff_runs(control, control, options)
    assert same.exit_code == 0 and {r.verdict for r in same.rows} == {"unchanged"}


def test_our_recorded_bundles_diffed_with_themselves_do_not_change(capsys, sample_traces):
    for run in ("gpt_train", "cnn_train"):
        code, out, _ = _diff(capsys, str(sample_traces / run), str(sample_traces / run), "--fail-on", "change")
        assert code == 0, out
        assert "step/time" in out


def test_rank_selection_in_a_multi_rank_bundle(capsys, sample_traces):
    bundle = str(sample_traces / "ddp_gloo_2rank")
    code, out, _ = _diff(capsys, bundle, bundle, "--rank", "1", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["base"]["runs"][0]["rank"] == 1
    assert any(r["key"] == "comm/time" for r in doc["rows"])  # gloo collectives on the CPU
    code, _, err = _diff(capsys, bundle, bundle, "--rank", "7")
    assert code == 2 and "has no rank 7" in err
