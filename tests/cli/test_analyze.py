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

