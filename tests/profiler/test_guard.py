"""guard.py through profile(): fault injection shows a failing recorder is logged once, stops alone,
and never changes or breaks the job."""

from __future__ import annotations

import gzip
import json
import logging

import pytest
import torch

from torchscope import profiler
from torchscope.profiler import annotations, host_sampler, session, trace_merge
from tests.profiler.fake_nvml import FakeGpu, make_fake_nvml
from tests.profiler.workloads_for_tests import TinyNet, train

FAST = dict(host_roofline=False, sample_interval_ms=20)


def _boom(*args, **kwargs):
    raise RuntimeError("injected fault")


def _run(tmp_path, caplog, **kw):
    torch.manual_seed(3)
    bare = train(TinyNet(), None)
    torch.manual_seed(3)
    model = TinyNet()
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="torchscope"):
        with profiler.profile(run, model=model, **FAST, **kw) as prof:
            losses = train(model, prof)
    assert losses == bare  # the job computed exactly what it computes without us
    warnings = [r for r in caplog.records if "injected fault" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]  # logged once
    return run, json.loads((run / "manifest.json").read_text())


@pytest.mark.parametrize("target", ["_child_post", "_root_pre", "_opt_post", "_after_backward", "record"])
def test_annotation_hook_fault(tmp_path, caplog, monkeypatch, target):
    monkeypatch.setattr(annotations.Annotator, target, _boom)
    run, manifest = _run(tmp_path, caplog)
    assert "injected fault" in manifest["unavailable"]["annotations"]
    assert manifest["recorded"]["annotations"] is False
    assert torch.autograd.backward.__name__ == "backward" and not hasattr(torch.autograd.backward, "__wrapped__")
    assert (run / "rank0.trace.json.gz").exists()


def test_dataloader_patch_fault(tmp_path, caplog, monkeypatch):
    real_record = annotations.Annotator.record

    def record(self, name, *a, **k):
        if name == "data_loading":
            raise RuntimeError("injected fault")
        return real_record(self, name, *a, **k)

    monkeypatch.setattr(annotations.Annotator, "record", record)
    _, manifest = _run(tmp_path, caplog)
    assert "injected fault" in manifest["unavailable"]["annotations"]


def test_host_sampler_fault(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(host_sampler.HostSampler, "sample", _boom)
    run, manifest = _run(tmp_path, caplog)
    assert "injected fault" in manifest["unavailable"]["host_sampler"]
    assert not [line for line in (run / "rank0.samples.jsonl").read_text().splitlines() if '"host"' in line]


def test_nvml_sampler_fault_not_an_nvml_error(tmp_path, caplog):
    fake = make_fake_nvml([FakeGpu(uuid="GPU-0")])
    fake.nvmlDeviceGetClockInfo = _boom  # a bug-like failure, not a vendor error
    _, manifest = _run(tmp_path, caplog, nvml_module=fake)
    assert "injected fault" in manifest["unavailable"]["nvml_sampler"]


def test_kineto_fault(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(session.profile, "_kineto_ready", _boom)
    run, manifest = _run(tmp_path, caplog)
    assert "injected fault" in manifest["unavailable"]["kineto"]
    with gzip.open(run / "rank0.trace.json.gz") as fh:
        trace = json.load(fh)  # still written: our annotations and counters without Kineto's events
    assert any(e.get("cat") == "torchscope.phase" for e in trace["traceEvents"])


def test_trace_merge_fault_keeps_manifest_and_streams(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(trace_merge, "merge_traces", _boom)
    run, manifest = _run(tmp_path, caplog)
    assert "injected fault" in manifest["unavailable"]["trace"]
    assert (run / "rank0.steps.jsonl").read_text().count("\n") == 6
    assert not list(run.glob(".rank0.kineto*"))  # temporaries cleaned up


def test_steps_writer_fault(tmp_path, caplog, monkeypatch):
    from torchscope.profiler import bundle

    real = bundle.JsonlWriter.write

    def write(self, obj):
        if "step" in obj:
            raise RuntimeError("injected fault")
        return real(self, obj)

    monkeypatch.setattr(bundle.JsonlWriter, "write", write)
    _, manifest = _run(tmp_path, caplog)
    assert "injected fault" in manifest["unavailable"]["steps"]


def test_moe_recorder_fault(tmp_path, caplog, monkeypatch):
    from torchscope.profiler import moe
    monkeypatch.setattr(moe.RouterRecorder, "step", _boom)
    torch.manual_seed(3)
    model = TinyNet()
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="torchscope"):
        with profiler.profile(run, model=model, **FAST) as prof:
            prof.watch_router(model.blocks[0][0], num_experts=16, top_k=2)
            train(model, prof)
    manifest = json.loads((run / "manifest.json").read_text())
    assert "injected fault" in manifest["unavailable"]["moe"]
    assert len([r for r in caplog.records if "injected fault" in r.getMessage()]) == 1


def test_profile_that_cannot_start_records_nothing_and_the_job_runs(tmp_path, caplog):
    run = tmp_path / "run"
    prof = profiler.profile(run, **FAST)  # the folder is fine when profile() is built ...
    run.rmdir()
    run.write_text("a file where the run folder should go")  # ... and gone by the time it starts
    before = torch.autograd.backward
    with caplog.at_level(logging.WARNING, logger="torchscope"):
        with prof:
            losses = train(TinyNet(), prof, n_batches=3)
    assert len(losses) == 3 and torch.autograd.backward is before
    assert any("could not start" in r.getMessage() for r in caplog.records)


def test_bad_watch_router_call_skips_that_module_only(tmp_path, caplog):
    router = torch.nn.Linear(8, 4)
    with caplog.at_level(logging.WARNING, logger="torchscope"):
        with profiler.profile(tmp_path / "run", **FAST) as prof:
            prof.watch_router(torch.nn.ReLU())  # no way to know its expert count
            prof.watch_router(router, name="gate", num_experts=4, top_k=1)
            router(torch.randn(3, 8))
            prof.step()
    assert any("watch_router(ReLU) failed" in r.getMessage() for r in caplog.records)
    lines = [json.loads(x) for x in (tmp_path / "run" / "rank0.moe.jsonl").read_text().splitlines()]
    assert [x["tokens"] for x in lines if x["type"] == "counts"] == [3]
