"""`torchscope info` and `analyze` count steps the same way (timeline.steps): a trace without
ProfilerStep has 0 steps and one window labelled "whole trace"; a bundle says how many of its run's
steps were traced, and first that the run is incomplete when it is; bad input is one line, exit 2."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from torchscope.analyzers import training_loop
from torchscope.analyzers.info import INCOMPLETE_PREFIX, KILLED_REASON, describe, run_status
from torchscope.analyzers.io.loader import load
from torchscope.cli import main
from tests.analyzers.synthetic_kineto import load_shared


@pytest.mark.parametrize("name, steps", [("a100_alexnet.json.gz", 0), ("cpu_only_rank34.json.gz", 1),
                                         ("v100_train_1rank.json.gz", 5), ("job128_rank0.json.gz", 2)])
def test_info_and_the_training_loop_agree_on_steps(shared_traces, name, steps):
    trace = load_shared(str(shared_traces), name)
    info = describe(trace)
    summary = training_loop.analyze(trace).summary
    assert info["steps"] == summary["steps"] == steps
    assert info["window"] == summary["window"] == ("steps" if steps else "whole trace")


def test_info_and_analyze_json_agree_on_a_trace_without_steps(shared_traces, capsys):
    path = str(shared_traces / "a100_alexnet.json.gz")
    assert main(["info", path, "--format", "json"]) == 0
    (rank,) = json.loads(capsys.readouterr().out)["ranks"]
    assert main(["analyze", path, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (summary,) = [r["summary"] for r in doc["results"] if r["analyzer"] == "training_loop"]
    assert rank["steps"] == summary["steps"] == 0
    assert rank["window"] == summary["window"] == "whole trace"
    assert summary["step_median_ns"] is None  # the 43 ms window is not presented as a step


def test_info_text_says_zero_steps(shared_traces, capsys):
    assert main(["info", str(shared_traces / "a100_alexnet.json.gz")]) == 0
    out = capsys.readouterr().out
    assert "\n  0 steps traced\n" in out  # a plain Kineto trace: no run to count, no schedule
    assert "incomplete" not in out and "warning" not in out


def test_info_says_how_many_of_the_runs_steps_were_traced(sample_traces, capsys):
    run = sample_traces / "ddp_gloo_2rank"
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("  3 of 20 steps traced (wait 16, warmup 1, active 3)\n") == 2  # one per rank
    assert main(["info", str(run), "--format", "json"]) == 0
    ranks = json.loads(capsys.readouterr().out)["ranks"]
    assert [(r["steps"], r["steps_run"], r["schedule"], r["complete"]) for r in ranks] == \
        [(3, 20, "wait 16, warmup 1, active 3", True)] * 2
    assert all(r["status"] == [] for r in ranks)


def _incomplete_copy(src, dst, manifest_changes: dict):
    """A copy of the bundle ``src`` whose manifest is changed by ``manifest_changes``."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(manifest_changes)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_info_and_analyze_say_first_that_a_run_is_incomplete(sample_traces, tmp_path, capsys):
    run = _incomplete_copy(sample_traces / "cnn_train", tmp_path / "run", {
        "complete": False, "ended_by": {"kind": "KeyboardInterrupt", "type": "KeyboardInterrupt", "message": ""},
        "incomplete_reason": "the loop was interrupted (KeyboardInterrupt)"})
    line = "incomplete: the loop was interrupted (KeyboardInterrupt)"
    assert main(["info", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == line
    assert main(["analyze", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["torchscope analysis", "  " + line]
    assert main(["analyze", str(run), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == f"- **{line}**"
    assert main(["info", str(run), "--format", "json"]) == 0
    (rank,) = json.loads(capsys.readouterr().out)["ranks"]
    assert rank["complete"] is False and rank["status"] == [line]


def test_a_killed_run_says_why_once_with_or_without_the_loaders_warning(sample_traces, tmp_path):
    run = _incomplete_copy(sample_traces / "cnn_train", tmp_path / "run",
                           {"complete": False, "ended_at_ns": None, "ended_by": None, "incomplete_reason": None})
    trace = load(run, cache=False)
    assert run_status(trace) == [INCOMPLETE_PREFIX + KILLED_REASON]
    warned = dataclasses.replace(trace, meta=dataclasses.replace(
        trace.meta, warnings=(f"{INCOMPLETE_PREFIX}{KILLED_REASON}", "3 events had no duration")))
    assert run_status(warned) == [f"incomplete: {KILLED_REASON}", "warning: 3 events had no duration"]
    # the start-of-run manifest says steps 0: the steps stream counts the run's steps
    assert describe(trace)["steps_run"] == 12


def test_info_on_a_missing_path_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["info", str(tmp_path / "nothing.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nothing.json" in err


@pytest.mark.slow
def test_info_text_fits_100_columns_with_values_in_units_on_every_shared_trace_and_sample_run(
        shared_traces, sample_traces, capsys):
    runs = sorted(shared_traces.glob("*.json.gz")) + sorted(p.parent for p in sample_traces.glob("**/manifest.json"))
    assert len(runs) >= 15
    for path in runs:
        assert main(["info", str(path)]) == 0  # stdout captured: not a terminal, so 100 columns
        out = capsys.readouterr().out
        wide = [line for line in out.splitlines() if len(line) > 100]
        assert not wide, f"{path.name}: {wide[:2]}"
        assert "{'" not in out and " traced" in out, path.name
