"""Honest run status (complete / ended_by), one profile at a time, and no Kineto lines in the user's output."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from torchscope import profiler
from tests.conftest import REPO_ROOT
from tests.profiler.workloads_for_tests import TinyNet, train

FAST = dict(host_roofline=False, sample_interval_ms=20, schedule=dict(wait=0, warmup=1, active=2))


def _manifest(run) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_normal_end_is_complete_with_no_reason(tmp_path):
    with profiler.profile(tmp_path / "run", **FAST) as prof:
        train(TinyNet(), prof, n_batches=4)
    m = _manifest(tmp_path / "run")
    assert m["complete"] is True and m["ended_by"] is None and m["incomplete_reason"] is None


def test_keyboard_interrupt_is_recorded_and_passes_through(tmp_path):
    def body(prof):
        train(TinyNet(), prof, n_batches=3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with profiler.profile(tmp_path / "run", **FAST) as prof:
            body(prof)
    m = _manifest(tmp_path / "run")
    assert m["complete"] is False and m["steps"] == 3 and m["ended_at_ns"] is not None
    assert m["ended_by"]["kind"] == "KeyboardInterrupt" and m["ended_by"]["type"] == "KeyboardInterrupt"
    assert m["incomplete_reason"] == "the loop was interrupted (KeyboardInterrupt)"


def test_stop_with_error_as_callbacks_call_it(tmp_path):
    prof = profiler.profile(tmp_path / "run", **FAST).start()
    train(TinyNet(), prof, n_batches=2)
    prof.stop(error=RuntimeError("CUDA out of memory\nsecond line"))
    m = _manifest(tmp_path / "run")
    assert m["complete"] is False and m["ended_by"]["message"] == "CUDA out of memory\nsecond line"
    assert m["incomplete_reason"] == "the loop raised RuntimeError: CUDA out of memory"


def test_nested_profile_is_refused_with_a_clear_error_and_the_outer_run_survives(tmp_path):
    with profiler.profile(tmp_path / "outer", **FAST) as outer:
        inner = profiler.profile(tmp_path / "inner", **FAST)
        with pytest.raises(RuntimeError, match=r"already recording in this process; nested"):
            inner.start()
        with pytest.raises(RuntimeError, match="outer"):
            with profiler.profile(tmp_path / "inner2", **FAST):
                pass
        train(TinyNet(), outer, n_batches=4)
    m = _manifest(tmp_path / "outer")
    assert m["complete"] is True and m["recorded"]["kineto"] is True and m["steps"] == 4
    assert not (tmp_path / "inner").exists() or not (tmp_path / "inner" / "manifest.json").exists()
    with profiler.profile(tmp_path / "after", **FAST) as prof:  # once the first has stopped, a new one records
        train(TinyNet(), prof, n_batches=3)
    assert _manifest(tmp_path / "after")["complete"] is True


def test_profile_inside_torch_profiler_is_refused(tmp_path):
    with torch.profiler.profile():
        with pytest.raises(RuntimeError, match="torch.profiler is already recording"):
            profiler.profile(tmp_path / "run", **FAST).start()
    with profiler.profile(tmp_path / "run2", **FAST) as prof:
        train(TinyNet(), prof, n_batches=3)
    assert _manifest(tmp_path / "run2")["recorded"]["kineto"] is True


QUIET = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    import torchscope
    from tests.profiler.workloads_for_tests import TinyNet, train
    with torchscope.profile(sys.argv[1], host_roofline=False, sample_interval_ms=50) as prof:
        train(TinyNet(), prof, n_batches=6)
    print("done", flush=True)
""")


@pytest.mark.slow
def test_recording_prints_no_kineto_lines(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(QUIET.format(repo=str(REPO_ROOT)))
    env = {k: v for k, v in __import__("os").environ.items() if k != "KINETO_LOG_LEVEL"}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "done\n"
    assert "USDT" not in out.stderr and "profiler_start" not in out.stderr, out.stderr
    assert _manifest(tmp_path / "run")["recorded"]["kineto"] is True
    # the user's own choice wins: with KINETO_LOG_LEVEL=0 Kineto speaks again (proof the lines were real)
    loud = subprocess.run([sys.executable, str(script), str(tmp_path / "run2")], capture_output=True, text=True,
                          timeout=120, env={**env, "KINETO_LOG_LEVEL": "0"}, cwd=tmp_path)
    assert loud.returncode == 0 and "profiler_start" in loud.stderr
