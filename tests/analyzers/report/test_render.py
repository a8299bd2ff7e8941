"""`torchscope analyze`: end to end through the CLI, in text, markdown and JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from torchscope.cli import main
from torchscope.analyzers.report.render import SCHEMA_VERSION
from tests.conftest import REPO_ROOT

NCCL = "a100_train_2rank_rank0_nccl.json.gz"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["analyze", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_report_ranks_findings_and_carries_a_schema_version(shared_traces, capsys):
    code, out, err = _run(capsys, str(shared_traces / "job128_rank0.json.gz"), "--format", "json")
    assert code == 0 and err == ""  # no progress line when stderr is not a terminal
    doc = json.loads(out)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["ranks"] == [0] and doc["world_size"] == 128
    gains = [f["gain_fraction"] for f in doc["findings"]]
    assert gains == sorted(gains, reverse=True) and len(gains) >= 2
    ids = {f["id"] for f in doc["findings"]}
    assert {"gpu_idle_host_launch", "slow_optimizer_step"} <= ids
    by_name = {r["analyzer"]: r for r in doc["results"]}
    assert {"gpu_time", "kernels", "training_loop"} <= set(by_name)
    steps = by_name["training_loop"]["tables"]["steps"]
    assert steps["rows_total"] == 2 and "backward_ns" in steps["columns"]
    assert [row[0] for row in steps["rows"]] == [551, 552]
    assert 0 < by_name["gpu_time"]["summary"]["comm_overlap_pct"] < 100
    assert doc["skipped"].get("stragglers") == "single rank"


def test_text_report_shows_summary_then_findings_in_gain_order(shared_traces, capsys):
    code, out, _ = _run(capsys, str(shared_traces / "job128_rank0.json.gz"))
    assert code == 0
    assert out.index("Summary") < out.index("Findings")
    assert "step median:" in out and "ms" in out and "top kernels (share of GPU work" in out
    first = out.index("1. [")
    second = out.index("2. [")
    assert first < second
    # The text lists findings in the same (gain) order as the JSON.
    _, js, _ = _run(capsys, str(shared_traces / "job128_rank0.json.gz"), "--format", "json")
    titles = [f["title"] for f in json.loads(js)["findings"]]
    assert out.index(titles[0]) < out.index(titles[1])


def test_markdown_report(shared_traces, capsys):
    code, out, _ = _run(capsys, str(shared_traces / NCCL), "--format", "markdown")
    assert code == 0
    assert out.startswith("# torchscope analysis")
    assert "| # | severity | finding | rank | estimated gain |" in out
    assert "### gpu_time (rank 0)" in out


def test_cpu_only_trace_skips_gpu_analyzers_with_reasons(shared_traces, capsys):
    code, out, _ = _run(capsys, str(shared_traces / "cpu_only_rank34.json.gz"), "--format", "json")
    doc = json.loads(out)
    assert code == 0
    assert doc["skipped"]["gpu_time"] == "no GPU events" and doc["skipped"]["kernels"] == "no GPU events"


def test_unknown_rank_and_bad_path_exit_2_with_one_line(shared_traces, capsys, tmp_path):
    code, out, err = _run(capsys, str(shared_traces / "mi250_minitoy_train.json.gz"), "--rank", "5")
    assert code == 2 and out == "" and err.count("\n") == 1 and "no rank 5" in err
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    code, out, err = _run(capsys, str(bad))
    assert code == 2 and err.count("\n") == 1 and str(bad) in err


@pytest.mark.slow
def test_entry_point_runs_as_a_process(shared_traces):
    proc = subprocess.run([sys.executable, "-m", "torchscope", "analyze", str(shared_traces / "mi250_minitoy_train.json.gz")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "gpu_time (rank 0)" in proc.stdout and "Traceback" not in proc.stderr


def test_hta_compatible_flag_switches_gpu_time_definitions(shared_traces, capsys):
    code, out, _ = _run(capsys, str(shared_traces / "job128_rank1.json.gz"), "--format", "json", "--hta-compatible")
    assert code == 0
    (gpu,) = [r for r in json.loads(out)["results"] if r["analyzer"] == "gpu_time"]
    assert gpu["summary"]["mode"] == "hta_compatible"
    assert gpu["summary"]["idle_pct"] == pytest.approx(54.72, abs=0.5)  # HTA 0.5.0 on this file
    assert set(gpu["tables"]) == {"hta_temporal", "hta_idle_by_stream"}
