"""`torchscope export`: the annotated trace opens as Chrome-trace JSON and loads back unchanged."""

from __future__ import annotations

import gzip
import shutil

import orjson
import pytest

from torchscope import analyzers
from torchscope.cli import main
from torchscope.analyzers.io.export import annotated_trace, write_annotated_trace
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


def test_findings_are_on_their_own_track_and_in_the_document(nccl):
    data, report = nccl
    doc = annotated_trace(data, report)
    assert [f["id"] for f in doc["torchscopeFindings"]] == [f.id for f in report.findings]
    track = [e for e in doc["traceEvents"] if e.get("cat") == "torchscope.finding"]
    assert len(track) == len(report.findings) >= 1
    assert all(e["ph"] == "i" and e["s"] == "g" and "recommendation" in e["args"] for e in track)
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "process_name"}
    assert names[track[0]["pid"]] == "torchscope findings"
    assert doc["torchscopeReport"]["skipped"] == dict(report.skipped)


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
