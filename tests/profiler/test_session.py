"""End-to-end: profile() around real (tiny) training and inference loops writes a complete bundle."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.utils.data.dataloader as dl_mod
from torch.optim import optimizer as optim_mod

from torchscope import profiler
from torchscope.profiler import bundle
from tests.profiler.workloads_for_tests import TinyLM, TinyNet, train

FAST = dict(host_roofline=False, sample_interval_ms=20)
CHILDREN = {"embed", "blocks.0", "blocks.1", "head"}


def _trace(run: Path, rank: int = 0) -> dict:
    with gzip.open(run / f"rank{rank}.trace.json.gz") as fh:
        return json.load(fh)


def _ours(trace: dict, cat: str) -> list[dict]:
    return [e for e in trace["traceEvents"] if e.get("cat") == cat]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _abs_ns(trace: dict, ts_us: float) -> int:
    return int(round(ts_us * 1000)) + int(trace.get("baseTimeNanoseconds", 0))


def _global_state() -> tuple:
    return (len(torch.nn.modules.module._global_forward_pre_hooks),
            len(torch.nn.modules.module._global_forward_hooks),
            len(optim_mod._global_optimizer_pre_hooks), len(optim_mod._global_optimizer_post_hooks),
            torch.autograd.backward, torch.optim.Optimizer.__dict__["zero_grad"],
            torch.nn.Module.__dict__["zero_grad"], dl_mod._BaseDataLoaderIter.__dict__["__next__"])


def test_training_bundle_has_manifest_trace_and_streams(tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    with profiler.profile(run, model=(model := TinyNet()), **FAST) as prof:
        train(model, prof, n_batches=6)
    names = sorted(p.name for p in run.iterdir())
    assert names == ["manifest.json", "rank0.samples.jsonl", "rank0.steps.jsonl", "rank0.trace.json.gz"]
    manifest = json.loads((run / "manifest.json").read_text())
    for key in ("schema_version", "tool", "command", "host", "started_at_ns", "ended_at_ns", "torch_version",
                "cuda_version", "world_size", "ranks", "devices", "options", "recorded", "unavailable",
                "host_roofline", "user_counts"):
        assert key in manifest, key
    assert manifest["schema_version"] == bundle.SCHEMA_VERSION and manifest["tool"] == "torchscope"
    assert manifest["ended_at_ns"] > manifest["started_at_ns"]
    assert manifest["recorded"]["kineto"] and manifest["recorded"]["annotations"]
    assert manifest["unavailable"]["power"] == "unavailable (no NVML)"
    assert manifest["user_counts"] == {"tokens_per_step": 32.0, "samples_per_step": 4.0}
    assert manifest["model"] == {"class": "TinyNet", "parameters": sum(p.numel() for p in model.parameters())}
    steps = _jsonl(run / "rank0.steps.jsonl")
    assert [s["step"] for s in steps] == list(range(6)) and all(s["tokens"] == 32 for s in steps)
    samples = _jsonl(run / "rank0.samples.jsonl")
    host = [s for s in samples if s["source"] == "host" and "event" not in s]
    assert host and all(manifest["started_at_ns"] <= s["t_ns"] <= manifest["ended_at_ns"] + 10**9 for s in host)
    assert all(s["rss_bytes"] > 0 for s in host)
    reasons = {(s["source"], s["field"]): s["reason"] for s in samples if s.get("event") == "unavailable"}
    assert reasons[("nvml", "*")] == "unavailable (no NVML)"
    assert reasons[("cuda_mem", "*")] == "unavailable (no CUDA device)"


def test_trace_has_phases_and_module_ranges_inside_kineto_steps(tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    with profiler.profile(run, model=(model := TinyNet()), schedule=dict(wait=1, warmup=1, active=3), **FAST) as p:
        train(model, p, n_batches=6)
    trace = _trace(run)
    steps = {int(e["name"].split("#")[1]): e for e in trace["traceEvents"]
             if e.get("name", "").startswith("ProfilerStep#")}
    assert sorted(steps) == [2, 3, 4]
    phases = _ours(trace, "torchscope.phase")
    by_step: dict[int, list[str]] = {}
    for e in phases:
        by_step.setdefault(e["args"]["step"], []).append(e["name"])
    for s in (2, 3, 4):
        assert sorted(by_step[s]) == sorted(["data_loading", "forward", "loss", "zero_grad", "backward", "optimizer"])
    # same clock: every phase of an active step lies inside Kineto's ProfilerStep#N range (1 ms slack)
    for e in phases:
        st = steps.get(e["args"]["step"])
        if st is None:
            continue
        assert st["ts"] - 1000 <= e["ts"] and e["ts"] + e["dur"] <= st["ts"] + st["dur"] + 1000, e
    modules = _ours(trace, "torchscope.module")
    seen = {(e["name"], e["args"]["direction"]) for e in modules}
    assert seen == {(n, d) for n in CHILDREN for d in ("forward", "backward")}
    # the backward of a block comes after its forward and before the optimizer step of the same step
    for s in (3, 4):
        fwd = next(e for e in modules if e["name"] == "blocks.1" and e["args"] == {"direction": "forward", "step": s})
        bwd = next(e for e in modules if e["name"] == "blocks.1" and e["args"] == {"direction": "backward", "step": s})
        opt = next(e for e in phases if e["name"] == "optimizer" and e["args"]["step"] == s)
        assert fwd["ts"] + fwd["dur"] <= bwd["ts"] <= opt["ts"]


def test_kineto_clock_is_wall_clock(tmp_path):
    """Kineto's ts·1000 + baseTimeNanoseconds is time.time_ns(): measured, not assumed."""
    run = tmp_path / "run"
    marks = []
    with profiler.profile(run, schedule=dict(wait=0, warmup=1, active=2), annotate=False, **FAST) as prof:
        for _ in range(3):
            before = time.time_ns()
            with torch.profiler.record_function("clock_probe"):
                torch.randn(64, 64) @ torch.randn(64, 64)
            marks.append((before, time.time_ns()))
            prof.step()
    trace = _trace(run)
    probes = [e for e in trace["traceEvents"] if e.get("name") == "clock_probe"]
    assert len(probes) == 2
    for e, (before, after) in zip(probes, marks[1:]):
        start = _abs_ns(trace, e["ts"])
        assert before - 50_000 <= start <= after, (before, start, after)


def test_loader_reads_the_bundle(tmp_path):
    from torchscope import analyzers
    run = tmp_path / "run"
    with profiler.profile(run, model=(model := TinyNet()), **FAST) as prof:
        train(model, prof)
    tr = analyzers.load(run)
    kinds = set(tr.events["kind"].astype(str))
    assert {"phase", "module", "cpu_op"} <= kinds
    assert "samples" in tr.streams and "steps" in tr.streams
    assert set(tr.counters["name"].astype(str)) >= {"cpu_util_pct", "rss_bytes"}


def test_model_found_without_model_argument(tmp_path):
    run = tmp_path / "run"
    with profiler.profile(run, **FAST) as prof:
        train(TinyNet(), prof, n_batches=6)
    trace = _trace(run)
    assert {e["name"] for e in _ours(trace, "torchscope.module")} == CHILDREN
    assert {"forward", "loss", "backward", "optimizer"} <= {e["name"] for e in _ours(trace, "torchscope.phase")}


def test_losses_unchanged_by_recording(tmp_path):
    torch.manual_seed(1)
    bare = train(TinyNet(), None)
    torch.manual_seed(1)
    model = TinyNet()
    with profiler.profile(tmp_path / "run", model=model, **FAST) as prof:
        recorded = train(model, prof)
    assert recorded == bare


def test_user_exception_propagates_after_flush_and_hooks_are_removed(tmp_path):
    before = _global_state()
    run = tmp_path / "run"
    model = TinyNet()
    with pytest.raises(ValueError, match="user failure at step 4"):
        with profiler.profile(run, model=model, **FAST) as prof:
            train(model, prof, fail_at=4)
    assert _global_state() == before
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert not any(t.name == "torchscope-sampler" for t in threading.enumerate())
    manifest = json.loads((run / "manifest.json").read_text())
    # flushed, but the loop did not finish: not complete, and the manifest says why
    assert manifest["complete"] is False and manifest["steps"] == 4 and manifest["ended_at_ns"] is not None
    assert manifest["ended_by"] == {"kind": "exception", "type": "ValueError", "message": "user failure at step 4"}
    assert manifest["incomplete_reason"] == "the loop raised ValueError: user failure at step 4"
    assert {"ProfilerStep#2", "ProfilerStep#3"} <= {e.get("name") for e in _trace(run)["traceEvents"]}


def test_profile_twice_in_one_process_and_decorator_and_start_stop(tmp_path):
    before = _global_state()
    for name in ("a", "b"):
        with profiler.profile(tmp_path / name, **FAST) as prof:
            train(TinyNet(), prof)
        assert len(_ours(_trace(tmp_path / name), "torchscope.phase")) > 0

    @profiler.profile(tmp_path / "deco", **FAST)
    def job():
        return train(TinyNet(), None, n_batches=2)

    assert len(job()) == 2 and len(job()) == 2  # a fresh profile per call
    assert (tmp_path / "deco" / "rank0.trace.json.gz").exists()
    prof = profiler.profile(tmp_path / "manual", **FAST).start()
    train(TinyNet(), prof)
    assert prof.stop() == tmp_path / "manual"
    assert prof.stop() == tmp_path / "manual"  # idempotent
    with pytest.raises(RuntimeError):
        prof.start()
    assert _global_state() == before


def test_on_run_ready_receives_the_run_folder_after_the_rank_is_written(tmp_path, caplog):
    seen = []

    def ready(path: Path) -> None:
        manifest = json.loads((path / "manifest.json").read_text())
        seen.append((path, manifest["complete"], (path / "rank0.trace.json.gz").is_file()))

    with profiler.profile(tmp_path / "run", on_run_ready=ready, **FAST) as prof:
        train(TinyNet(), prof, n_batches=2)
    assert seen == [(tmp_path / "run", True, True)]

    def broken(path: Path) -> None:
        raise OSError("upload failed")

    with profiler.profile(tmp_path / "other", on_run_ready=broken, **FAST) as prof:  # logged, the job goes on
        train(TinyNet(), prof, n_batches=2)
    assert "on_run_ready" in caplog.text and "upload failed" in caplog.text
    assert json.loads((tmp_path / "other" / "manifest.json").read_text())["complete"]
    with pytest.raises(TypeError, match="on_run_ready"):
        profiler.profile(tmp_path / "x", on_trace_ready=ready)  # torch's name: its callback gets the profiler


def test_inference_forward_prefill_and_decode(tmp_path):
    run = tmp_path / "run"
    model = TinyLM().eval()
    net = TinyNet().eval()
    with profiler.profile(run, schedule=dict(wait=0, warmup=1, active=3), **FAST) as prof:
        for _ in range(3):
            model.generate(torch.randint(0, 50, (1, 6)), max_new_tokens=3)
            with torch.no_grad():
                net(torch.randint(0, 50, (1, 6)))
            prof.step()
    phases = [e for e in _ours(_trace(run), "torchscope.phase")]
    names = [e["name"] for e in sorted(phases, key=lambda e: e["ts"]) if e["args"]["step"] == 2]
    assert names == ["prefill", "decode", "decode", "decode", "forward"]


def test_user_phase(tmp_path):
    run = tmp_path / "run"
    with profiler.profile(run, schedule=dict(wait=0, warmup=1, active=2), **FAST) as prof:
        for _ in range(3):
            with prof.phase("evaluate"):
                time.sleep(0.002)
            prof.step()
    ev = [e for e in _ours(_trace(run), "torchscope.phase") if e["name"] == "evaluate"]
    assert len(ev) == 2 and all(e["dur"] >= 1500 for e in ev)


def test_fake_nvml_power_samples_reach_stream_trace_and_manifest(tmp_path):
    from tests.profiler.fake_nvml import FakeGpu, make_fake_nvml

    fake = make_fake_nvml([FakeGpu(uuid="GPU-fake-0", readings={"power": lambda n: 200_000 + 1000 * n})])
    run = tmp_path / "run"
    with profiler.profile(run, nvml_module=fake, **FAST) as prof:
        train(TinyNet(), prof)
        time.sleep(0.1)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recorded"]["power"] is True and "power" not in manifest["unavailable"]
    assert manifest["devices"][0]["uuid"] == "GPU-fake-0" and manifest["devices"][0]["name"].startswith("NVIDIA")
    nv = [s for s in _jsonl(run / "rank0.samples.jsonl") if s["source"] == "nvml"]
    assert len(nv) >= 3 and all(s["device"] == 0 for s in nv)
    powers = [s["power_mw"] for s in nv]
    assert powers == sorted(powers) and powers[0] >= 200_000
    counters = [e for e in _trace(run)["traceEvents"] if e.get("ph") == "C" and e["name"] == "power_w"]
    assert counters and all(200 <= e["args"]["gpu0"] < 400 for e in counters)
    assert fake.shutdown_calls == 1


def test_memory_holds_only_events_around_the_recording_window(tmp_path):
    model = TinyNet()
    with profiler.profile(tmp_path / "run", model=model, schedule=dict(wait=5, warmup=1, active=2),
                          **FAST) as prof:
        train(model, prof, n_batches=12)
    kept_steps = {args["step"] for *_, args in prof._annotator.events if args}
    assert kept_steps == {5, 6, 7, 8}  # warm-up, two recorded steps, and the step after
    trace = _trace(tmp_path / "run")
    assert {e["args"]["step"] for e in _ours(trace, "torchscope.phase")} <= {5, 6, 7, 8}
    assert len((tmp_path / "run" / "rank0.steps.jsonl").read_text().splitlines()) == 12  # streams keep all


def test_user_phase_labels_moe_counts(tmp_path):
    from torchscope.profiler import moe
    torch.manual_seed(0)

    class Router(torch.nn.Module):
        """A custom top-2 router over 4 experts returning (logits, weights, indices)."""

        def __init__(self) -> None:
            super().__init__()
            self.gate = torch.nn.Linear(8, 4)

        def forward(self, x):
            logits = self.gate(x)
            w, idx = logits.softmax(-1).topk(2, dim=-1)
            return logits, w, idx

    router = Router()
    with profiler.profile(tmp_path / "run", **FAST) as prof:
        prof.watch_router(router, name="router", num_experts=4, top_k=2)
        for _ in range(2):
            with prof.phase("evaluate"):
                router(torch.randn(5, 8))
            prof.step()
    lines = _jsonl(tmp_path / "run" / "rank0.moe.jsonl")
    counts = [x for x in lines if x["type"] == "counts"]
    assert [x["phase"] for x in counts] == ["evaluate", "evaluate"]
    assert all(sum(x["counts"]) == 10 for x in counts)
    assert moe.RouterRecorder is not None
