"""`torchscope export`: the annotated trace opens as Chrome-trace JSON and loads back unchanged."""

from __future__ import annotations

import collections
import gzip
import shutil

import orjson
import pytest

import torchscope
from torchscope import analyzers
from torchscope.cli import main
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.io.export import (
    FINDINGS_TRACK, METADATA_NAMES, annotated_trace, finding_window_ns, write_annotated_trace,
)
from torchscope.analyzers.timeline.steps import step_windows
from tests.conftest import require_or_skip


def _frame_sorted(df, cols):
    return df[cols].sort_values(cols).reset_index(drop=True)


@pytest.fixture(scope="module")
def nccl(shared_traces):
    data = analyzers.load(shared_traces / "a100_train_2rank_rank0_nccl.json.gz")
    return data, analyzers.run_all(data)


def test_round_trip_keeps_every_event_counter_and_flow(nccl, tmp_path):
    data, report = nccl
    out = write_annotated_trace(data, report, tmp_path / "x.json.gz")
    back = analyzers.load(out)
    ev = back.events[back.events["cat"].astype(str) != "torchscope.finding"]
    cols = ["ts_ns", "dur_ns", "pid", "tid", "correlation", "external_id"]
    assert _frame_sorted(ev, cols).equals(_frame_sorted(data.events, cols))
    assert sorted(ev["name"].astype(str)) == sorted(data.events["name"].astype(str))
    assert len(back.flows) == len(data.flows)
    assert back.meta.device_name == data.meta.device_name


def _metadata_counts(events, skip_pid=None) -> collections.Counter:
    return collections.Counter(e["name"] for e in events if e.get("ph") == "M" and e["name"] in METADATA_NAMES
                               and (skip_pid is None or e.get("pid") != skip_pid))


def _source_events(path):
    return orjson.loads(gzip.decompress(path.read_bytes()))["traceEvents"]


def _findings_pid(doc):
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "process_name"}
    return next(pid for pid, name in names.items() if name == FINDINGS_TRACK)


def test_findings_are_slices_spanning_their_window_inside_the_trace(nccl):
    data, report = nccl
    doc = annotated_trace(data, report)
    assert [f["id"] for f in doc["torchscopeFindings"]] == [f.id for f in report.findings]
    track = [e for e in doc["traceEvents"] if e.get("cat") == "torchscope.finding"]
    assert len(track) == len(report.findings) >= 1
    assert all(e["ph"] == "X" and "recommendation" in e["args"] for e in track)
    assert {e["pid"] for e in track} == {_findings_pid(doc)}
    assert len({e["tid"] for e in track}) == len(track)  # one thread each: slices never stack into one
    lo, hi = data.span_ns
    base = doc["baseTimeNanoseconds"]
    windows = step_windows(data)
    for e in track:
        start_ns = base + round(e["ts"] * 1000)
        end_ns = start_ns + round(e["dur"] * 1000)
        assert e["dur"] > 0 and lo - 1 <= start_ns < end_ns <= hi + 1
        # no finding names a step here: each spans its rank's profiled window, first step to last
        assert abs(start_ns - windows["start_ns"].iloc[0]) <= 1 and abs(end_ns - windows["end_ns"].iloc[-1]) <= 1
    assert doc["torchscopeReport"]["skipped"] == dict(report.skipped)


def test_a_finding_naming_steps_spans_just_those_steps(nccl):
    data, _ = nccl
    w = step_windows(data)
    assert len(w) >= 3
    f = Finding(id="gpu_time.example", analyzer="gpu_time", severity="info", title="t", evidence={"steps": [5, 6]},
                recommendation="r", estimated_gain="g", rank=data.rank)
    assert finding_window_ns(f, data) == (int(w.loc[w.step == 5, "start_ns"].iloc[0]),
                                          int(w.loc[w.step == 6, "end_ns"].iloc[0]))
    unknown = Finding(id="gpu_time.example", analyzer="gpu_time", severity="info", title="t",
                      evidence={"worst_step": 999}, recommendation="r", estimated_gain="g", rank=data.rank)
    assert finding_window_ns(unknown, data) == (int(w["start_ns"].iloc[0]), int(w["end_ns"].iloc[-1]))


@pytest.mark.parametrize("name", ["a100_train_2rank_rank0_nccl.json.gz", "mi250_minitoy_train.json.gz",
                                  "cpu_only_rank34.json.gz"])
def test_metadata_survives_and_the_export_loads_back(shared_traces, tmp_path, name):
    src = shared_traces / name
    data = torchscope.load(src)
    report = analyzers.run_all(data)
    out = write_annotated_trace(data, report, tmp_path / "x.json.gz")
    doc = orjson.loads(gzip.decompress(out.read_bytes()))
    skip = _findings_pid(doc) if report.findings else None
    source = _metadata_counts(_source_events(src))
    assert source["process_sort_index"] and source["thread_sort_index"] and source["process_labels"]
    assert _metadata_counts(doc["traceEvents"], skip) == source
    back = torchscope.load(out)
    assert {k: v for k, v in back.meta.processes.items() if k != skip} == dict(data.meta.processes)
    assert len(back.events[back.events["cat"].astype(str) != "torchscope.finding"]) == len(data.events)


def test_without_the_source_file_the_metadata_is_rebuilt_from_the_trace(shared_traces, tmp_path):
    src = tmp_path / "gone.json.gz"
    shutil.copy(shared_traces / "a100_train_2rank_rank0_nccl.json.gz", src)
    data = analyzers.load(src)
    src.unlink()
    doc = annotated_trace(data, None)
    meta = [e for e in doc["traceEvents"] if e.get("ph") == "M"]
    names = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert names == dict(data.meta.processes)
    labels = {e["pid"]: e["args"]["labels"] for e in meta if e["name"] == "process_labels"}
    gpu_pids = set(data.gpu_events()["pid"].astype(int))
    assert gpu_pids and all(labels[p].startswith("GPU ") for p in gpu_pids)
    host = set(data.events["pid"].astype(int)) - gpu_pids
    assert host and all(labels[p] == "CPU" for p in host)
    order = sorted((e["args"]["sort_index"], e["pid"]) for e in meta if e["name"] == "process_sort_index")
    assert {pid for _, pid in order[:len(host)]} == host  # host processes first, as Kineto orders them
    threads = {(e["pid"], e["tid"]) for e in meta if e["name"] == "thread_sort_index"}
    assert threads == {tuple(map(int, k)) for k in data.meta.threads}


def test_several_ranks_get_distinct_processes_named_by_rank(sample_traces, tmp_path):
    bundle = sample_traces / "ddp_gloo_2rank"
    require_or_skip(bundle.is_dir(), "sample run ddp_gloo_2rank not recorded")
    data = analyzers.load(bundle)
    doc = annotated_trace(data, None)
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "process_name"}
    assert any(n.startswith("rank 0 · ") for n in names.values())
    assert any(n.startswith("rank 1 · ") for n in names.values())
    pids_by_rank = {}
    for t in data:
        pids_by_rank[t.rank] = {e["pid"] for e in doc["traceEvents"] if e.get("ph") == "X"
                                and names.get(e["pid"], "").startswith(f"rank {t.rank} ·")}
    assert pids_by_rank[0] and pids_by_rank[1] and not (pids_by_rank[0] & pids_by_rank[1])
    n_events = sum(len(t.events) for t in data)
    assert sum(1 for e in doc["traceEvents"] if e.get("ph") in ("X", "i")) == n_events


def test_cli_writes_the_file_and_rejects_bad_input(shared_traces, tmp_path, capsys):
    src = tmp_path / "in.json.gz"
    shutil.copy(shared_traces / "mi250_minitoy_train.json.gz", src)
    out = tmp_path / "out.json.gz"
    assert main(["export", str(src), "-o", str(out)]) == 0
    assert "ui.perfetto.dev" in capsys.readouterr().out
    doc = orjson.loads(gzip.decompress(out.read_bytes()))
    assert doc["traceEvents"] and "baseTimeNanoseconds" in doc
    assert main(["export", str(src), "-o", str(tmp_path / "out.txt")]) == 2
    assert main(["export", str(src), "-o", str(src)]) == 2
    assert main(["export", str(tmp_path / "missing.json"), "-o", str(out)]) == 2
    assert main(["export", str(src), "-o", str(tmp_path / "nodir" / "o.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("torchscope: error: ") for line in err)
