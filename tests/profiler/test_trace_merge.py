"""Merging Kineto cycles, our annotations and counters into one trace on Kineto's clock."""

from __future__ import annotations

import gzip
import json

import torch

from torchscope import profiler
from torchscope.profiler.trace_merge import MODULE_TID, PHASE_TID, counter_events, merge_traces

BASE = 1_700_000_000_000_000_000


def _kineto(ts_us: float, dur_us: float, name: str = "ProfilerStep#1") -> dict:
    return {"schemaVersion": 1, "baseTimeNanoseconds": BASE, "traceEvents": [
        {"ph": "M", "name": "process_name", "pid": 7, "tid": 0, "args": {"name": "python"}},
        {"ph": "X", "cat": "user_annotation", "name": name, "pid": 7, "tid": 7, "ts": ts_us, "dur": dur_us}]}


def test_annotations_placed_on_kineto_clock_and_clipped_to_windows():
    kineto = [_kineto(1000.0, 500.0), _kineto(5000.0, 500.0, "ProfilerStep#4")]
    inside = BASE + 1_100_000  # 1100 µs after the base: inside the first window
    ann = [("forward", "torchscope.phase", inside, inside + 200_000, {"step": 1}),
           ("blocks.0", "torchscope.module", inside, inside + 50_000, {"direction": "forward", "step": 1}),
           ("forward", "torchscope.phase", BASE + 3_000_000, BASE + 3_100_000, {"step": 2})]  # between windows
    trace = merge_traces(kineto, annotations=ann, sample_lines=[], pid=7)
    ours = [e for e in trace["traceEvents"] if str(e.get("cat", "")).startswith("torchscope.") and e["ph"] == "X"]
    assert [(e["name"], e["ts"], e["dur"], e["tid"]) for e in ours] == [
        ("forward", 1100.0, 200.0, PHASE_TID), ("blocks.0", 1100.0, 50.0, MODULE_TID)]
    assert [e["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"] == \
        ["process_name"]  # the second cycle's metadata is not duplicated
    assert {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"} >= {"ProfilerStep#1", "ProfilerStep#4"}
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"torchscope phases", "torchscope modules"}
    assert trace["torchscope"]["kineto_cycles"] == 2


def test_without_kineto_everything_is_kept_on_epoch_microseconds():
    t = 1_700_000_000_123_456_789
    trace = merge_traces([], annotations=[("forward", "torchscope.phase", t, t + 1000, None)],
                         sample_lines=[{"t_ns": t, "source": "host", "cpu_util_pct": 50.0, "rss_bytes": 10}], pid=1)
    x = next(e for e in trace["traceEvents"] if e["ph"] == "X")
    assert x["ts"] == round(t / 1000, 3) and trace["baseTimeNanoseconds"] == 0


def test_counter_events_units_and_series():
    lines = [
        {"t_ns": BASE + 2_000, "source": "nvml", "device": 1, "power_mw": 250_000, "energy_mj": 5000,
         "sm_clock_mhz": 1980},
        {"t_ns": BASE + 3_000, "source": "cuda_mem", "device": 0, "allocated_bytes": 10, "reserved_bytes": 20},
        {"t_ns": BASE + 4_000, "source": "host", "cpu_util_pct": 80.0, "rss_bytes": 5, "rapl_energy_uj": 2_000_000},
        {"t_ns": BASE + 5_000, "source": "nvml", "device": 0, "event": "unavailable", "field": "temp_c",
         "reason": "x"},
    ]
    ev = {(e["name"], next(iter(e["args"]))): (e["ts"], next(iter(e["args"].values())))
          for e in counter_events(lines, pid=1, base_ns=BASE)}
    assert ev[("power_w", "gpu1")] == (2.0, 250.0)
    assert ev[("energy_j", "gpu1")] == (2.0, 5.0)
    assert ev[("sm_clock_mhz", "gpu1")] == (2.0, 1980)
    assert ev[("cuda_allocated_bytes", "cuda0")] == (3.0, 10)
    assert ev[("rapl_energy_j", "host")] == (4.0, 2.0)
    assert len(ev) == 8


def test_repeat_cycles_are_all_in_the_merged_trace(tmp_path):
    with profiler.profile(tmp_path / "run", schedule=dict(wait=1, warmup=1, active=1, repeat=2),
                          host_roofline=False) as prof:
        for _ in range(7):
            torch.randn(32, 32) @ torch.randn(32, 32)
            prof.step()
    with gzip.open(tmp_path / "run" / "rank0.trace.json.gz") as fh:
        trace = json.load(fh)
    steps = sorted(e["name"] for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#"))
    assert steps == ["ProfilerStep#2", "ProfilerStep#5"]
    assert trace["torchscope"]["kineto_cycles"] == 2
    assert not list((tmp_path / "run").glob(".rank0.kineto*"))
