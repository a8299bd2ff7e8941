"""session.py's signal handling: SIGTERM flushes the bundle and chains the previous handler; SIGKILL
loses at most ~1 s of samples."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


SCRIPT = textwrap.dedent("""
    import signal, sys, time
    sys.path.insert(0, {repo!r})
    import torch, torchscope
    from tests.profiler.workloads_for_tests import TinyNet, train
    mode = sys.argv[2]
    if mode == "chain":
        def previous(signum, frame):
            print("previous handler ran", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, previous)
    with torchscope.profile(sys.argv[1], host_roofline=False, sample_interval_ms=50,
                            schedule=dict(wait=0, warmup=1, active=2)) as prof:
        model = TinyNet()
        train(model, prof, n_batches=4)
        print("ready", flush=True)
        while True:
            train(model, None, n_batches=1)
            time.sleep(0.01)
""")


def _start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    run = tmp_path / "run"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(repo=str(REPO_ROOT)))
    proc = subprocess.Popen([sys.executable, str(script), str(run), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    line = proc.stdout.readline()
    assert line.strip() == "ready", line
    return proc, run


@pytest.mark.slow
def test_sigterm_flushes_then_default_action(tmp_path):
    proc, run = _start(tmp_path, "default")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # the default action still happens
    manifest = json.loads((run / "manifest.json").read_text())
    # flushed and final (ended_at_ns), but the loop did not finish: complete is false, and says why
    assert manifest["complete"] is False and manifest["steps"] == 4 and manifest["ended_at_ns"] is not None
    assert manifest["ended_by"]["kind"] == "SIGTERM" and "SIGTERM" in manifest["incomplete_reason"]
    with gzip.open(run / "rank0.trace.json.gz") as fh:
        trace = json.load(fh)
    assert any(e.get("name", "").startswith("ProfilerStep#") for e in trace["traceEvents"])


@pytest.mark.slow
def test_sigterm_chains_previous_handler(tmp_path):
    proc, run = _start(tmp_path, "chain")
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 7 and "previous handler ran" in out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["ended_by"]["kind"] == "SIGTERM"


@pytest.mark.slow
def test_sigkill_loses_at_most_about_one_second_of_samples(tmp_path):
    proc, run = _start(tmp_path, "default")
    time.sleep(2.0)
    killed_at = time.time_ns()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    lines = [json.loads(x) for x in (run / "rank0.samples.jsonl").read_text().splitlines()]
    last = max(x["t_ns"] for x in lines if x.get("source") == "host")
    assert killed_at - last <= 1.2e9, (killed_at - last) / 1e9
    assert len(lines) >= 10
    steps = (run / "rank0.steps.jsonl").read_text().splitlines()
    assert len(steps) == 4  # hook-written stream flushed by the sampler thread too
    manifest = json.loads((run / "manifest.json").read_text())  # the start-of-run manifest survives
    assert manifest["complete"] is False and manifest["ended_at_ns"] is None
