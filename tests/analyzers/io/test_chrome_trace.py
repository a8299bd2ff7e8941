"""The Chrome-trace reader (io/chrome_trace.py): small files written here, then the real shared Kineto
traces checked against values read independently (stdlib json), and a sample bundle's counters."""

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
from torchscope.analyzers import Trace
from torchscope.analyzers.core.args import decode_args
from torchscope.analyzers.core.trace import KINDS
from torchscope.analyzers.io.chrome_trace import kind_of_category, parse_trace_file

BASE_NS = 1_000_000


def _write(tmp_path: Path, events: list[dict], *, gz: bool = False, **top) -> Path:
    doc = json.dumps({"traceEvents": events, **top}).encode()
    path = tmp_path / ("t.json.gz" if gz else "t.json")
    path.write_bytes(gzip.compress(doc) if gz else doc)
    return path


def _x(cat: str, name: str = "e", ts: float | str = 1, dur: float | str = 1, **fields) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur, **fields}


#: Category spellings from several Kineto versions and vendors → the kind they normalise to.
CATEGORY_KINDS = {
    "kernel": "kernel", "Kernel": "kernel", "gpu_memcpy": "memcpy", "Memcpy": "memcpy",
    "gpu_memset": "memset", "Memset": "memset", "gpu_user_annotation": "gpu_annotation",
    "cuda_runtime": "runtime", "Runtime": "runtime", "hip_runtime": "runtime", "cuda_driver": "driver",
    "cuda_sync": "cuda_sync", "cpu_op": "cpu_op", "Operator": "cpu_op", "user_annotation": "annotation",
    "python_function": "python", "Python function": "python", "torchscope.phase": "phase",
    "torchscope.module": "module", "Trace": "other", "something new": "other",
}


def test_categories_map_to_kinds_and_instants_to_instant_or_memory(tmp_path: Path) -> None:
    events = [_x(cat, name=cat, ts=i) for i, cat in enumerate(CATEGORY_KINDS)]
    events += [{"ph": "i", "cat": "cpu_instant_event", "name": "[memory]", "pid": 1, "tid": 1, "ts": 50,
                "args": {"Bytes": 64}},
               {"ph": "i", "cat": "cpu_op", "name": "mark", "pid": 1, "tid": 1, "ts": 51}]
    ev = parse_trace_file(_write(tmp_path, events)).events
    kinds = dict(zip(ev["name"].astype(str), ev["kind"].astype(str)))
    assert {cat: kinds[cat] for cat in CATEGORY_KINDS} == CATEGORY_KINDS
    assert kinds["[memory]"] == "memory" and kinds["mark"] == "instant"
    assert list(ev["kind"].cat.categories) == list(KINDS)
    assert ev["cat"].astype(str).tolist()[:3] == list(CATEGORY_KINDS)[:3]  # the file's spelling is kept


def test_ts_and_dur_become_int_ns_with_the_base_time_added(tmp_path: Path) -> None:
    events = [_x("cpu_op", "float", ts=1.5, dur=0.25), _x("cpu_op", "string", ts="12.3456", dur="2"),
              _x("cpu_op", "epoch_int", ts=1_711_964_646_123_456, dur=3),
              {"ph": "i", "cat": "cpu_op", "name": "instant", "pid": 1, "tid": 1, "ts": 7}]
    ev = parse_trace_file(_write(tmp_path, events, baseTimeNanoseconds=BASE_NS)).events
    assert ev["ts_ns"].dtype == np.int64 and ev["dur_ns"].dtype == np.int64
    got = {n: (int(t), int(d)) for n, t, d in zip(ev["name"].astype(str), ev["ts_ns"], ev["dur_ns"])}
    assert got == {"float": (BASE_NS + 1500, 250), "string": (BASE_NS + 12346, 2000),
                   "epoch_int": (BASE_NS + 1_711_964_646_123_456_000, 3000), "instant": (BASE_NS + 7000, 0)}
    assert ev["ts_ns"].is_monotonic_increasing  # sorted by start


def test_gzip_and_plain_json_read_the_same(tmp_path: Path) -> None:
    events = [_x("kernel", "k", ts=3, dur=2, args={"stream": 7, "device": 0, "correlation": 9})]
    plain = parse_trace_file(_write(tmp_path, events)).events
    gz = parse_trace_file(_write(tmp_path, events, gz=True)).events
    pd_testing.assert_frame_equal(plain.drop(columns="args"), gz.drop(columns="args"))


def test_int_columns_come_from_args_or_are_minus_one(tmp_path: Path) -> None:
    events = [_x("kernel", "k", ts=1, args={"stream": 7, "device": 1, "correlation": 9, "External id": 4}),
              _x("cpu_op", "op", ts=2, tid="Spans", args={"External id": 4}), _x("cpu_op", "bare", ts=3)]
    ev = parse_trace_file(_write(tmp_path, events)).events.set_index("name")
    cols = ["pid", "tid", "stream", "device", "correlation", "external_id"]
    assert ev.loc["k", cols].tolist() == [1, 1, 7, 1, 9, 4]
    assert ev.loc["op", cols].tolist() == [1, -1, -1, -1, -1, 4]  # a non-numeric tid is -1
    assert ev.loc["bare", cols].tolist() == [1, 1, -1, -1, -1, -1]
    assert ev.loc["bare", "args"] is None


def test_flows_keep_id_phase_and_time_and_drop_those_without_an_id(tmp_path: Path) -> None:
    events = [_x("cpu_op", ts=1),
              {"ph": "s", "cat": "ac2g", "name": "ac2g", "id": 5, "pid": 1, "tid": 1, "ts": 12},
              {"ph": "f", "cat": "ac2g", "name": "ac2g", "id": 5, "pid": 0, "tid": 7, "ts": 15, "bp": "e"},
              {"ph": "f", "cat": "ac2g", "name": "ac2g", "pid": 0, "tid": 7, "ts": 15}]
    trace = parse_trace_file(_write(tmp_path, events, baseTimeNanoseconds=BASE_NS))
    flows = trace.flows
    assert flows[["id", "ts_ns", "pid", "tid"]].values.tolist() == [[5, BASE_NS + 12000, 1, 1],
                                                                    [5, BASE_NS + 15000, 0, 7]]
    assert flows["ph"].astype(str).tolist() == ["s", "f"] and set(flows["cat"].astype(str)) == {"ac2g"}
    assert trace.meta.dropped_events == 1 and "flow event without" in trace.meta.warnings[0]


def test_counters_are_one_row_per_numeric_series(tmp_path: Path) -> None:
    events = [_x("cpu_op", ts=1),
              {"ph": "C", "name": "power_w", "pid": 2, "ts": 10, "args": {"gpu0": 200.5, "gpu1": "n/a", "gpu2": 3}},
              {"ph": "C", "name": "power_w", "pid": 2, "ts": 5, "args": {"gpu0": 100}}]
    counters = parse_trace_file(_write(tmp_path, events, baseTimeNanoseconds=BASE_NS)).counters
    rows = counters[["ts_ns", "pid", "name", "series", "value"]].astype({"name": str, "series": str})
    assert rows.values.tolist() == [[BASE_NS + 5000, 2, "power_w", "gpu0", 100.0],
                                    [BASE_NS + 10000, 2, "power_w", "gpu0", 200.5],
                                    [BASE_NS + 10000, 2, "power_w", "gpu2", 3.0]]
    assert counters["value"].dtype == np.float64


def test_metadata_events_and_top_level_keys_fill_the_meta(tmp_path: Path) -> None:
    events = [_x("cpu_op", ts=1),
              {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "python"}},
              {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "main"}},
              {"ph": "M", "name": "process_sort_index", "pid": 1, "args": {"sort_index": 1}}]
    trace = parse_trace_file(_write(tmp_path, events, baseTimeNanoseconds=BASE_NS, schemaVersion=1,
                                    traceName="job", distributedInfo={"rank": 3, "world_size": 4},
                                    deviceProperties=[{"id": 0, "name": "NVIDIA A100"}]))
    meta = trace.meta
    assert (meta.rank, meta.world_size, trace.rank) == (3, 4, 3)
    assert meta.processes == {1: "python"} and meta.threads == {(1, 1): "main"}
    assert (meta.device_name, meta.schema_version, meta.trace_name, meta.base_time_ns) == \
        ("NVIDIA A100", 1, "job", BASE_NS)
    assert set(trace.events["rank"]) == {3} and trace.events["rank"].dtype == np.int32
    assert not meta.warnings and meta.dropped_events == 0
    assert parse_trace_file(meta.path, rank=9).rank == 9  # the caller's rank wins over the file's


def test_sample_bundle_counters_and_thread_names(sample_traces: Path) -> None:
    path = sample_traces / "cnn_train" / "rank0.trace.json.gz"
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    want = collections.Counter((e["name"], s) for e in doc["traceEvents"] if e.get("ph") == "C" for s in e["args"])
    trace = parse_trace_file(path)
    got = collections.Counter(zip(trace.counters["name"].astype(str), trace.counters["series"].astype(str)))
    assert got == want and {"cpu_util_pct", "rss_bytes"} <= {name for name, _ in got}
    assert {"torchscope phases", "torchscope modules"} <= set(trace.meta.threads.values())


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
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    return {
        "processes": processes,
        "n_counter_values": sum(len(e.get("args") or {}) for e in events if e.get("ph") == "C"),
        "flow_ids": sorted(e["id"] for e in events if e.get("ph") in ("s", "t", "f")),
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
    assert sorted(trace.flows["id"].tolist()) == ref["flow_ids"]
    assert trace.meta.processes == ref["processes"]
    assert len(trace.counters) == ref["n_counter_values"]
    assert len(trace.steps()) == ref["steps"]
    assert trace.rank == ref["rank"]
    assert trace.meta.world_size == ref["world_size"]
    assert trace.meta.device_name == ref["device"]
    assert trace.meta.dropped_events == 0

    kernels = ev[ev["kind"] == "kernel"].sort_values("ts_ns")
    assert len(kernels) == len(ref["kernels"])
    if ref["kernels"]:
        ends = ((kernels["ts_ns"].iloc[0], ref["kernels"][0]), (kernels["ts_ns"].iloc[-1], ref["kernels"][-1]))
        for got, want in ends:
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


# --- typed decoding ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mi250_minitoy_train.json.gz", "a100_alexnet.json.gz", "job128_rank0.json.gz",
                                  "cpu_only_rank34.json.gz"])
def test_typed_and_generic_decoders_give_the_same_trace(shared_traces: Path, name: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from torchscope.analyzers.io import chrome_trace

    typed = parse_trace_file(shared_traces / name)
    monkeypatch.setattr(chrome_trace, "_decode_events", lambda raw: None)  # every batch: orjson dicts
    generic = parse_trace_file(shared_traces / name)
    assert {type(a) for a in typed.events["args"]} <= {bytes, type(None)}
    assert {type(a) for a in generic.events["args"]} <= {dict, type(None)}
    pd_testing.assert_frame_equal(typed.events.drop(columns="args"), generic.events.drop(columns="args"))
    assert list(decode_args(typed.events["args"])) == list(decode_args(generic.events["args"]))
    pd_testing.assert_frame_equal(typed.counters, generic.counters)
    pd_testing.assert_frame_equal(typed.flows, generic.flows)
    assert typed.meta == generic.meta


def test_a_batch_the_types_do_not_fit_keeps_the_generic_rules(tmp_path: Path) -> None:
    # A bool timestamp and a numeric name do not fit the typed records: the batch goes to the generic
    # decoder, which drops the first and spells the second, as before typed decoding.
    events = [_x("kernel", "k", ts=1, args={"stream": 7, "correlation": 3}),
              _x("cpu_op", "bad", ts=True),
              _x("cpu_op", 5, ts=3)]
    trace = parse_trace_file(_write(tmp_path, events))
    ev = trace.events
    assert ev["name"].astype(str).tolist() == ["k", "5"]
    assert ev["stream"].tolist() == [7, -1] and ev["correlation"].tolist() == [3, -1]
    assert any("missing or non-numeric 'ts'" in w for w in trace.meta.warnings)


def test_args_stay_raw_json_until_an_analysis_decodes_them(tmp_path: Path) -> None:
    events = [_x("kernel", "a", ts=1, args={"stream": 7, "device": 0, "correlation": 11, "External id": 5,
                                            "grid": [1, 2, 3]}),
              _x("cpu_op", "b", ts=2, args=None),
              _x("cpu_op", "c", ts=3),
              _x("cpu_op", "d", ts=4, args=[1, 2]),  # not an object: no args, int columns -1
              _x("cpu_op", "e", ts=5, args={"correlation": "0x1f", "External id": 2.0})]
    ev = parse_trace_file(_write(tmp_path, events, gz=True)).events
    raw = ev["args"].tolist()
    assert type(raw[0]) is bytes and raw[1] is None and raw[2] is None
    decoded = decode_args(ev["args"])
    assert decoded[0] == {"stream": 7, "device": 0, "correlation": 11, "External id": 5, "grid": [1, 2, 3]}
    assert decoded[1] is None and decoded[2] is None and decoded[3] is None
    assert ev["stream"].tolist() == [7, -1, -1, -1, -1]
    assert ev["external_id"].tolist() == [5, -1, -1, -1, 2]
    assert ev["correlation"].tolist() == [11, -1, -1, -1, 31]  # hex strings read as before


def test_an_integer_column_reads_values_beyond_int64_as_missing_whatever_else_it_holds() -> None:
    # Found by the mutation test: a float pid of 2**63 beside a deleted pid (None) overflowed the int64 column.
    from torchscope.analyzers.io.chrome_trace import _ints

    assert _ints([1, None, 2.0**63]).tolist() == [1, -1, -1]
    assert _ints([1, None, "7", 2**64]).tolist() == [1, -1, 7, -1]
    assert _ints([2**70, 3]).tolist() == [-1, 3]
    assert _ints([1, "0x10", -2**63]).tolist() == [1, 16, -2**63]
