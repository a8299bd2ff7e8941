"""`torchscope info` and `analyze` count steps the same way (timeline.steps): a trace without
ProfilerStep has 0 steps and one window labelled "whole trace"; bad input is one line, exit 2."""

from __future__ import annotations

import json

import pytest

from torchscope.analyzers import training_loop
from torchscope.analyzers.info import describe
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
    assert "steps: 0" in capsys.readouterr().out


def test_info_on_a_missing_path_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["info", str(tmp_path / "nothing.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nothing.json" in err
