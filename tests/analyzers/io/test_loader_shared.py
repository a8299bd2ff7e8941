"""The loader against the real shared Kineto traces, checked with values read independently (stdlib json)."""

from __future__ import annotations

import collections
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas.testing as pd_testing
import pytest

from torchscope import analyzers
from torchscope.analyzers import Trace, TraceSet
from torchscope.analyzers.io.chrome_trace import kind_of_category

SHARED_FILES = [
    "a100_alexnet.json.gz",
    "a100_train_2rank_rank0_nccl.json.gz",
    "cpu_only_rank34.json.gz",
    "diff_control_a100.json.gz",
    "diff_test_v100.json.gz",
    "job128_rank0.json.gz",
    "job128_rank1.json.gz",
    "mi250_minitoy_train.json.gz",
    "v100_train_1rank.json.gz",
]


def _reference(path: Path) -> dict:
    """Facts about a trace computed with the standard library only."""
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    events = doc["traceEvents"]
    complete = [e for e in events if e.get("ph") in ("X", "i")]
    by_cat = collections.Counter(e.get("cat", "") for e in complete)
    base_ns = int(doc.get("baseTimeNanoseconds", 0))
    kernels = sorted(e["ts"] for e in complete if e.get("cat") in ("kernel", "Kernel"))
    steps = {e["name"] for e in complete if e.get("cat") == "user_annotation" and e["name"].startswith("ProfilerStep#")}
    dist = doc.get("distributedInfo") or {}
    props = doc.get("deviceProperties") or []
    return {
        "by_cat": by_cat,
        "n_flows": sum(1 for e in events if e.get("ph") in ("s", "t", "f")),
        "steps": len(steps),
        "rank": dist.get("rank", 0),
        "world_size": dist.get("world_size", 1),
        "device": props[0]["name"] if props else None,
        "kernels": kernels,
        "base_ns": base_ns,
    }


def _ns_tolerance(ts_us: float) -> int:
    """What float64 can hold of a µs timestamp, in ns (exact for ints)."""
    if isinstance(ts_us, int):
        return 0
    return math.ceil(math.ulp(ts_us) * 1000 / 2) + 1


@pytest.mark.parametrize("name", SHARED_FILES)
def test_shared_trace_facts_match_independent_read(shared_traces: Path, name: str) -> None:
    path = shared_traces / name
    ref = _reference(path)
    trace = analyzers.load(path)
    assert isinstance(trace, Trace)
    ev = trace.events

    got_by_cat = ev["cat"].astype(str).value_counts().to_dict()
    assert got_by_cat == dict(ref["by_cat"])
    assert len(trace.flows) == ref["n_flows"]
    assert len(trace.steps()) == ref["steps"]
    assert trace.rank == ref["rank"]
    assert trace.meta.world_size == ref["world_size"]
    assert trace.meta.device_name == ref["device"]
    assert trace.meta.dropped_events == 0

    kernels = ev[ev["kind"] == "kernel"].sort_values("ts_ns")
    assert len(kernels) == len(ref["kernels"])
    if ref["kernels"]:
        for got, want in ((kernels["ts_ns"].iloc[0], ref["kernels"][0]), (kernels["ts_ns"].iloc[-1], ref["kernels"][-1])):
            want_ns = round(want * 1000) + ref["base_ns"] if isinstance(want, int) else want * 1000 + ref["base_ns"]
            assert abs(int(got) - want_ns) <= _ns_tolerance(want) + 1


@pytest.mark.parametrize("name", SHARED_FILES)
def test_frames_have_the_documented_types(shared_traces: Path, name: str) -> None:
    trace = analyzers.load(shared_traces / name)
    ev = trace.events
    for col in ("ts_ns", "dur_ns", "pid", "tid", "stream", "device", "correlation", "external_id"):
        assert ev[col].dtype == np.int64, col
    for col in ("name", "cat", "kind", "ph"):
        assert str(ev[col].dtype) == "category", col
    assert (ev["dur_ns"] >= 0).all()
    assert ev["ts_ns"].is_monotonic_increasing
    assert set(ev["rank"].unique()) == {trace.rank}
    assert ev["kind"].notna().all()


def test_base_time_makes_timestamps_absolute(shared_traces: Path) -> None:
    trace = analyzers.load(shared_traces / "a100_train_2rank_rank0_nccl.json.gz")
    assert trace.meta.base_time_ns == 1711964646000000000
    first = trace.events["ts_ns"].min()
    # 2024-04-01 in epoch ns: the base (1711964646 s) plus the file's µs offsets
    assert 1_711_964_646 * 10**9 < first < 1_711_964_646 * 10**9 + 10**16


def test_gpu_kernels_carry_stream_device_and_correlation(shared_traces: Path) -> None:
    trace = analyzers.load(shared_traces / "v100_train_1rank.json.gz")
    kernels = trace.of_kind("kernel")
    assert (kernels["stream"] >= 0).all() and (kernels["device"] == 0).all()
    runtime = trace.of_kind("runtime")
    linked = kernels["correlation"].isin(runtime["correlation"])
    assert linked.mean() > 0.99  # nearly every kernel has its launching runtime call


def test_rocm_trace_maps_hip_runtime_to_runtime_kind(shared_traces: Path) -> None:
    trace = analyzers.load(shared_traces / "mi250_minitoy_train.json.gz")
    runtime = trace.of_kind("runtime")
    assert runtime["name"].astype(str).str.startswith("hip").all() and len(runtime) == 21
    assert len(trace.of_kind("kernel")) == 14


def test_traces_without_distributed_info_get_rank_from_name_or_zero(shared_traces: Path, tmp_path: Path) -> None:
    assert analyzers.load(shared_traces / "mi250_minitoy_train.json.gz").rank == 0
    with gzip.open(shared_traces / "mi250_minitoy_train.json.gz", "rb") as fh:
        raw = fh.read()
    copy = tmp_path / "worker_rank7.json"
    copy.write_bytes(raw)
    assert analyzers.load(copy).rank == 7


def test_folder_of_ranks_loads_as_trace_set(shared_traces: Path, tmp_path: Path) -> None:
    folder = tmp_path / "job128"
    folder.mkdir()
    for r in (0, 1):
        (folder / f"job128_rank{r}.json.gz").symlink_to(shared_traces / f"job128_rank{r}.json.gz")
    ts = analyzers.load(folder)
    assert isinstance(ts, TraceSet)
    assert sorted(ts.ranks) == [0, 1]
    assert ts.world_size == 128
    assert [t.rank for t in ts] == [0, 1]
    assert len(ts[1].of_kind("kernel")) == 1104


def test_old_capitalised_categories_map_to_the_same_kinds() -> None:
    assert kind_of_category("Kernel") == "kernel"
    assert kind_of_category("Runtime") == "runtime"
    assert kind_of_category("Operator") == "cpu_op"
    assert kind_of_category("Memcpy") == "memcpy"
    assert kind_of_category("Memset") == "memset"
    assert kind_of_category("Python function") == "python"
    assert kind_of_category("something new") == "other"


@pytest.mark.parametrize("name", ["mi250_minitoy_train.json.gz", "a100_alexnet.json.gz", "job128_rank0.json.gz"])
def test_streaming_reader_matches_whole_file_reader(shared_traces: Path, name: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from torchscope.analyzers.io import chrome_trace

    path = shared_traces / name
    monkeypatch.setattr(chrome_trace, "_STREAM_CHUNK", 4096)  # many chunks even on a small file
    streamed = chrome_trace._read_kineto_streaming(path)
    whole_top, whole = chrome_trace._read_whole(path)
    if name.startswith("job128"):
        assert streamed is None  # single-line JSON is not Kineto's layout: whole-file path
        return
    assert streamed is not None
    top, collector = streamed
    assert top == whole_top
    assert collector.seen == whole.seen
    a = chrome_trace._build_trace(path, collector, top, rank=None, manifest=None, streams={})
    b = chrome_trace._build_trace(path, whole, whole_top, rank=None, manifest=None, streams={})
    pd_testing.assert_frame_equal(a.events.drop(columns="args"), b.events.drop(columns="args"))
    assert a.events["args"].tolist() == b.events["args"].tolist()
    pd_testing.assert_frame_equal(a.flows, b.flows)
