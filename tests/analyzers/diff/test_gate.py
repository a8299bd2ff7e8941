"""Our CI gate: a fresh run of the fixed workload matches the committed baseline; a changed one trips it.

The workloads are recorded in a subprocess (torch stays out of the analyzers' test process) with
`.ci/gate_workload.py`, then diffed as `.ci/gate.sh` does. The gate asks for exact comparison with
``--threshold 0``: under the default 5 % threshold the extra op (+2.7 % ops per step) is within it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchscope.cli import main
from tests.conftest import require_module

REPO = Path(__file__).resolve().parents[3]
BASELINE = REPO / "sample_traces" / "ci_baseline"
GATE_ARGS = ("--gate", "deterministic", "--fail-on", "change", "--threshold", "0", "--format", "json")

_RECORD_VARIANTS = """
import sys
from pathlib import Path
sys.path.insert(0, {ci!r})
import gate_workload
for variant in ("baseline", "extra_op", "double_work"):
    gate_workload.record_dense(Path({out!r}) / variant / "dense", variant)
"""


@pytest.fixture(scope="module")
def fresh_runs(tmp_path_factory) -> Path:
    """The dense gate workload recorded afresh: as in the baseline, with an extra op, with twice the work."""
    require_module("torch")
    out = tmp_path_factory.mktemp("gate")
    code = _RECORD_VARIANTS.format(ci=str(REPO / ".ci"), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _gate(capsys, new: Path, *args: str) -> tuple[int, dict]:
    code = main(["diff", str(BASELINE / "dense"), str(new), *GATE_ARGS, *args])
    return code, json.loads(capsys.readouterr().out)


def test_baseline_is_committed_for_every_gated_workload():
    for run in ("dense", "moe_train", "moe_generate"):
        assert (BASELINE / run / "manifest.json").is_file()
        assert (BASELINE / run / "rank0.trace.json.gz").is_file()
    assert (BASELINE / "moe_train" / "rank0.moe.jsonl").is_file()


@pytest.mark.slow
def test_fresh_run_of_the_fixed_workload_passes_the_gate(capsys, fresh_runs):
    code, doc = _gate(capsys, fresh_runs / "baseline" / "dense")
    gated = {r["key"]: r for r in doc["rows"] if r["gated"]}
    assert {"work/ops_per_step", "work/flops_per_step"} <= set(gated)
    assert code == 0, [r for r in gated.values() if r["verdict"] != "unchanged"]
    # timings are reported but do not gate
    step = next(r for r in doc["rows"] if r["key"] == "step/time")
    assert not step["gated"] and step["n_base"] >= 2


@pytest.mark.slow
def test_an_extra_op_per_step_trips_the_gate(capsys, fresh_runs):
    code, doc = _gate(capsys, fresh_runs / "extra_op" / "dense")
    assert code == 1
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["work/ops_per_step"]["verdict"] == "changed"
    assert rows["work/ops_per_step"]["new"] > rows["work/ops_per_step"]["base"]
    assert rows["op_count/aten::relu"]["verdict"] == "added"


@pytest.mark.slow
def test_the_threshold_gates_deterministic_rows_too(capsys, fresh_runs):
    # the same extra op under a 5 % threshold: its few per cent more ops per step are within it
    code, doc = _gate(capsys, fresh_runs / "extra_op" / "dense", "--threshold", "5%")
    rows = {r["key"]: r for r in doc["rows"]}
    ops = rows["work/ops_per_step"]
    assert 0 < ops["ratio"] - 1 < 0.05 and ops["verdict"] == "unchanged"
    assert code == 0, [r for r in doc["rows"] if r["gated"] and r["verdict"] != "unchanged"]


@pytest.mark.slow
def test_twice_the_work_trips_the_gate(capsys, fresh_runs):
    code, doc = _gate(capsys, fresh_runs / "double_work" / "dense")
    assert code == 1
    flops = next(r for r in doc["rows"] if r["key"] == "work/flops_per_step")
    assert flops["verdict"] == "changed"
    assert flops["ratio"] == pytest.approx(2.0, rel=0.01)  # twice the batch: twice the FLOPs
