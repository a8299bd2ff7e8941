"""The rank-summary cache (jobs/summary_cache.py): a job opened again reads its ranks' summaries instead of
loading them, with the same report; invalidation, damage, opt-out, the racy window and the size bound."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from torchscope.analyzers.io import cache as cache_mod
from torchscope.analyzers.io.cache import SUMMARY_FOLDER, CacheWarning
from torchscope.analyzers.io.loader import job_sources
from torchscope.analyzers.jobs import JobReport, analyze_job, rank_task, summary_cache
from torchscope.analyzers.jobs import job as job_mod
from torchscope.analyzers.jobs.rank_task import analyze_rank
from torchscope.analyzers.jobs.schedulers import INLINE, PROCESSES
from torchscope.analyzers.jobs.summary import TaskSettings
from torchscope.analyzers.report.json_report import render_json

from tests.conftest import require_module, require_or_skip, shared_trace

JOB128 = ("job128_rank0.json.gz", "job128_rank1.json.gz")
#: A quick analyzer set for the tests that are about the cache, not the results (the job level included).
QUICK = ("training_loop", "communication", "stragglers")
#: An hour ago: files the tests write are backdated past the racy window so that their summaries are stored.
_OLD_S = 3600


@pytest.fixture(scope="module")
def job128(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two ranks of the shared job128 traces as a folder of links (the corpus is never copied in)."""
    folder = tmp_path_factory.mktemp("job128")
    for name in JOB128:
        (folder / name).symlink_to(shared_trace(name))
    return folder


@pytest.fixture(scope="module")
def fresh_job128(job128: Path) -> JobReport:
    """job128 analyzed without the caches by every analyzer, as `analyze --json` runs them."""
    return analyze_job(job128, scheduler=INLINE, cache=False)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every rank the tasks load (a summary read from the cache loads none)."""
    seen: list[str] = []
    real = rank_task.load_rank

    def spy(source, **kwargs):
        seen.append(source.label)
        return real(source, **kwargs)

    monkeypatch.setattr(rank_task, "load_rank", spy)
    return seen


def _summaries(cache_dir: Path) -> list[Path]:
    folder = cache_dir / SUMMARY_FOLDER
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _backdate(path: Path) -> None:
    t = time.time() - _OLD_S
    os.utime(path, (t, t), follow_symlinks=False)


def _json(job: JobReport) -> str:
    """What ``torchscope analyze --format json`` prints for the job."""
    return render_json(job.header_traces(), job.report)


def _assert_same_job(fresh: JobReport, cached: JobReport) -> None:
    assert _json(cached) == _json(fresh)
    assert cached.failed == fresh.failed and list(cached.ranks) == list(fresh.ranks)
    assert cached.warnings == fresh.warnings
    for name, result in fresh.job.items():
        assert cached.job[name].summary == result.summary and cached.job[name].findings == result.findings
        for table, frame in result.tables.items():
            pd.testing.assert_frame_equal(cached.job[name].table(table), frame, check_exact=True, obj=table)
    for rank, summary in fresh.ranks.items():
        again = cached.ranks[rank]
        assert again.events == summary.events and again.span_ns == summary.span_ns and again.meta == summary.meta
        assert again.run.not_applicable == summary.run.not_applicable and again.run.errors == summary.run.errors
        for name, result in summary.run.results.items():
            for table, frame in result.tables.items():
                mine = again.run.results[name].table(table)
                pd.testing.assert_frame_equal(mine, frame, check_exact=True, obj=f"rank {rank} {name}.{table}")
                assert mine.attrs == frame.attrs


@pytest.mark.parametrize("scheduler", [INLINE, PROCESSES])
def test_a_job_read_from_cached_summaries_reports_what_a_fresh_analysis_does(
        job128: Path, fresh_job128: JobReport, cache_dir: Path, loads: list[str], scheduler: str) -> None:
    fresh = fresh_job128
    first = analyze_job(job128, scheduler=scheduler)  # fills the cache (in worker processes for "processes")
    assert not any(s.cached for s in first.ranks.values())
    assert len(_summaries(cache_dir)) == 3  # two ranks and the job-level pass over them
    loads.clear()
    again = analyze_job(job128, scheduler=scheduler)
    assert all(s.cached for s in again.ranks.values()) and loads == []  # no trace was loaded
    _assert_same_job(fresh, again)
    _assert_same_job(fresh, first)


def test_a_bundle_with_streams_and_a_manifest_round_trips(sample_traces: Path, tmp_path: Path,
                                                          cache_dir: Path) -> None:
    src = sample_traces / "ddp_gloo_2rank"
    require_or_skip(src.is_dir(), f"sample run {src} not recorded")
    bundle = tmp_path / "ddp"
    shutil.copytree(src, bundle)
    for path in bundle.iterdir():
        _backdate(path)
    fresh = analyze_job(bundle, scheduler=INLINE, only=QUICK, cache=False)
    analyze_job(bundle, scheduler=INLINE, only=QUICK)
    again = analyze_job(bundle, scheduler=INLINE, only=QUICK)
    assert all(s.cached for s in again.ranks.values())
    assert any(s.skeleton.streams for s in again.ranks.values())  # the steps stream came back too
    _assert_same_job(fresh, again)
    # A running job appends to its streams: that rank's summary is stale, the other's is not.
    stream = next(bundle.glob("rank1.*.jsonl"))
    stream.write_bytes(stream.read_bytes() + b'{"late": 1}\n')
    _backdate(stream)
    grown = analyze_job(bundle, scheduler=INLINE, only=QUICK)
    assert grown.ranks[0].cached and not grown.ranks[1].cached


def test_a_cached_rank_task_loads_nothing_on_dask_workers_too(job128: Path, cache_dir: Path,
                                                               loads: list[str]) -> None:
    distributed = require_module("distributed")
    fresh = analyze_job(job128, scheduler=INLINE, only=QUICK)
    loads.clear()
    # Workers in this process (processes=False) share its cache folder: each task finds its summary itself.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        on_dask = analyze_job(job128, scheduler=cluster.scheduler_address, only=QUICK)
    assert all(s.cached for s in on_dask.ranks.values()) and loads == []
    _assert_same_job(fresh, on_dask)


def test_a_changed_rank_file_is_analyzed_again(tmp_path: Path, cache_dir: Path, loads: list[str]) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    for name in JOB128:
        shutil.copyfile(shared_trace(name), folder / name)
        _backdate(folder / name)
    analyze_job(folder, scheduler=INLINE, only=QUICK)
    changed = folder / JOB128[1]
    changed.write_bytes(changed.read_bytes())  # same bytes, a new mtime: it may be another file now
    _backdate(changed)
    os.utime(changed, (time.time() - _OLD_S / 2,) * 2)
    loads.clear()
    again = analyze_job(folder, scheduler=INLINE, only=QUICK)
    assert loads == [JOB128[1]]
    assert again.ranks[0].cached and not again.ranks[1].cached
    # Beside the first run's three entries (kept until the size bound evicts them): rank 1's and the job level's anew.
    assert len(_summaries(cache_dir)) == 3 + 2


def test_other_analyzers_or_options_are_other_entries(job128: Path, cache_dir: Path, loads: list[str]) -> None:
    source = job_sources(job128).sources[0]
    top3 = TaskSettings(only=("kernels",), options={"kernels": {"top": 3}})
    default = analyze_rank(source, TaskSettings(only=("kernels",)))
    few = analyze_rank(source, top3)
    assert not default.cached and not few.cached and len(loads) == 2
    assert len(few.run.results["kernels"].table("top_kernels")) == 3 \
        < len(default.run.results["kernels"].table("top_kernels"))
    again = analyze_rank(source, top3)
    assert again.cached and len(loads) == 2
    assert again.run.results["kernels"].summary == few.run.results["kernels"].summary
    other = analyze_rank(source, TaskSettings(only=("kernels", "gpu_time"), options={"kernels": {"top": 3}}))
    assert not other.cached and len(loads) == 3


def test_a_new_analyzer_version_is_a_miss(job128: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = job_sources(job128).sources[0]
    settings = TaskSettings(only=QUICK)
    analyze_rank(source, settings)
    assert analyze_rank(source, settings).cached
    monkeypatch.setattr(summary_cache, "analyzers_fingerprint", lambda names: "an edited analyzer")
    assert not analyze_rank(source, settings).cached


@pytest.mark.parametrize("damage", ["truncate the document", "drop the frames", "garble the frames",
                                    "a record of another module"])
def test_a_damaged_entry_is_ignored_with_a_warning_and_rebuilt(job128: Path, cache_dir: Path, damage: str) -> None:
    source = job_sources(job128).sources[0]
    settings = TaskSettings(only=QUICK)
    fresh = analyze_rank(source, settings)
    (entry,) = _summaries(cache_dir)
    document, frames = entry / cache_mod.ENTRY_FILE, entry / "frames.parquet"
    if damage == "truncate the document":
        document.write_bytes(document.read_bytes()[:100])
    elif damage == "drop the frames":
        frames.unlink()
    elif damage == "garble the frames":
        frames.write_bytes(b"not parquet" * 10)
    else:  # a hand-edited entry naming a class the reader must not build
        document.write_bytes(document.read_bytes().replace(b"torchscope.analyzers.jobs.summary:RankSummary",
                                                           b"subprocess:Popen"))
    with pytest.warns(CacheWarning, match="damaged cache entry .*analyzing the rank again"):
        again = analyze_rank(source, settings)
    assert not again.cached and again.run.results.keys() == fresh.run.results.keys()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        assert analyze_rank(source, settings).cached  # rebuilt whole


def test_opting_out_reads_and_writes_nothing(job128: Path, cache_dir: Path, loads: list[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    analyze_job(job128, scheduler=INLINE, only=QUICK, cache=False)
    assert _summaries(cache_dir) == []
    analyze_job(job128, scheduler=INLINE, only=QUICK)
    loads.clear()
    assert not any(s.cached for s in analyze_job(job128, scheduler=INLINE, only=QUICK, cache=False).ranks.values())
    monkeypatch.setenv(cache_mod.ENV_NO_CACHE, "1")
    assert not any(s.cached for s in analyze_job(job128, scheduler=INLINE, only=QUICK).ranks.values())
    assert len(loads) == 4


def test_a_rank_written_just_now_is_not_stored(tmp_path: Path, cache_dir: Path) -> None:
    trace = tmp_path / "fresh.json.gz"
    shutil.copyfile(shared_trace(JOB128[0]), trace)  # its mtime: now
    source = job_sources(trace).sources[0]
    assert not analyze_rank(source, TaskSettings(only=QUICK)).cached
    assert _summaries(cache_dir) == []


def test_the_size_bound_applies_to_the_summary_folder(job128: Path, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache_mod.ENV_CACHE_MAX_BYTES, "0")
    analyze_job(job128, scheduler=INLINE, only=QUICK)
    assert _summaries(cache_dir) == []
    monkeypatch.delenv(cache_mod.ENV_CACHE_MAX_BYTES)
    analyze_job(job128, scheduler=INLINE, only=QUICK)
    assert len(_summaries(cache_dir)) == 3
    # The trace cache beside it neither counts nor evicts the summaries' folder.
    assert SUMMARY_FOLDER not in {p.name for p in cache_mod.TraceCache(cache_dir, "x").entries()}


def test_a_fully_cached_job_skips_the_job_level_pass(job128: Path, cache_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = analyze_job(job128, scheduler=INLINE, only=QUICK)

    def fail(*args, **kwargs):
        raise AssertionError("the job-level pass ran again")

    monkeypatch.setattr(job_mod, "run_job_level", fail)
    again = analyze_job(job128, scheduler=INLINE, only=QUICK)
    assert again.job["stragglers"].summary == first.job["stragglers"].summary
    assert _json(again) == _json(first)


def test_the_analyzers_version_covers_what_they_import_and_nothing_else() -> None:
    root = summary_cache._ANALYZERS_PACKAGE
    files = {p.relative_to(root).as_posix() for p in summary_cache._imported_files(
        frozenset({"torchscope.analyzers.training_loop", *summary_cache._TASK_MODULES}))}
    # The analyzer, what it imports (timeline, core), the task and the loader; not other analyzers' modules.
    assert {"training_loop.py", "timeline/steps.py", "core/trace.py", "jobs/rank_task.py", "io/loader.py",
            "io/chrome_trace.py", "jobs/summary.py", "io/tree_store.py"} <= files
    assert not {"roofline/analysis.py", "bottleneck/analysis.py", "memory.py", "power.py"} & files
    assert summary_cache.analyzers_fingerprint(["training_loop"]) != summary_cache.analyzers_fingerprint(["memory"])
