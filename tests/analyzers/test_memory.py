"""Memory analyzer: allocator events, bundle samples and counters, capacity and synchronous-copy findings."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from torchscope import analyzers
from torchscope.analyzers import memory
from torchscope.analyzers.core.result import NotApplicable
from torchscope.analyzers.core.registry import run_all
from tests.conftest import require_module, require_or_skip

GIB = 1 << 30
CAPACITY = 80 * GIB
T0_US = 1_000_000.0


def _x(name: str, cat: str, ts: float, dur: float, *, pid: int = 1, tid: int = 1, **args) -> dict:
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args}


def _mem(ts: float, nbytes: int, allocated: int, reserved: int, *, device_type: int = 1, device: int = 0,
         tid: int = 1) -> dict:
    return {"ph": "i", "s": "t", "name": "[memory]", "cat": "cpu_instant_event", "ts": ts, "pid": 1, "tid": tid,
            "args": {"Bytes": nbytes, "Total Allocated": allocated, "Total Reserved": reserved,
                     "Device Type": device_type, "Device Id": device, "Addr": 1}}


def _write(tmp_path: Path, events: list[dict], name: str = "t.json", **top) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"schemaVersion": 1, "traceEvents": events, **top}))
    return path


def _training_trace(tmp_path: Path, *, weights: int, activations: int, reserved_extra: int = 0,
                    name: str = "t.json") -> Path:
    """Two 10 ms steps on an 80 GiB GPU: ``weights`` resident, ``activations`` allocated in forward, freed in
    backward."""
    events = []
    for step in range(2):
        t0 = T0_US + step * 10_000
        events += [
            _x(f"ProfilerStep#{step + 1}", "user_annotation", t0, 10_000),
            _x("forward", "torchscope.phase", t0 + 100, 4_000),
            _x("backward", "torchscope.phase", t0 + 4_200, 5_000),
            _x("aten::linear", "cpu_op", t0 + 200, 3_000),
            _x("autograd::engine::evaluate_function: AddmmBackward0", "cpu_op", t0 + 4_300, 4_000, tid=2),
        ]
        reserved = weights + activations + reserved_extra
        events += [
            _mem(t0 + 300, activations // 2, weights + activations // 2, reserved),
            _mem(t0 + 400, activations - activations // 2, weights + activations, reserved),
            _mem(t0 + 4_400, -activations, weights, reserved, tid=2),
        ]
    events.insert(0, _mem(T0_US - 100, weights, weights, weights + activations + reserved_extra))
    props = [{"id": 0, "name": "NVIDIA H100 80GB HBM3", "totalGlobalMem": CAPACITY}]
    return _write(tmp_path, events, name=name, deviceProperties=props)


def _copy_trace(tmp_path: Path, *, pageable: bool, call: str = "cudaMemcpyAsync", blocked_us: float = 1_000,
                name: str = "c.json") -> Path:
    """Three 10 ms steps with one 4 MB host-to-device copy each, the host blocked ``blocked_us`` in the call."""
    events = []
    src = "Pageable" if pageable else "Pinned"
    for step in range(3):
        t0 = T0_US + step * 10_000
        corr = 500 + step
        events += [
            _x(f"ProfilerStep#{step + 1}", "user_annotation", t0, 10_000),
            _x(call, "cuda_runtime", t0 + 100, blocked_us, correlation=corr),
            _x(f"Memcpy HtoD ({src} -> Device)", "gpu_memcpy", t0 + 150, 800, pid=0, tid=7, device=0, stream=7,
               correlation=corr, bytes=4_000_000),
            _x("void gemm<float>", "kernel", t0 + 1_200, 7_000, pid=0, tid=7, device=0, stream=7,
               correlation=900 + step),
        ]
    return _write(tmp_path, events, name=name)


# --- allocator events ---------------------------------------------------------------------------------

def test_peaks_and_when(tmp_path: Path) -> None:
    result = memory.analyze(analyzers.load(_training_trace(tmp_path, weights=10 * GIB, activations=20 * GIB)))
    peaks = result.table("peaks")
    (row,) = peaks.to_dict("records")
    assert (row["device_type"], row["device"], row["source"]) == ("cuda", 0, "allocator")
    assert row["peak_allocated_bytes"] == 30 * GIB
    # The first time it reached the peak: step 1, 400 µs in.
    assert row["peak_allocated_ts_ns"] == int((T0_US + 400) * 1000)
    assert row["capacity_bytes"] == CAPACITY
    assert row["peak_pct_of_capacity"] == pytest.approx(100 * 30 / 80)
    assert result.summary["peak_allocated_bytes"] == 30 * GIB
    per_step = result.table("per_step")
    assert per_step["transient_bytes"].tolist() == [20 * GIB, 20 * GIB]
    assert not result.findings


def test_gpu_followed_per_step_when_cpu_allocations_are_present(tmp_path: Path) -> None:
    path = _training_trace(tmp_path, weights=10 * GIB, activations=20 * GIB)
    doc = json.loads(path.read_text())
    doc["traceEvents"] += [_mem(T0_US + 500 + 10_000 * s, 64, 100 * GIB, 0, device_type=0, device=-1) for s in range(2)]
    path.write_text(json.dumps(doc))
    result = memory.analyze(analyzers.load(path))
    assert set(result.table("peaks")["device_type"]) == {"cpu", "cuda"}
    assert result.summary["peak_allocated_bytes"] == 30 * GIB  # the GPU's, not the host allocator's
    assert result.table("per_step")["transient_bytes"].tolist() == [20 * GIB, 20 * GIB]


def test_malformed_allocator_args_are_ignored(tmp_path: Path) -> None:
    events = [_mem(T0_US, 100, 100, 200), _mem(T0_US + 1, 50, 150, 200)]
    events[1]["args"]["Total Allocated"] = "lots"
    events.append({"ph": "i", "s": "t", "name": "[memory]", "cat": "cpu_instant_event", "ts": T0_US + 2, "pid": 1,
                   "tid": 1, "args": None})
    (row,) = memory.analyze(analyzers.load(_write(tmp_path, events))).table("peaks").to_dict("records")
    assert row["peak_allocated_bytes"] == 100 and row["peak_reserved_bytes"] == 200


def test_allocations_by_phase_and_op(tmp_path: Path) -> None:
    trace = analyzers.load(_training_trace(tmp_path, weights=GIB, activations=2 * GIB))
    table = memory.allocations_by_category(trace)
    phase = table[table["by"] == "phase"].set_index("category")
    assert phase.loc["forward", "allocations"] == 4
    assert phase.loc["forward", "allocated_bytes"] == 4 * GIB
    assert phase.loc["backward", "freed_bytes"] == 4 * GIB
    op = table[table["by"] == "op"].set_index("category")
    assert op.loc["aten::linear", "net_bytes"] == 4 * GIB
    # The backward frees happen on the autograd thread, inside its op.
    assert op.loc["autograd::engine::evaluate_function: AddmmBackward0", "net_bytes"] == -4 * GIB
    assert op.loc["(none)", "allocated_bytes"] == GIB  # the weights, before any op


def test_allocations_go_to_the_innermost_phase_and_top_level_op_around_them(tmp_path: Path) -> None:
    events = [_x("forward", "torchscope.phase", T0_US, 1_000), _x("attention", "torchscope.phase", T0_US + 100, 100),
              _x("aten::linear", "cpu_op", T0_US + 500, 100), _x("aten::addmm", "cpu_op", T0_US + 510, 20),
              _x("aten::linear", "cpu_op", T0_US + 500, 400),  # same start, longer: the outer op
              _mem(T0_US + 150, 10, 10, 20), _mem(T0_US + 300, 20, 30, 40), _mem(T0_US + 520, 40, 70, 80)]
    table = memory.allocations_by_category(analyzers.load(_write(tmp_path, events)))
    phase = table[table["by"] == "phase"].set_index("category")["allocated_bytes"].to_dict()
    assert phase == {"attention": 10, "forward": 60}  # 300 µs: after "attention" ended, still in "forward"
    op = table[table["by"] == "op"].set_index("category")["allocated_bytes"].to_dict()
    assert op == {"aten::linear": 40, "(none)": 30}


def test_near_capacity_triggers(tmp_path: Path) -> None:
    result = memory.analyze(analyzers.load(_training_trace(tmp_path, weights=30 * GIB, activations=44 * GIB)))
    (finding,) = result.findings
    assert finding.id == memory.MEMORY_NEAR_CAPACITY
    assert finding.evidence["peak_pct_of_capacity"] == pytest.approx(100 * 74 / 80)
    assert finding.evidence["median_transient_per_step_gib"] == pytest.approx(44)
    assert "checkpoint" in finding.recommendation and "micro-batch" in finding.recommendation
    assert "expandable_segments" not in finding.recommendation
    assert "22.0 GiB" in finding.estimated_gain  # half the per-step transient


def test_near_capacity_from_reserved_with_fragmentation(tmp_path: Path) -> None:
    trace = analyzers.load(_training_trace(tmp_path, weights=30 * GIB, activations=20 * GIB, reserved_extra=25 * GIB))
    (finding,) = memory.analyze(trace).findings
    assert finding.evidence["reserved_unallocated_gib"] == pytest.approx(25)
    assert "expandable_segments" in finding.recommendation


def test_near_capacity_threshold_is_an_option(tmp_path: Path) -> None:
    trace = analyzers.load(_training_trace(tmp_path, weights=30 * GIB, activations=10 * GIB))
    assert not memory.analyze(trace).findings
    assert [f.id for f in memory.analyze(trace, near_capacity_share=0.4).findings] == [memory.MEMORY_NEAR_CAPACITY]


# --- run bundles: samples stream, manifest capacity, counters -----------------------------------------------

def _bundle(tmp_path: Path, lines: list[dict], *, total_memory: int | None = CAPACITY) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    devices = [{"index": 0, "name": "NVIDIA A100-SXM4-40GB", "uuid": "GPU-x", "total_memory_bytes": total_memory,
                "peak": None}] if total_memory else []
    (run / "manifest.json").write_text(json.dumps({"schema_version": 1, "tool": "torchscope", "world_size": 1,
                                                    "ranks": [0], "devices": devices}))
    (run / "rank0.samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def test_bundle_samples_give_timeline_rss_and_capacity(tmp_path: Path) -> None:
    t = 1_700_000_000_000_000_000
    lines = [{"t_ns": t - 1, "source": "nvml", "event": "unavailable", "field": "power_mw", "reason": "test"}]
    for i, (alloc, rss) in enumerate([(10, 2), (75, 3), (40, 5)]):
        lines += [{"t_ns": t + i * 10**8, "source": "cuda_mem", "device": 0, "allocated_bytes": alloc * GIB,
                   "reserved_bytes": (alloc + 2) * GIB},
                  {"t_ns": t + i * 10**8, "source": "host", "cpu_util_pct": 50.0, "rss_bytes": rss * GIB},
                  {"t_ns": t + i * 10**8, "source": "nvml", "device": 0, "mem_used_bytes": (alloc + 3) * GIB}]
    trace = analyzers.load(_bundle(tmp_path, lines))  # one rank: a Trace
    assert trace.events.empty and "samples" in trace.streams
    result = memory.analyze(trace)
    assert result.summary["peak_rss_bytes"] == 5 * GIB
    assert result.summary["peak_rss_ts_ns"] == t + 2 * 10**8
    peaks = result.table("peaks").set_index("source")
    assert peaks.loc["samples", "peak_reserved_bytes"] == 77 * GIB
    assert peaks.loc["samples", "peak_reserved_ts_ns"] == t + 10**8
    assert peaks.loc["nvml", "peak_used_bytes"] == 78 * GIB
    assert peaks.loc["samples", "capacity_bytes"] == CAPACITY  # from the manifest
    (finding,) = result.findings
    assert finding.evidence["source"] == "samples"  # allocator numbers preferred over NVML's
    assert finding.evidence["peak_pct_of_capacity"] == pytest.approx(100 * 77 / 80)
    assert "no per-step allocator data" in finding.estimated_gain


def test_counters_are_read_when_there_is_no_stream(tmp_path: Path) -> None:
    events = [{"ph": "C", "name": "cuda_allocated_bytes", "pid": 1, "tid": 0, "ts": T0_US + i, "args": {"cuda1": v}}
              for i, v in enumerate([1.0, 5.0, 2.0])]
    events += [{"ph": "C", "name": "rss_bytes", "pid": 1, "tid": 0, "ts": T0_US + i, "args": {"host": v}}
               for i, v in enumerate([7.0, 9.0])]
    events.append(_x("aten::add", "cpu_op", T0_US, 5))
    result = memory.analyze(analyzers.load(_write(tmp_path, events)))
    (row,) = result.table("peaks").to_dict("records")
    assert (row["source"], row["device"], row["peak_allocated_bytes"]) == ("counters", 1, 5.0)
    assert np.isnan(row["capacity_bytes"])
    assert result.summary["peak_rss_bytes"] == 9.0


def test_cpu_bundle_host_rss(sample_traces: Path) -> None:
    bundle = sample_traces / "cnn_train"
    require_or_skip(bundle.is_dir(), f"sample run {bundle} not recorded")
    lines = [json.loads(line) for line in (bundle / "rank0.samples.jsonl").read_text().splitlines() if line.strip()]
    rss = [(line["rss_bytes"], line["t_ns"]) for line in lines if line.get("source") == "host" and "rss_bytes" in line]
    result = memory.analyze(analyzers.load(bundle))
    peak, at = max(rss, key=lambda r: (r[0], -r[1]))
    assert result.summary["peak_rss_bytes"] == peak
    assert result.summary["peak_rss_ts_ns"] == at
    assert len(result.table("host_rss")) == len(rss)
    assert not result.findings


# --- synchronous host-to-device copies ------------------------------------------------------------------

def test_pageable_copies_in_the_step_trigger(tmp_path: Path) -> None:
    result = memory.analyze(analyzers.load(_copy_trace(tmp_path, pageable=True)))
    copies = result.table("h2d_copies")
    assert copies["synchronous"].all() and copies["step"].tolist() == [1, 2, 3]
    assert copies["host_blocked_ns"].tolist() == [1_000_000] * 3
    (finding,) = result.findings
    assert finding.id == memory.SYNCHRONOUS_H2D_COPIES
    assert finding.gain_fraction == pytest.approx(0.1)  # 1 ms blocked per 10 ms step
    assert "pin_memory=True" in finding.recommendation and "non_blocking=True" in finding.recommendation
    assert finding.evidence["bytes_per_step"] == 4_000_000


def test_pinned_async_copies_do_not_trigger(tmp_path: Path) -> None:
    result = memory.analyze(analyzers.load(_copy_trace(tmp_path, pageable=False, blocked_us=20)))
    assert not result.table("h2d_copies")["synchronous"].any()
    assert not result.findings


def test_blocking_cudamemcpy_triggers_even_from_pinned_memory(tmp_path: Path) -> None:
    result = memory.analyze(analyzers.load(_copy_trace(tmp_path, pageable=False, call="cudaMemcpy")))
    (finding,) = result.findings
    assert "blocking cudaMemcpy" in finding.evidence["reasons"]
    assert "cudaMemcpyAsync" in finding.recommendation


def test_small_sync_copies_stay_below_threshold(tmp_path: Path) -> None:
    result = memory.analyze(analyzers.load(_copy_trace(tmp_path, pageable=True, blocked_us=50)))
    assert result.table("h2d_copies")["synchronous"].all()
    assert not result.findings  # 0.5% of the step < SYNC_H2D_MIN_SHARE


def test_real_traces_h2d(shared_traces: Path) -> None:
    # AlexNet copies its weights from pageable memory once, before any step: not a step cost.
    alexnet = memory.analyze(analyzers.load(shared_traces / "a100_alexnet.json.gz"))
    assert alexnet.summary["h2d_synchronous"] == 16
    assert not alexnet.findings
    # job128 has pageable copies inside its steps, but they block the host for well under 1% of a step.
    job = memory.analyze(analyzers.load(shared_traces / "job128_rank0.json.gz"))
    copies = job.table("h2d_copies")
    assert copies["pageable"].sum() == 16 and set(copies.loc[copies["pageable"], "step"]) <= {551, 552}
    assert not job.findings
    # diff_control copies only from pinned memory.
    control = memory.analyze(analyzers.load(shared_traces / "diff_control_a100.json.gz"))
    assert control.summary["h2d_copies"] == 150 and control.summary["h2d_synchronous"] == 0


def test_not_applicable_without_memory_data(shared_traces: Path) -> None:
    with pytest.raises(NotApplicable, match="profile_memory=True"):
        memory.analyze(analyzers.load(shared_traces / "cpu_only_rank34.json.gz"))
    report = run_all(analyzers.load(shared_traces / "cpu_only_rank34.json.gz"), only=("memory",))
    assert "memory" in report.skipped and not report.errors


# --- a real torch CPU trace with profile_memory -----------------------------------------------------------

@pytest.mark.slow
def test_real_torch_profile_memory(tmp_path: Path) -> None:
    torch = require_module("torch")
    from torch.profiler import ProfilerActivity, profile

    path = tmp_path / "cpu.json"
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        x = torch.randn(512, 512)
        y = torch.nn.functional.linear(x, torch.randn(256, 512))
        del x
        y.sum()
    prof.export_chrome_trace(str(path))
    result = memory.analyze(analyzers.load(path))
    peaks = result.table("peaks")
    assert peaks["device_type"].tolist() == ["cpu"]
    assert peaks["peak_allocated_bytes"].iloc[0] >= (512 * 512 + 256 * 512 + 512 * 256) * 4
    ops = result.table("allocations_by_category")
    ops = ops[ops["by"] == "op"].set_index("category")
    assert ops.loc["aten::randn", "allocated_bytes"] == (512 * 512 + 256 * 512) * 4
    assert ops.loc["aten::linear", "allocated_bytes"] >= 512 * 256 * 4
    # gzip round trip: the loader reads the same file compressed.
    gz = tmp_path / "cpu.json.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert memory.analyze(analyzers.load(gz)).table("peaks").equals(peaks)
