"""The bundle writers: JSONL streams reach the OS within a second; manifest/trace writes are atomic."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time

import numpy as np
import pytest

from torchscope.profiler import bundle


def test_paths_follow_the_contract(tmp_path):
    assert bundle.manifest_path(tmp_path, 0).name == "manifest.json"
    assert bundle.manifest_path(tmp_path, 3).name == "manifest.rank3.json"
    assert bundle.trace_path(tmp_path, 1).name == "rank1.trace.json.gz"
    assert bundle.stream_path(tmp_path, 2, "samples").name == "rank2.samples.jsonl"


def test_jsonl_lines_are_json_objects_with_numpy_values(tmp_path):
    path = tmp_path / "s.jsonl"
    with bundle.JsonlWriter(path) as w:
        w.write({"t_ns": np.int64(5), "v": np.float32(1.5), "arr": np.arange(3)})
        w.write({"t_ns": 6})
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [{"t_ns": 5, "v": 1.5, "arr": [0, 1, 2]}, {"t_ns": 6}]


def test_buffer_reaches_disk_after_the_flush_interval(tmp_path):
    path = tmp_path / "s.jsonl"
    w = bundle.JsonlWriter(path, flush_interval_s=0.2)
    w.write({"a": 1})
    w.flush()
    w.write({"a": 2})  # buffered: the last flush was just now
    assert path.read_text().count("\n") == 1
    time.sleep(0.25)
    w.write({"a": 3})  # older than the interval: this write flushes both
    assert path.read_text().count("\n") == 3
    w.close()
    w.write({"a": 4})  # dropped after close
    assert path.read_text().count("\n") == 3 and w.closed


def test_concurrent_writers_never_interleave_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    w = bundle.JsonlWriter(path)

    def worker(k: int) -> None:
        for i in range(500):
            w.write({"k": k, "i": i, "pad": "x" * (i % 50)})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 2000
    for k in range(4):
        assert [x["i"] for x in lines if x["k"] == k] == list(range(500))


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    bundle.write_json_atomic(target, {"v": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        bundle.write_json_atomic(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary left behind


def test_trace_is_gzipped_json(tmp_path):
    path = bundle.write_trace_atomic(tmp_path / "rank0.trace.json.gz", {"traceEvents": [{"ph": "X"}]})
    with gzip.open(path) as fh:
        assert json.load(fh) == {"traceEvents": [{"ph": "X"}]}
    assert oct(path.stat().st_mode & 0o777) == "0o644"
