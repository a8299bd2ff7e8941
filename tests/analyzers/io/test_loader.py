"""`load()` (io/loader.py): a trace file, a folder of per-rank traces, a run bundle, and the bundle of a
killed job that left only its JSONL streams."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas.testing as pd_testing
import pytest

from torchscope import analyzers
from torchscope.analyzers import Trace, TraceError, TraceSet
from torchscope.analyzers.io import loader
from tests.analyzers.io.kineto_events import GOOD_EVENTS


def _trace_doc(rank: int | None = None, world_size: int = 2) -> dict:
    doc: dict = {"traceEvents": GOOD_EVENTS}
    if rank is not None:
        doc["distributedInfo"] = {"rank": rank, "world_size": world_size}
    return doc


def _write_trace(path: Path, doc: dict) -> Path:
    raw = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _bundle(folder: Path, ranks: dict[int, bool], world_size: int = 2) -> Path:
    """A run bundle: manifest, and per rank its samples and steps streams plus (when True) its trace."""
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "tool": "torchscope",
                                                      "world_size": world_size, "complete": True}))
    for rank, with_trace in ranks.items():
        if with_trace:  # the bundle's file name gives the rank, whatever the file says
            _write_trace(folder / f"rank{rank}.trace.json.gz", _trace_doc())
        samples = [{"t_ns": t, "source": "host", "rss_bytes": 10 * rank + t} for t in (1, 2)]
        (folder / f"rank{rank}.samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
        (folder / f"rank{rank}.steps.jsonl").write_text(json.dumps({"step": 0, "t_ns": 5}) + "\n")
    return folder


def test_a_file_loads_as_one_trace_and_load_set_wraps_it(tmp_path: Path) -> None:
    path = _write_trace(tmp_path / "worker.json", _trace_doc(rank=1))
    trace = analyzers.load(path)
    assert isinstance(trace, Trace) and trace.rank == 1 and len(trace.events) == 3
    assert trace.meta.path == str(path) and trace.meta.manifest is None and dict(trace.streams) == {}
    one = analyzers.load_set(path)
    assert isinstance(one, TraceSet) and list(one.ranks) == [1] and one.path == str(path)
    pd_testing.assert_frame_equal(one[1].events.drop(columns="args"), trace.events.drop(columns="args"))


def test_folder_of_written_ranks_is_a_trace_set_by_rank(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    _write_trace(folder / "b.json.gz", _trace_doc(rank=0, world_size=3))
    _write_trace(folder / "a.json", _trace_doc(rank=1, world_size=3))
    _write_trace(folder / "worker_rank2.json", _trace_doc())  # no distributedInfo: the rank from the name
    (folder / "notes.txt").write_text("not a trace")
    (folder / "nested").mkdir()
    _write_trace(folder / "nested" / "rank9.json", _trace_doc(rank=9))  # not read: the folder is not walked
    assert [p.name for p in loader.find_trace_files(folder)] == ["a.json", "b.json.gz", "worker_rank2.json"]
    ts = analyzers.load(folder)
    assert isinstance(ts, TraceSet) and sorted(ts.ranks) == [0, 1, 2] and ts.path == str(folder)
    assert [t.rank for t in ts] == [0, 1, 2] and len(ts) == 3 and ts.world_size == 3
    assert Path(ts[1].meta.path).name == "a.json" and not loader.is_run_bundle(folder)


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

def test_bundle_ranks_carry_the_manifest_and_their_streams(tmp_path: Path) -> None:
    run = _bundle(tmp_path / "run", {0: True, 1: True})
    assert loader.is_run_bundle(run)
    ts = analyzers.load(run)
    assert isinstance(ts, TraceSet) and sorted(ts.ranks) == [0, 1]
    for rank in (0, 1):
        trace = ts[rank]
        assert trace.rank == rank and len(trace.events) == 3 and set(trace.events["rank"]) == {rank}
        assert trace.meta.manifest["tool"] == "torchscope"
        assert trace.meta.path.endswith(f"rank{rank}.trace.json.gz")
        assert sorted(trace.streams) == ["samples", "steps"]
        assert trace.streams["samples"]["rss_bytes"].tolist() == [10 * rank + 1, 10 * rank + 2]
        assert not trace.meta.warnings


def test_one_rank_bundle_loads_as_a_trace(tmp_path: Path) -> None:
    trace = analyzers.load(_bundle(tmp_path / "run", {0: True}, world_size=1))
    assert isinstance(trace, Trace) and trace.streams["steps"]["step"].tolist() == [0]


def test_a_killed_job_without_any_trace_loads_its_streams(tmp_path: Path) -> None:
    ts = analyzers.load(_bundle(tmp_path / "run", {0: False, 1: False}))
    assert sorted(ts.ranks) == [0, 1]
    written = analyzers.load(_write_trace(tmp_path / "t.json", _trace_doc()))
    for rank, trace in ts.ranks.items():
        assert trace.events.empty and trace.counters.empty and trace.flows.empty
        assert list(trace.events.columns) == list(written.events.columns)  # same column contract, no rows
        assert trace.streams["samples"]["rss_bytes"].tolist() == [10 * rank + 1, 10 * rank + 2]
        assert trace.meta.world_size == 2 and any("no trace file" in w for w in trace.meta.warnings)
        assert trace.steps().empty and trace.span_ns == (0, 0)


def test_a_bundle_with_neither_traces_nor_streams_is_an_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    with pytest.raises(TraceError, match="no rank<N>.trace.json.gz"):
        analyzers.load(run)
    (run / "manifest.json").write_text("[1, 2]")
    with pytest.raises(TraceError, match="manifest is a list"):
        analyzers.load(run)


def test_read_jsonl_drops_a_torn_last_line_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "rank0.samples.jsonl"
    path.write_text('{"t_ns": 1}\n\n[1]\n{"t_ns": 2}\n{"t_ns": 3, "sou')
    frame, warnings = loader.read_jsonl(path)
    assert frame["t_ns"].tolist() == [1, 2]
    assert warnings == ["rank0.samples.jsonl: skipped 2 unreadable lines"]  # the torn line and the non-object


def test_ranks_parsed_in_worker_processes_equal_those_parsed_here(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = _bundle(tmp_path / "run", {0: True, 1: True})
    here = analyzers.load(run, cache=False)
    monkeypatch.setattr(loader, "PARALLEL_MIN_BYTES", 0)  # any size goes to the process pool
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 2)
    pooled = analyzers.load(run, cache=False)  # both parse: neither may come from the columnar cache
    for rank in (0, 1):
        got, want = pooled[rank].events, here[rank].events
        pd_testing.assert_frame_equal(got.drop(columns="args"), want.drop(columns="args"))
        assert got["args"].tolist() == want["args"].tolist()
        pd_testing.assert_frame_equal(pooled[rank].streams["samples"], here[rank].streams["samples"])


def test_bundle_of_a_killed_job_keeps_its_streams(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"schema_version": 1, "tool": "torchscope", "world_size": 2}))
    (run / "rank0.trace.json.gz").write_bytes(gzip.compress(json.dumps({"traceEvents": GOOD_EVENTS}).encode()))
    # rank 0 wrote its trace; its samples stream ends in a line torn by the kill
    (run / "rank0.samples.jsonl").write_text('{"t_ns": 1, "source": "host", "rss_bytes": 10}\n{"t_ns": 2, "sour')
    # rank 1 was killed before writing its trace: only the flushed stream is left
    (run / "rank1.samples.jsonl").write_text('{"t_ns": 1, "source": "host", "rss_bytes": 20}\n')
    ts = analyzers.load(run)
    assert sorted(ts.ranks) == [0, 1]
    assert ts[0].streams["samples"]["rss_bytes"].tolist() == [10]
    assert any("skipped 1 unreadable lines" in w for w in ts[0].meta.warnings)
    assert len(ts[0].events) == 3 and ts[0].meta.manifest["world_size"] == 2
    assert ts[1].events.empty and ts[1].streams["samples"]["rss_bytes"].tolist() == [20]
    assert any("no trace file" in w for w in ts[1].meta.warnings) and ts[1].meta.world_size == 2
