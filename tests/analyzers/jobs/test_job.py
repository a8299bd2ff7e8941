"""A job analyzed rank by rank: the same results inline, in local processes and on Dask; partial jobs; progress."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from torchscope import analyzers
from torchscope.analyzers.core.registry import run_all
from torchscope.analyzers.jobs import JobReport, PartialJobError, analyze_job
from torchscope.analyzers.jobs.job import PROGRESS_DESCRIPTION
from torchscope.analyzers.jobs.rank_task import ROWS_TOTAL_ATTR, SUMMARY_TABLE_ROWS, rows_total
from torchscope.analyzers.jobs.schedulers import ENV_SCHEDULER, INLINE, PROCESSES, resolve_scheduler
from torchscope.analyzers.report.json_report import report_dict
from tests.conftest import require_module, require_or_skip, shared_trace

JOB128 = ("job128_rank0.json.gz", "job128_rank1.json.gz")


@pytest.fixture()
def job128(tmp_path: Path) -> Path:
    """A folder of the two ranks of the shared job128 traces (links, the corpus is never copied in)."""
    folder = tmp_path / "job128"
    folder.mkdir()
    for name in JOB128:
        (folder / name).symlink_to(shared_trace(name))
    return folder


@pytest.fixture()
def ddp_bundle(sample_traces: Path, tmp_path: Path) -> Path:
    src = sample_traces / "ddp_gloo_2rank"
    require_or_skip(src.is_dir(), f"sample run {src} not recorded")
    dst = tmp_path / "ddp"
    shutil.copytree(src, dst)
    return dst


def _canonical(job: JobReport) -> dict:
    """What must not depend on where the tasks ran: the JSON report, every job-level table, the failures."""
    doc = report_dict(job.header_traces(), job.report)
    doc["source"] = None
    tables = {(name, t): frame for name, res in job.job.items() for t, frame in res.tables.items()}
    return {"doc": doc, "tables": tables, "failed": dict(job.failed), "ranks": sorted(job.ranks)}


def _assert_same(a: dict, b: dict) -> None:
    assert a["doc"] == b["doc"]
    assert a["failed"] == b["failed"] and a["ranks"] == b["ranks"]
    assert a["tables"].keys() == b["tables"].keys()
    for key in a["tables"]:
        pd.testing.assert_frame_equal(a["tables"][key], b["tables"][key], obj=str(key))


def test_job_level_results_match_run_all_over_the_whole_trace_set(job128: Path) -> None:
    job = analyze_job(job128, scheduler=INLINE, cache=False)
    full = run_all(analyzers.load(job128, cache=False))
    assert sorted(job.ranks) == [0, 1] and not job.failed
    for name in ("stragglers", "job_overview"):
        mine, theirs = job.job[name], full.result(name)
        assert mine.summary == theirs.summary
        assert mine.findings == theirs.findings
        for table, frame in theirs.tables.items():
            pd.testing.assert_frame_equal(mine.table(table), frame, obj=f"{name}.{table}")
    assert job.job["stragglers"].summary["straggler_ranks"] == [1]  # the known straggler of this job
    # Per-rank results: the same summaries and findings; tables cut to SUMMARY_TABLE_ROWS with the count kept.
    assert [(r.analyzer, r.rank) for r in job.report.results] == [(r.analyzer, r.rank) for r in full.results]
    for mine, theirs in zip(job.report.results, full.results):
        assert mine.summary == theirs.summary and mine.findings == theirs.findings
        for table, frame in theirs.tables.items():
            cut = mine.table(table)
            assert rows_total(cut) == len(frame) and len(cut) == min(len(frame), SUMMARY_TABLE_ROWS)
            pd.testing.assert_frame_equal(cut, frame.head(SUMMARY_TABLE_ROWS), check_like=False, obj=table)
    assert job.report.skipped == full.skipped and job.report.errors == full.errors


def test_a_rank_summary_is_small_beside_its_trace(job128: Path) -> None:
    job = analyze_job(job128, scheduler=INLINE, cache=False)
    trace = analyzers.load(job128 / JOB128[0], cache=False)
    summary = job.ranks[0]
    # Tables are cut to SUMMARY_TABLE_ROWS rows, so a summary stays a few hundred KiB whatever the trace's size;
    # this small trace (124 KiB gzipped) already pickles to over 3x its summary.
    assert len(pickle.dumps(summary)) < min(len(pickle.dumps(trace)) / 3, 512 * 1024)
    assert summary.events == len(trace.events) and summary.span_ns == trace.span_ns
    assert len(summary.skeleton.events) <= len(trace.steps()) + 2
    cut = [f for r in summary.results for f in r.tables.values() if ROWS_TOTAL_ATTR in f.attrs]
    assert all(len(f) == SUMMARY_TABLE_ROWS < f.attrs[ROWS_TOTAL_ATTR] for f in cut)


def test_inline_and_local_processes_give_the_same_report(job128: Path) -> None:
    inline = analyze_job(job128, scheduler=INLINE, cache=False)
    local = analyze_job(job128, scheduler=PROCESSES, cache=False)
    assert local.scheduler == PROCESSES
    _assert_same(_canonical(inline), _canonical(local))


def _local_cluster():
    distributed = require_module("distributed")
    # Threads in this process (processes=False) keep the test fast; tcp on 127.0.0.1 is the real protocol.
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                    host="127.0.0.1", dashboard_address=None)


def test_a_dask_cluster_gives_the_same_report(job128: Path) -> None:
    inline = analyze_job(job128, scheduler=INLINE, cache=False)
    with _local_cluster() as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        on_dask = analyze_job(job128, scheduler=cluster.scheduler_address, cache=False)
    assert on_dask.scheduler.startswith("tcp://")
    _assert_same(_canonical(inline), _canonical(on_dask))


def test_a_dask_worker_killed_mid_run_has_its_task_retried(job128: Path, tmp_path: Path) -> None:
    distributed = require_module("distributed")
    # Four ranks (the two job128 ranks twice, as a bundle) so that a task is running when a worker dies.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"complete": true, "ended_at_ns": 1, "ranks": [0, 1, 2, 3]}')
    for rank in range(4):
        (bundle / f"rank{rank}.trace.json.gz").symlink_to(shared_trace(JOB128[rank % 2]))
    inline = analyze_job(bundle, scheduler=INLINE, cache=False)
    with _local_cluster() as cluster, distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        out: dict = {}
        runner = threading.Thread(target=lambda: out.update(job=analyze_job(
            bundle, scheduler=cluster.scheduler_address, cache=False)))
        runner.start()
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            busy = {addr: keys for addr, keys in client.processing().items() if keys}
            victim = next(iter(busy), None)
            time.sleep(0.005)
        assert victim is not None, "no task ever ran"
        name = next(n for n, w in cluster.workers.items() if w.address == victim)
        cluster.sync(cluster.workers[name].close)  # the worker dies with its task
        runner.join(120)
        assert not runner.is_alive()
        assert len(client.scheduler_info()["workers"]) == 1  # it is gone; its task ran on the other
    _assert_same(_canonical(inline), _canonical(out["job"]))


def _corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a half-written gzip


def test_a_corrupt_rank_does_not_lose_the_others(ddp_bundle: Path) -> None:
    _corrupt(ddp_bundle / "rank1.trace.json.gz")
    with pytest.raises(PartialJobError) as caught:
        analyze_job(ddp_bundle, scheduler=INLINE, cache=False)
    job = caught.value.job
    assert "1 of 2 ranks failed (rank 1)" in str(caught.value)
    assert sorted(job.ranks) == [0] and list(job.failed) == [1]
    assert "rank1.trace.json.gz" in job.failed[1] and "gzip" in job.failed[1] and "\n" not in job.failed[1]
    assert job.report.result("training_loop", rank=0) is not None
    assert job.report.skipped["stragglers"] == "single rank"
    again = analyze_job(ddp_bundle, scheduler=INLINE, cache=False, partial_ok=True)
    assert list(again.failed) == [1] and sorted(again.ranks) == [0]


def test_a_missing_rank_is_named(ddp_bundle: Path) -> None:
    for path in ddp_bundle.glob("rank1.*"):
        path.unlink()
    job = analyze_job(ddp_bundle, scheduler=INLINE, cache=False, partial_ok=True)
    assert sorted(job.ranks) == [0] and list(job.failed) == [1]
    assert "no file of rank 1" in job.failed[1]


def test_a_folder_of_unreadable_files_is_bad_input(tmp_path: Path) -> None:
    for name in ("rank0.json", "rank1.json"):
        (tmp_path / name).write_text("{not json")
    with pytest.raises(analyzers.TraceError, match="no rank could be analyzed"):
        analyze_job(tmp_path, scheduler=INLINE, partial_ok=True)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_progress_bar_across_ranks_only_on_a_terminal(job128: Path, monkeypatch) -> None:
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    analyze_job(job128, scheduler=INLINE)
    assert PROGRESS_DESCRIPTION in tty.getvalue() and "2/2" in tty.getvalue()
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    analyze_job(job128, scheduler=INLINE)
    assert pipe.getvalue() == ""


def test_scheduler_choice(monkeypatch) -> None:
    monkeypatch.delenv(ENV_SCHEDULER, raising=False)
    big = 64 * 1024 * 1024
    expected_local = PROCESSES if (os.cpu_count() or 1) > 1 else INLINE
    assert resolve_scheduler(None, ranks=16, total_bytes=big) == expected_local
    assert resolve_scheduler(None, ranks=16, total_bytes=1024) == INLINE  # start-up would cost more
    assert resolve_scheduler(None, ranks=1, total_bytes=big) == INLINE
    monkeypatch.setenv(ENV_SCHEDULER, "tcp://10.0.0.1:8786")
    assert resolve_scheduler(None, ranks=16, total_bytes=1024) == "tcp://10.0.0.1:8786"
    assert resolve_scheduler(INLINE, ranks=16, total_bytes=big) == INLINE  # the argument wins
    with pytest.raises(ValueError, match="scheduler must be"):
        resolve_scheduler("threads", ranks=2, total_bytes=big)


def test_an_unreachable_dask_scheduler_is_one_line(job128: Path, monkeypatch) -> None:
    require_module("distributed")
    monkeypatch.setattr("torchscope.analyzers.jobs.schedulers.DASK_CONNECT_TIMEOUT_S", 1)
    with pytest.raises(analyzers.TraceError, match="cannot reach the Dask scheduler"):
        analyze_job(job128, scheduler="tcp://127.0.0.1:1")

