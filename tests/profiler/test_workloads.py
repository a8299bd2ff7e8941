"""profiler/workloads.py's loops as the committed sample runs (a) cnn_train, (b) gpt_train,
(d) ddp_gloo_2rank: complete, loadable bundles, recorded by sample_traces/record.py."""

from __future__ import annotations

import json

import pytest

from torchscope.analyzers.core.args import decode_args

RUNS = {"cnn_train": 1, "gpt_train": 1, "ddp_gloo_2rank": 2}
MAX_BYTES = 5 * 1024 * 1024


@pytest.mark.parametrize("name,ranks", sorted(RUNS.items()))
def test_sample_run_is_complete_and_loadable(sample_traces, name, ranks):
    from torchscope import analyzers

    run = sample_traces / name
    assert sum(p.stat().st_size for p in run.iterdir()) <= MAX_BYTES
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] and manifest["world_size"] == ranks and manifest["recorded"]["kineto"]
    assert manifest["unavailable"]["power"] == "unavailable (no NVML)"
    loaded = analyzers.load(run)
    traces = list(loaded) if ranks > 1 else [loaded]
    assert len(traces) == ranks
    for tr in traces:
        phases = set(tr.events.loc[tr.events["kind"] == "phase", "name"].astype(str))
        assert {"forward", "loss", "backward", "optimizer", "zero_grad"} <= phases
        assert (tr.events["kind"] == "module").sum() > 0
        assert len(tr.steps()) >= 3
        if ranks > 1:
            comm = tr.events[tr.events["name"].astype(str).str.startswith("gloo:")]
            assert len(comm) > 0 and all(a.get("msg_bytes", 0) > 0 for a in decode_args(comm["args"]))


def test_record_script_lists_one_function_per_workload():
    import subprocess
    import sys

    from tests.conftest import SAMPLE_TRACES

    out = subprocess.run([sys.executable, str(SAMPLE_TRACES / "record.py"), "--list"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    names = {line.split(":")[0] for line in out.stdout.splitlines()}
    assert {"cnn_train", "gpt_train", "ddp_gloo_2rank"} <= names
    bad = subprocess.run([sys.executable, str(SAMPLE_TRACES / "record.py"), "nope"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "unknown workload" in bad.stderr and "Traceback" not in bad.stderr
