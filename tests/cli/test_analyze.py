"""`torchscope analyze`: the command line around the report renderers (formats, ranks, exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from torchscope.cli import main
from tests.conftest import REPO_ROOT


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["analyze", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_each_format_goes_to_stdout(shared_traces, capsys):
    path = str(shared_traces / "job128_rank0.json.gz")
    code, out, err = _run(capsys, path, "--format", "json")
    assert code == 0 and err == ""  # no progress line when stderr is not a terminal
    assert json.loads(out)["schema_version"] == 1
    code, out, _ = _run(capsys, path, "--format", "markdown")
    assert code == 0 and out.startswith("# torchscope analysis")
    code, out, _ = _run(capsys, path)
    assert code == 0 and out.startswith("torchscope analysis")


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
    path = str(shared_traces / "mi250_minitoy_train.json.gz")
    proc = subprocess.run([sys.executable, "-m", "torchscope", "analyze", path], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "gpu_time (rank 0)" in proc.stdout and "Traceback" not in proc.stderr


def test_hta_compatible_flag_switches_gpu_time_definitions(shared_traces, capsys):
    code, out, _ = _run(capsys, str(shared_traces / "job128_rank1.json.gz"), "--format", "json", "--hta-compatible")
    assert code == 0
    (gpu,) = [r for r in json.loads(out)["results"] if r["analyzer"] == "gpu_time"]
    assert gpu["summary"]["mode"] == "hta_compatible"
    assert gpu["summary"]["idle_pct"] == pytest.approx(54.72, abs=0.5)  # HTA 0.5.0 on this file
    assert set(gpu["tables"]) == {"hta_temporal", "hta_idle_by_stream"}


def test_progress_line_only_on_a_terminal():
    import io

    from torchscope.cli.analyze import _Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        progress = _Progress(stream)
        progress("kernels")
        progress.done()
    assert "analyzing: kernels" in tty.getvalue() and tty.getvalue().endswith("\r\033[K")
    assert pipe.getvalue() == ""



# --- jobs of several ranks (analyze_job) -------------------------------------------------------------

def _ddp_copy(sample_traces, tmp_path):
    import shutil

    from tests.conftest import require_or_skip

    src = sample_traces / "ddp_gloo_2rank"
    require_or_skip(src.is_dir(), f"sample run {src} not recorded")
    dst = tmp_path / "ddp"
    shutil.copytree(src, dst)
    return dst


def test_a_multi_rank_job_goes_through_analyze_job_with_the_same_report(sample_traces, capsys, monkeypatch):
    from torchscope.analyzers.analyze import analyze_path
    from torchscope.analyzers.jobs import job as job_module
    from torchscope.analyzers.report.json_report import render_json
    from torchscope.analyzers.report.text import render_text

    calls = []
    real = job_module.analyze_job
    monkeypatch.setattr("torchscope.cli.analyze.analyze_job", lambda *a, **k: calls.append(k) or real(*a, **k))
    bundle = str(sample_traces / "ddp_gloo_2rank")
    traces, report = analyze_path(bundle)
    code, out, err = _run(capsys, bundle, "--format", "json", "--scheduler", "inline")
    assert code == 0 and err == "" and calls and calls[0]["scheduler"] == "inline"
    assert json.loads(out) == json.loads(render_json(traces, report))  # rows_total too, though tables are cut
    code, out, _ = _run(capsys, bundle)
    assert code == 0 and out == render_text(traces, report)


def test_a_corrupt_rank_exits_2_naming_it_unless_partial_ok(sample_traces, tmp_path, capsys):
    bundle = _ddp_copy(sample_traces, tmp_path)
    trace = bundle / "rank1.trace.json.gz"
    trace.write_bytes(trace.read_bytes()[:1000])
    code, out, err = _run(capsys, str(bundle), "--scheduler", "inline")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("torchscope: error: rank 1 failed:") and "rank1.trace" in err
    assert "training_loop (rank 0)" in out and "rank 1: " in out.split("failed ranks (not analyzed):")[1]
    code, out, err = _run(capsys, str(bundle), "--scheduler", "inline", "--partial-ok", "--format", "json")
    assert code == 0 and "rank 1 failed" in err
    doc = json.loads(out)
    assert doc["ranks"] == [0] and list(doc["failed_ranks"]) == ["1"]
    code, out, _ = _run(capsys, str(bundle), "--scheduler", "inline", "--partial-ok", "--format", "markdown")
    assert code == 0 and "## Failed ranks" in out


def test_a_bad_scheduler_is_one_line_exit_2(sample_traces, capsys, monkeypatch):
    monkeypatch.setattr("torchscope.analyzers.jobs.schedulers.DASK_CONNECT_TIMEOUT_S", 1)
    code, out, err = _run(capsys, str(sample_traces / "ddp_gloo_2rank"), "--scheduler", "threads")
    assert code == 2 and out == "" and err.count("\n") == 1 and "scheduler must be" in err
    code, out, err = _run(capsys, str(sample_traces / "ddp_gloo_2rank"), "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and out == "" and err.count("\n") == 1 and "cannot reach the Dask scheduler" in err


def test_the_scheduler_comes_from_the_environment(sample_traces, capsys, monkeypatch):
    monkeypatch.setattr("torchscope.analyzers.jobs.schedulers.DASK_CONNECT_TIMEOUT_S", 1)
    monkeypatch.setenv("TORCHSCOPE_SCHEDULER", "tcp://127.0.0.1:1")
    code, _, err = _run(capsys, str(sample_traces / "ddp_gloo_2rank"))
    assert code == 2 and "tcp://127.0.0.1:1: cannot reach the Dask scheduler" in err


def test_a_killed_run_says_so(sample_traces, tmp_path, capsys):
    bundle = _ddp_copy(sample_traces, tmp_path)
    manifest = bundle / "manifest.rank1.json"
    doc = json.loads(manifest.read_text())
    doc.update(ended_at_ns=None, complete=False)
    manifest.write_text(json.dumps(doc))
    code, out, err = _run(capsys, str(bundle), "--scheduler", "inline", "--format", "json")
    assert code == 0
    assert err == "torchscope: warning: rank 1: incomplete: the job ended without stopping the profiler\n"
    code, out, err = _run(capsys, str(bundle), "--scheduler", "inline")
    assert code == 0 and err == "" and "incomplete: the job ended without stopping the profiler" in out
